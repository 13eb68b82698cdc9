"""NCSN++ cont. (VE) on FFHQ 1024x1024 (Song et al. 2021, ICLR, App. H); score_sde_pytorch
`configs/ve/ffhq_ncsnpp_continuous.py`: the CelebA-HQ 1024 config (ve_celebahq_1024) on FFHQ,
with a mean-reduced loss; an image folder under config.data.root."""
from score_sde.configs.ve_celebahq_1024 import get_config as _base


def get_config():
  config = _base()
  config.training.reduce_mean = True
  config.data.dataset = 'ffhq'
  return config
