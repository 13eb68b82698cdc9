"""2-D toy data (checkerboard by default; also moons, gmm, swissroll) with a residual MLP.

`--config.data.dataset=moons` switches the distribution. Trains in about a minute on a CPU.
The VP SDE and the MLP's width and depth (256, 3) are default.py's.
"""
from score_sde.configs.default import get_default_config


def get_config():
  config = get_default_config()
  config.training.batch_size = 512
  config.training.n_iters = 3000
  config.training.snapshot_freq = 1000
  config.training.snapshot_freq_for_preemption = 500
  config.training.snapshot_sampling = False

  config.sampling.method = 'ode'
  config.sampling.snr = 0.01
  config.sampling.num_samples = 4000
  config.sampling.batch_size = 4000

  config.data.dataset = 'checkerboard'
  config.data.num_channels = 2       # the data dimension
  config.data.num_classes = 8
  config.data.centered = False

  config.model.name = 'mlp'
  config.model.dropout = 0.0
  config.model.ema_rate = 0.999

  config.optim.lr = 1e-3
  config.optim.warmup = 100

  config.eval.batch_size = 1000
  config.eval.bpd_num_batches = 1
  config.eval.num_samples = 10000   # sliced W2 of 2-D points: 10,000 samples suffice
  return config
