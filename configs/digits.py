"""The embedded default: a VP-SDE U-Net on scikit-learn's 8x8 handwritten digits.

Trains to recognisable digits on a 2-core CPU in a few minutes (no download needed).
"""
from score_sde.configs.default import get_default_config


def get_config():
  config = get_default_config()
  config.data.dataset = 'digits'
  config.data.image_size = 8
  config.data.num_channels = 1
  config.data.centered = True
  config.model.name = 'unet'
  config.model.nf = 32
  config.model.ch_mult = (1, 2)
  config.model.attn_resolutions = (4,)
  config.model.dropout = 0.0
  config.model.ema_rate = 0.999
  config.training.sde = 'vpsde'
  config.training.batch_size = 64
  config.training.n_iters = 3000
  config.training.log_freq = 50
  config.training.snapshot_freq = 1000
  config.training.snapshot_freq_for_preemption = 500
  config.training.snapshot_sampling = False
  config.optim.lr = 2e-3
  config.optim.warmup = 200
  config.sampling.method = 'ode'
  config.sampling.predictor = 'reverse_diffusion'
  config.sampling.corrector = 'langevin'
  config.sampling.snr = 0.01
  config.sampling.rtol = 1e-4
  config.sampling.atol = 1e-4
  config.sampling.num_samples = 64
  config.eval.batch_size = 100
  config.eval.bpd_num_batches = 1   # 100 test digits; set 0 for all 297
  config.eval.num_samples = 1000    # FID of 8x8 digits: 1000 samples (the train split has 1500)
  return config
