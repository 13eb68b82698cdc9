"""score_sde_pytorch `configs/ve/celebahq_ncsnpp_continuous.py`: ncsnpp on CelebAHQ, vesde, continuous=True (a fixture in score_sde_pytorch's config format, from its settings)."""

import ml_collections


def get_config():
  config = ml_collections.ConfigDict()
  config.training = training = ml_collections.ConfigDict()
  training.batch_size = 8
  training.n_iters = 2400001
  training.eval_freq = 100
  training.sde = 'vesde'
  training.continuous = True

  config.sampling = sampling = ml_collections.ConfigDict()
  sampling.method = 'pc'
  sampling.predictor = 'reverse_diffusion'
  sampling.corrector = 'langevin'
  sampling.snr = 0.15
  sampling.n_steps_each = 1

  config.eval = evaluate = ml_collections.ConfigDict()
  evaluate.batch_size = 1024
  evaluate.begin_ckpt = 1
  evaluate.end_ckpt = 96

  config.data = data = ml_collections.ConfigDict()
  data.centered = False
  data.dataset = 'CelebAHQ'
  data.image_size = 1024
  data.num_channels = 3
  data.random_flip = True
  data.uniform_dequantization = False
  data.tfrecords_path = '/data/r10.tfrecords'

  config.model = model = ml_collections.ConfigDict()
  model.attention_type = 'ddpm'
  model.attn_resolutions = (16,)
  model.ch_mult = (1, 2, 4, 8, 16, 32, 32, 32)
  model.conditional = True
  model.conv_size = 3
  model.dropout = 0.0
  model.ema_rate = 0.9999
  model.embedding_type = 'fourier'
  model.fir = True
  model.fir_kernel = [1, 3, 3, 1]
  model.fourier_scale = 16
  model.init_scale = 0.0
  model.name = 'ncsnpp'
  model.nf = 16
  model.nonlinearity = 'swish'
  model.normalization = 'GroupNorm'
  model.num_res_blocks = 1
  model.num_scales = 2000
  model.progressive = 'output_skip'
  model.progressive_combine = 'sum'
  model.progressive_input = 'input_skip'
  model.resamp_with_conv = True
  model.resblock_type = 'biggan'
  model.scale_by_sigma = True
  model.sigma_max = 1348
  model.sigma_min = 0.01
  model.skip_rescale = True

  config.optim = optim = ml_collections.ConfigDict()
  optim.optimizer = 'Adam'
  optim.lr = 2e-4
  optim.amsgrad = False

  config.seed = 42
  config.device = 'cpu'
  return config
