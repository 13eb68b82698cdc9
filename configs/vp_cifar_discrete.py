"""DDPM++ (VP, discrete DDPM chain) on CIFAR-10 (Song et al. 2021, ICLR, Table 2); score_sde_pytorch
`configs/vp/cifar10_ddpmpp.py`: the DDPM++ config (vp_cifar) trained on the 1000-step chain,
sampled with the reverse-diffusion predictor."""
from score_sde.configs.vp_cifar import get_config as _base


def get_config():
  config = _base()
  config.training.continuous = False
  config.sampling.predictor = 'reverse_diffusion'
  return config
