"""DDPM++ cont. deep (sub-VP) on CIFAR-10 (Song et al. 2021, ICLR, Table 3; score_sde_pytorch
`configs/subvp/cifar10_ddpmpp_deep_continuous.py`)."""
from score_sde.configs.vp_cifar_deep import get_config as _base


def get_config():
  config = _base()
  config.training.sde = 'subvpsde'
  return config
