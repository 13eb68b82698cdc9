"""NCSN++ cont. deep (VP) on CIFAR-10 (Song et al. 2021, ICLR, Table 3); score_sde_pytorch
`configs/vp/cifar10_ncsnpp_deep_continuous.py`: vp_cifar_ncsnpp with 8 residual blocks per
resolution, trained 950k steps."""
from score_sde.configs.vp_cifar_ncsnpp import get_config as _base


def get_config():
  config = _base()
  config.training.n_iters = 950001
  config.model.num_res_blocks = 8
  return config
