"""Name -> class table of the score_sde_pytorch score networks (no decorator registry).

Every class is built as `Net(config.model, config.data)` and called as `net(x [B, C, H, W], time_cond [B], y=None)`,
returning `[B, C, H, W]`. Names are score_sde_pytorch's `config.model.name` values.
"""
from score_sde.models.ddpm import DDPM
from score_sde.models.ncsnpp import NCSNpp
from score_sde.models.ncsnv2 import NCSNv2, NCSNv2_128, NCSNv2_256

NETWORKS = {
    'ncsnpp': NCSNpp,        # NCSN++ / DDPM++ (Song et al. 2021)
    'ddpm': DDPM,            # Ho et al. 2020
    'ncsnv2_64': NCSNv2,     # Song & Ermon 2020, images < 96 px
    'ncsnv2_128': NCSNv2_128,
    'ncsnv2_256': NCSNv2_256,
}
