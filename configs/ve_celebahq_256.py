"""NCSN++ cont. (VE) on CelebA-HQ 256x256 (Song et al. 2021, ICLR, App. H; score_sde_pytorch
`configs/ve/celebahq_256_ncsnpp_continuous.py`): the FFHQ-256 config on CelebA-HQ images
(an image folder under config.data.root)."""
from score_sde.configs.ve_ffhq_256 import get_config as _base


def get_config():
  config = _base()
  config.data.dataset = 'celebahq'
  return config
