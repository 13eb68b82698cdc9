"""DDPM cont. (sub-VP) on CIFAR-10 (Song et al. 2021, ICLR, Table 3); score_sde_pytorch
`configs/subvp/cifar10_ddpm_continuous.py`: subvp_cifar with Ho et al.'s DDPM network (two
residual blocks per resolution; the reference sets a Fourier embedding, which DDPM ignores)."""
from score_sde.configs.subvp_cifar import get_config as _base


def get_config():
  config = _base()
  model = config.model
  model.name = 'ddpm'
  model.num_res_blocks = 2
  model.embedding_type = 'fourier'
  return config
