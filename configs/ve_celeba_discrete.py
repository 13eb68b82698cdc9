"""NCSN++ (VE, discrete SMLD) on CelebA 64x64 (Song et al. 2021, ICLR); score_sde_pytorch
`configs/ve/celeba_ncsnpp.py`: ve_cifar_discrete at 64x64 with sigma_max 90 (the reference also
sets an unused sigma_begin = 90); an image folder under config.data.root."""
from score_sde.configs.ve_cifar_discrete import get_config as _base


def get_config():
  config = _base()
  config.sampling.snr = 0.17

  data = config.data
  data.dataset = 'celeba'
  data.image_size = 64

  config.model.sigma_max = 90.0
  return config
