"""NCSN++ cont. deep (sub-VP) on CIFAR-10 (Song et al. 2021, ICLR, Table 3); score_sde_pytorch
`configs/subvp/cifar10_ncsnpp_deep_continuous.py`: vp_cifar_ncsnpp_deep with the sub-VP SDE."""
from score_sde.configs.vp_cifar_ncsnpp_deep import get_config as _base


def get_config():
  config = _base()
  config.training.sde = 'subvpsde'
  return config
