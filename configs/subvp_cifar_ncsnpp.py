"""NCSN++ cont. (sub-VP) on CIFAR-10 (Song et al. 2021, ICLR, Table 3); score_sde_pytorch
`configs/subvp/cifar10_ncsnpp_continuous.py`: vp_cifar_ncsnpp with the sub-VP SDE."""
from score_sde.configs.vp_cifar_ncsnpp import get_config as _base


def get_config():
  config = _base()
  config.training.sde = 'subvpsde'
  return config
