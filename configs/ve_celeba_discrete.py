"""NCSN++ (VE, discrete SMLD) on CelebA 64x64 (Song et al. 2021, ICLR); score_sde_pytorch
`configs/ve/celeba_ncsnpp.py`: sigma_max 90 (the reference also sets an unused sigma_begin = 90); an
image folder under config.data.root."""
from score_sde.configs.default import get_default_config


def get_config():
  config = get_default_config()
  training = config.training
  training.continuous = False
  training.sde = 'vesde'

  sampling = config.sampling
  sampling.eps = 1e-05
  sampling.snr = 0.17

  data = config.data
  data.centered = False
  data.dataset = 'celeba'
  data.image_size = 64
  data.num_channels = 3
  data.random_flip = True

  model = config.model
  model.ema_rate = 0.999
  model.fir = True
  model.name = 'ncsnpp'
  model.progressive_input = 'residual'
  model.scale_by_sigma = True
  model.sigma_max = 90.0
  return config
