"""NCSN++ cont. (VP) on CIFAR-10 (Song et al. 2021, ICLR, Table 3); score_sde_pytorch
`configs/vp/cifar10_ncsnpp_continuous.py`: the DDPM++ config (vp_cifar) with FIR resampling and
the residual input pyramid, positional embedding of 999 t."""
from score_sde.configs.vp_cifar import get_config as _base


def get_config():
  config = _base()
  model = config.model
  model.fir = True
  model.progressive_input = 'residual'
  return config
