"""NCSN++ (VE, discrete SMLD) on CIFAR-10 (Song et al. 2021, ICLR, Table 2); score_sde_pytorch
`configs/ve/cifar10_ncsnpp.py`: the continuous VE config (ve_cifar) on the 1000-level SMLD chain,
with the positional embedding of the noise-level index, sampled down to 1e-5."""
from score_sde.configs.ve_cifar import get_config as _base


def get_config():
  config = _base()
  config.training.continuous = False
  config.sampling.eps = 1e-05
  config.model.embedding_type = 'positional'
  return config
