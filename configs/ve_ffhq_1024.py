"""NCSN++ cont. (VE) on FFHQ 1024x1024 (Song et al. 2021, ICLR, App. H); score_sde_pytorch
`configs/ve/ffhq_ncsnpp_continuous.py`: nf 16, eight levels, sigma_max 1348, batch 8, mean-reduced
loss; an image folder under config.data.root."""
from score_sde.configs.default import get_default_config


def get_config():
  config = get_default_config()
  training = config.training
  training.batch_size = 8
  training.n_iters = 2400001
  training.reduce_mean = True
  training.sde = 'vesde'

  sampling = config.sampling
  sampling.eps = 1e-05
  sampling.snr = 0.15

  data = config.data
  data.centered = False
  data.dataset = 'ffhq'
  data.image_size = 1024
  data.num_channels = 3
  data.random_flip = True

  model = config.model
  model.ch_mult = (1, 2, 4, 8, 16, 32, 32, 32)
  model.dropout = 0.0
  model.embedding_type = 'fourier'
  model.fir = True
  model.name = 'ncsnpp'
  model.nf = 16
  model.num_res_blocks = 1
  model.num_scales = 2000
  model.progressive = 'output_skip'
  model.progressive_input = 'input_skip'
  model.scale_by_sigma = True
  model.sigma_max = 1348.0
  return config
