"""NCSNv2 (Song & Ermon 2020) on CIFAR-10: discrete VE (SMLD) with 232 geometric noise levels
from 50 to 0.01, annealed Langevin dynamics (5 steps per level, snr 0.176)
(score_sde_pytorch `configs/ve/ncsnv2/cifar10.py`).

The noise range (default.py's sigma_min 0.01, sigma_max 50), batch 128, 1.3M iterations, the
summed loss and Adam's beta1 and eps are default.py's."""
from score_sde.configs.default import get_default_config


def get_config():
  config = get_default_config()
  training = config.training
  training.sde = 'vesde'
  training.continuous = False

  sampling = config.sampling
  sampling.predictor = 'none'
  sampling.corrector = 'ald'
  sampling.n_steps_each = 5
  sampling.snr = 0.176

  data = config.data
  data.dataset = 'cifar10'
  data.image_size = 32
  data.num_channels = 3
  data.random_flip = True
  data.centered = False

  model = config.model
  model.name = 'ncsnv2_64'
  model.num_scales = 232
  model.scale_by_sigma = True
  model.ema_rate = 0.999
  model.normalization = 'InstanceNorm++'
  model.nonlinearity = 'elu'

  optim = config.optim  # NCSNv2: Adam 1e-4, no warm-up, no clipping
  optim.lr = 1e-4
  optim.warmup = 0
  optim.grad_clip = -1.
  return config
