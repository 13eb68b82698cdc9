"""NCSN++ (VP, discrete DDPM chain) on CIFAR-10 (Song et al. 2021, ICLR, Table 2); score_sde_pytorch
`configs/vp/cifar10_ncsnpp.py`: vp_cifar_discrete with FIR resampling and the residual input
pyramid."""
from score_sde.configs.vp_cifar_discrete import get_config as _base


def get_config():
  config = _base()
  model = config.model
  model.fir = True
  model.progressive_input = 'residual'
  return config
