"""DDPM network with SMLD (discrete VE) on CIFAR-10 (Song et al. 2021, ICLR); score_sde_pytorch
`configs/ve/cifar10_ddpm.py`: Ho et al.'s network trained as a noise-conditional score network:
output divided by sigma."""
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
  model.embedding_type = 'fourier'
  model.name = 'ddpm'
  model.num_res_blocks = 2
  model.scale_by_sigma = True
  return config
