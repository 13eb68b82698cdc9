"""score_sde_pytorch `configs/ve/church_ncsnpp_continuous.py`: ncsnpp on LSUN, vesde, continuous=True (a fixture in score_sde_pytorch's config format, from its settings)."""

from configs.default_lsun_configs import get_default_configs


def get_config():
  config = get_default_configs()
  training = config.training
  training.sde = 'vesde'

  sampling = config.sampling
  sampling.method = 'pc'
  sampling.predictor = 'reverse_diffusion'
  sampling.corrector = 'langevin'

  data = config.data
  data.category = 'church_outdoor'

  model = config.model
  model.attention_type = 'ddpm'
  model.attn_resolutions = (16,)
  model.ch_mult = (1, 1, 2, 2, 2, 2, 2)
  model.conditional = True
  model.conv_size = 3
  model.ema_rate = 0.999
  model.fir = True
  model.fir_kernel = [1, 3, 3, 1]
  model.fourier_scale = 16
  model.init_scale = 0.0
  model.name = 'ncsnpp'
  model.nf = 128
  model.nonlinearity = 'swish'
  model.normalization = 'GroupNorm'
  model.num_res_blocks = 2
  model.progressive = 'output_skip'
  model.progressive_combine = 'sum'
  model.progressive_input = 'input_skip'
  model.resamp_with_conv = True
  model.resblock_type = 'biggan'
  model.scale_by_sigma = True
  model.sigma_max = 380
  model.skip_rescale = True

  return config
