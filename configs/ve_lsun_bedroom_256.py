"""NCSN++ cont. (VE) on LSUN bedroom 256x256 (Song et al. 2021, ICLR, App. H); score_sde_pytorch
`configs/ve/bedroom_ncsnpp_continuous.py`: the LSUN defaults of the reference (batch 64, 2000
scales, sigma_max 378, snr 0.075); an image folder of bedrooms under config.data.root."""
from score_sde.configs.default import get_default_config


def get_config():
  config = get_default_config()
  training = config.training
  training.batch_size = 64
  training.n_iters = 2400001
  training.sde = 'vesde'
  training.snapshot_freq_for_preemption = 5000

  sampling = config.sampling
  sampling.eps = 1e-05
  sampling.snr = 0.075

  data = config.data
  data.centered = False
  data.dataset = 'lsun'
  data.image_size = 256
  data.num_channels = 3
  data.random_flip = True

  model = config.model
  model.ch_mult = (1, 1, 2, 2, 2, 2, 2)
  model.dropout = 0.0
  model.ema_rate = 0.999
  model.embedding_type = 'fourier'
  model.fir = True
  model.name = 'ncsnpp'
  model.num_res_blocks = 2
  model.num_scales = 2000
  model.progressive = 'output_skip'
  model.progressive_input = 'input_skip'
  model.scale_by_sigma = True
  model.sigma_max = 378.0
  return config
