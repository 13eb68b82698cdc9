"""NCSN++ cont. (VE) on CIFAR-10 (Song et al. 2021, ICLR, Table 3; score_sde_pytorch
`configs/ve/cifar10_ncsnpp_continuous.py`): FIR resampling, residual input pyramid, Fourier
embedding of log sigma, output divided by sigma.

The rest is default.py's: the continuous VE SDE (sigma 0.01 to 50, 1000 scales), batch
128, 1.3M iterations, PC sampling (reverse diffusion + Langevin, snr 0.16), nf 128, ch_mult
(1, 2, 2, 2), 4 residual blocks, attention at 16, dropout 0.1 and Adam 2e-4 with 5000 warm-up
steps.
"""
from score_sde.configs.default import get_default_config


def get_config():
  config = get_default_config()
  config.training.sde = 'vesde'

  data = config.data
  data.dataset = 'cifar10'
  data.image_size = 32
  data.num_channels = 3
  data.random_flip = True
  data.centered = False  # data in [0, 1]; NCSN++ maps it to [-1, 1] itself

  model = config.model
  model.name = 'ncsnpp'
  model.scale_by_sigma = True
  model.ema_rate = 0.999
  model.fir = True
  model.progressive_input = 'residual'
  model.embedding_type = 'fourier'
  return config
