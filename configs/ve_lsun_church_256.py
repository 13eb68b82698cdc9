"""NCSN++ cont. (VE) on LSUN church_outdoor 256x256 (Song et al. 2021, ICLR, App. H;
score_sde_pytorch `configs/ve/church_ncsnpp_continuous.py`): the FFHQ-256 config with
sigma_max = 380 (an image folder under config.data.root)."""
from score_sde.configs.ve_ffhq_256 import get_config as _base


def get_config():
  config = _base()
  config.data.dataset = 'lsun'
  config.model.sigma_max = 380.0
  return config
