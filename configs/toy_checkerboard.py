"""2-D toy 'checkerboard' with a residual MLP (see configs/toy.py): toy.py itself, whose dataset
is the checkerboard, under the name that says so (like toy_gmm and toy_moons)."""
from score_sde.configs.toy import get_config as _base


def get_config():
  return _base()
