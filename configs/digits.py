"""The embedded default: a VP-SDE U-Net on scikit-learn's 8x8 handwritten digits.

Trains to recognisable digits on a 2-core CPU in a few minutes (no download needed). The
dataset, the U-Net, the VP SDE and centred data are default.py's; this shrinks them to 8x8.
"""
from score_sde.configs.default import get_default_config


def get_config():
  config = get_default_config()
  config.training.batch_size = 64
  config.training.n_iters = 3000
  config.training.snapshot_freq = 1000
  config.training.snapshot_freq_for_preemption = 500
  config.training.snapshot_sampling = False

  config.sampling.method = 'ode'
  config.sampling.snr = 0.01
  config.sampling.rtol = 1e-4
  config.sampling.atol = 1e-4

  config.data.image_size = 8

  config.model.nf = 32
  config.model.ch_mult = (1, 2)
  config.model.attn_resolutions = (4,)
  config.model.dropout = 0.0
  config.model.ema_rate = 0.999

  config.optim.lr = 2e-3
  config.optim.warmup = 200

  config.eval.batch_size = 100
  config.eval.bpd_num_batches = 1   # 100 test digits; set 0 for all 297
  config.eval.num_samples = 1000    # FID of 8x8 digits: 1000 samples (the train split has 1500)
  return config
