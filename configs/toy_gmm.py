"""2-D toy 'gmm' with a residual MLP (see configs/toy.py)."""
from score_sde.configs.toy import get_config as _base


def get_config():
  config = _base()
  config.data.dataset = 'gmm'
  return config
