"""NCSN++ (VP, discrete DDPM chain) on CIFAR-10 (Song et al. 2021, ICLR, Table 2); score_sde_pytorch
`configs/vp/cifar10_ncsnpp.py`: FIR resampling and the residual input pyramid on the 1000-step
chain."""
from score_sde.configs.default import get_default_config


def get_config():
  config = get_default_config()
  training = config.training
  training.continuous = False
  training.reduce_mean = True

  sampling = config.sampling
  sampling.corrector = 'none'

  data = config.data
  data.dataset = 'cifar10'
  data.image_size = 32
  data.num_channels = 3
  data.random_flip = True

  model = config.model
  model.fir = True
  model.name = 'ncsnpp'
  model.progressive_input = 'residual'
  return config
