"""NCSN++ cont. deep (sub-VP) on CIFAR-10 (Song et al. 2021, ICLR, Table 3); score_sde_pytorch
`configs/subvp/cifar10_ncsnpp_deep_continuous.py`: 8 residual blocks per resolution."""
from score_sde.configs.default import get_default_config


def get_config():
  config = get_default_config()
  training = config.training
  training.n_iters = 950001
  training.reduce_mean = True
  training.sde = 'subvpsde'

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
  model.num_res_blocks = 8
  model.progressive_input = 'residual'
  return config
