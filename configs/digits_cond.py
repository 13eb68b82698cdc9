"""Class-conditional digits for classifier-free guidance (Ho & Salimans 2022): the label is
dropped to the null class with probability p_uncond during training. Sample one grid row per
class with `--config.sampling.guidance_scale=w` (w = 1 conditional, w = 0 unconditional).
The 10 classes are default.py's data.num_classes."""
from score_sde.configs.digits import get_config as _digits


def get_config():
  config = _digits()
  config.training.p_uncond = 0.1
  config.sampling.num_samples = 100
  config.sampling.batch_size = 100
  config.model.class_conditional = True
  return config
