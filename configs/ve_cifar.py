"""NCSN++ cont. (VE) on CIFAR-10 (Song et al. 2021, ICLR, Table 3; score_sde_pytorch
`configs/ve/cifar10_ncsnpp_continuous.py`): FIR resampling, residual input pyramid, Fourier
embedding of log sigma, output divided by sigma."""
from score_sde.configs.default import get_default_config


def get_config():
  config = get_default_config()
  training = config.training
  training.sde = 'vesde'
  training.continuous = True
  training.reduce_mean = False
  training.batch_size = 128
  training.n_iters = 1300001

  sampling = config.sampling
  sampling.method = 'pc'
  sampling.predictor = 'reverse_diffusion'
  sampling.corrector = 'langevin'
  sampling.snr = 0.16

  data = config.data
  data.dataset = 'cifar10'
  data.image_size = 32
  data.num_channels = 3
  data.random_flip = True
  data.centered = False  # data in [0, 1]; NCSN++ maps it to [-1, 1] itself
  data.uniform_dequantization = False

  model = config.model
  model.name = 'ncsnpp'
  model.sigma_min = 0.01
  model.sigma_max = 50.
  model.num_scales = 1000
  model.beta_min = 0.1
  model.beta_max = 20.
  model.scale_by_sigma = True
  model.ema_rate = 0.999
  model.dropout = 0.1
  model.normalization = 'GroupNorm'
  model.nonlinearity = 'swish'
  model.nf = 128
  model.ch_mult = (1, 2, 2, 2)
  model.num_res_blocks = 4
  model.attn_resolutions = (16,)
  model.resamp_with_conv = True
  model.conditional = True
  model.fir = True
  model.fir_kernel = (1, 3, 3, 1)
  model.skip_rescale = True
  model.resblock_type = 'biggan'
  model.progressive = 'none'
  model.progressive_input = 'residual'
  model.progressive_combine = 'sum'
  model.attention_type = 'ddpm'
  model.init_scale = 0.
  model.embedding_type = 'fourier'
  model.fourier_scale = 16.
  model.conv_size = 3

  optim = config.optim
  optim.optimizer = 'Adam'
  optim.lr = 2e-4
  optim.beta1 = 0.9
  optim.eps = 1e-8
  optim.weight_decay = 0.
  optim.warmup = 5000
  optim.grad_clip = 1.
  return config
