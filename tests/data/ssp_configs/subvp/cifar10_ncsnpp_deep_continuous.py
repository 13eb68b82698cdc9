"""score_sde_pytorch `configs/subvp/cifar10_ncsnpp_deep_continuous.py`: ncsnpp on CIFAR10, subvpsde, continuous=True (a fixture in score_sde_pytorch's config format, from its settings)."""

from configs.default_cifar10_configs import get_default_configs


def get_config():
  config = get_default_configs()
  training = config.training
  training.sde = 'subvpsde'
  training.reduce_mean = True
  training.n_iters = 950001

  sampling = config.sampling
  sampling.method = 'pc'
  sampling.predictor = 'euler_maruyama'
  sampling.corrector = 'none'

  data = config.data
  data.centered = True

  model = config.model
  model.attention_type = 'ddpm'
  model.attn_resolutions = (16,)
  model.ch_mult = (1, 2, 2, 2)
  model.conditional = True
  model.conv_size = 3
  model.ema_rate = 0.9999
  model.embedding_type = 'positional'
  model.fir = True
  model.fir_kernel = [1, 3, 3, 1]
  model.fourier_scale = 16
  model.init_scale = 0.0
  model.name = 'ncsnpp'
  model.nf = 128
  model.nonlinearity = 'swish'
  model.normalization = 'GroupNorm'
  model.num_res_blocks = 8
  model.progressive = 'none'
  model.progressive_combine = 'sum'
  model.progressive_input = 'residual'
  model.resamp_with_conv = True
  model.resblock_type = 'biggan'
  model.scale_by_sigma = False
  model.skip_rescale = True

  return config
