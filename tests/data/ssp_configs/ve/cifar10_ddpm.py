"""score_sde_pytorch `configs/ve/cifar10_ddpm.py`: ddpm on CIFAR10, vesde, continuous=False (a fixture in score_sde_pytorch's config format, from its settings)."""

from configs.default_cifar10_configs import get_default_configs


def get_config():
  config = get_default_configs()
  training = config.training
  training.sde = 'vesde'
  training.continuous = False

  sampling = config.sampling
  sampling.method = 'pc'
  sampling.predictor = 'reverse_diffusion'
  sampling.corrector = 'langevin'

  model = config.model
  model.attn_resolutions = (16,)
  model.ch_mult = (1, 2, 2, 2)
  model.conditional = True
  model.conv_size = 3
  model.ema_rate = 0.999
  model.name = 'ddpm'
  model.nf = 128
  model.nonlinearity = 'swish'
  model.normalization = 'GroupNorm'
  model.num_res_blocks = 2
  model.resamp_with_conv = True
  model.scale_by_sigma = True

  return config
