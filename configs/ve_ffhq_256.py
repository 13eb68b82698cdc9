"""NCSN++ cont. (VE) on FFHQ 256x256 (Song et al. 2021, ICLR, App. H; score_sde_pytorch
`configs/ve/ffhq_256_ncsnpp_continuous.py`).
The LSUN-style defaults of the reference apply: batch 64, 2.4M iterations, snr 0.075,
2000 noise scales, no dropout; the output and input pyramids of StyleGAN2 are used."""
from score_sde.configs.default import get_default_config


def get_config():
  config = get_default_config()
  training = config.training
  training.sde = 'vesde'
  training.batch_size = 64
  training.n_iters = 2400001

  config.sampling.snr = 0.075

  data = config.data
  data.dataset = 'ffhq'
  data.image_size = 256
  data.num_channels = 3
  data.random_flip = True
  data.centered = False  # data in [0, 1]; NCSN++ maps it to [-1, 1] itself

  model = config.model
  model.name = 'ncsnpp'
  model.sigma_max = 348.0
  model.num_scales = 2000
  model.scale_by_sigma = True
  model.ema_rate = 0.999
  model.dropout = 0.
  model.ch_mult = (1, 1, 2, 2, 2, 2, 2)
  model.num_res_blocks = 2
  model.fir = True
  model.progressive = 'output_skip'
  model.progressive_input = 'input_skip'
  model.embedding_type = 'fourier'
  return config
