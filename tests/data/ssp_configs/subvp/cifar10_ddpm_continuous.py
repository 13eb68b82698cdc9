"""score_sde_pytorch `configs/subvp/cifar10_ddpm_continuous.py`: ddpm on CIFAR10, subvpsde, continuous=True (a fixture in score_sde_pytorch's config format, from its settings)."""

from configs.default_cifar10_configs import get_default_configs


def get_config():
  config = get_default_configs()
  training = config.training
  training.sde = 'subvpsde'
  training.reduce_mean = True

  sampling = config.sampling
  sampling.method = 'pc'
  sampling.predictor = 'euler_maruyama'
  sampling.corrector = 'none'

  data = config.data
  data.centered = True

  model = config.model
  model.attn_resolutions = (16,)
  model.ch_mult = (1, 2, 2, 2)
  model.conditional = True
  model.ema_rate = 0.9999
  model.name = 'ddpm'
  model.nf = 128
  model.nonlinearity = 'swish'
  model.normalization = 'GroupNorm'
  model.num_res_blocks = 2
  model.resamp_with_conv = True
  model.scale_by_sigma = False

  return config
