"""NCSN++ (VE, discrete SMLD) on CIFAR-10 (Song et al. 2021, ICLR, Table 2); score_sde_pytorch
`configs/ve/cifar10_ncsnpp.py`: positional embedding of the noise-level index, output divided by
sigma."""
from score_sde.configs.default import get_default_config


def get_config():
  config = get_default_config()
  training = config.training
  training.continuous = False
  training.sde = 'vesde'

  sampling = config.sampling
  sampling.eps = 1e-05

  data = config.data
  data.centered = False
  data.dataset = 'cifar10'
  data.image_size = 32
  data.num_channels = 3
  data.random_flip = True

  model = config.model
  model.ema_rate = 0.999
  model.fir = True
  model.name = 'ncsnpp'
  model.progressive_input = 'residual'
  model.scale_by_sigma = True
  return config
