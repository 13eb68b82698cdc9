"""DDPM (Ho et al. 2020) on CIFAR-10: discrete-time VP, L_simple, ancestral sampling
(score_sde_pytorch `configs/vp/ddpm/cifar10.py`).

The rest is default.py's: the 1000-step VP chain (beta_min 0.1, beta_max 20), batch 128, 1.3M
iterations, data centred in [-1, 1], nf 128, ch_mult (1, 2, 2, 2), attention at 16, dropout 0.1,
EMA 0.9999 and Adam 2e-4 with 5000 warm-up steps.
"""
from score_sde.configs.default import get_default_config


def get_config():
  config = get_default_config()
  training = config.training
  training.continuous = False
  training.reduce_mean = True

  sampling = config.sampling
  sampling.predictor = 'ancestral'
  sampling.corrector = 'none'

  data = config.data
  data.dataset = 'cifar10'
  data.image_size = 32
  data.num_channels = 3
  data.random_flip = True

  model = config.model
  model.name = 'ddpm'
  model.num_res_blocks = 2
  return config
