"""NCSN++ cont. (VP) on CIFAR-10 (Song et al. 2021, ICLR, Table 3); score_sde_pytorch
`configs/vp/cifar10_ncsnpp_continuous.py`: FIR resampling and the residual input pyramid, positional
embedding of 999 t."""
from score_sde.configs.default import get_default_config


def get_config():
  config = get_default_config()
  training = config.training
  training.reduce_mean = True

  sampling = config.sampling
  sampling.corrector = 'none'
  sampling.predictor = 'euler_maruyama'

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
