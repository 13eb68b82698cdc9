"""DDPM++ cont. (VP) on CIFAR-10 (Song et al. 2021, ICLR, Table 3; score_sde_pytorch
`configs/vp/cifar10_ddpmpp_continuous.py`).

The rest is default.py's: the continuous VP SDE (beta_min 0.1, beta_max 20), batch 128, 1.3M
iterations, data centred in [-1, 1] (as the reference's VP configs feed it), the DDPM++ layout of
the NCSN++ network (nf 128, ch_mult (1, 2, 2, 2), 4 residual blocks, attention at 16, BigGAN
blocks, positional embedding, no FIR), EMA 0.9999 and Adam 2e-4 with 5000 warm-up steps.
"""
from score_sde.configs.default import get_default_config


def get_config():
  config = get_default_config()
  config.training.reduce_mean = True

  sampling = config.sampling
  sampling.predictor = 'euler_maruyama'
  sampling.corrector = 'none'

  data = config.data
  data.dataset = 'cifar10'
  data.image_size = 32
  data.num_channels = 3
  data.random_flip = True

  config.model.name = 'ncsnpp'
  return config
