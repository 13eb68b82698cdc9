"""Base configuration: every key any experiment may set lives here.

Experiment files call `get_default_config()` and override values only. The returned
ConfigDict is locked, so a typo such as `config.training.bacth_size = 64` (or
`--config.training.bacth_size=64` on the command line) fails loudly instead of being
silently ignored. Names follow score_sde_pytorch's configs where they exist so that
its configs translate one-to-one.
"""
import ml_collections


def _training():
  t = ml_collections.ConfigDict()
  t.sde = 'vpsde'                 # vpsde | subvpsde | vesde
  t.batch_size = 128
  t.n_iters = 1300001
  t.snapshot_freq = 50000         # permanent checkpoints
  t.snapshot_freq_for_preemption = 10000  # rolling checkpoint
  t.keep_checkpoints = 3          # how many rolling checkpoints to keep
  t.log_freq = 50
  t.sample_freq = 0               # write a sample grid every k steps (0: only at snapshots)
  t.snapshot_sampling = True
  t.continuous = True
  t.reduce_mean = False
  t.likelihood_weighting = False
  t.importance_sampling = False   # with likelihood weighting: sample t ~ g^2/std^2
  t.p_uncond = 0.0                # classifier-free label dropout probability
  t.nan_policy = 'stop'           # stop | skip
  t.max_nan_skips = 20            # nan_policy=skip: stop after this many non-finite losses in a row
  t.eps = 1e-5                    # smallest training time
  t.grad_accum = 1                # micro-batches per step; batch_size is the global batch
  t.loss = 'dsm'                  # dsm (weighted DSM; L_simple when discrete) | hybrid | vlb:
                                  # IDDPM's L_simple + vlb_weight L_vlb, or L_vlb with t
                                  # importance-sampled (both discrete-time VP; see score_sde.vlb)
  t.vlb_weight = 0.001            # lambda of L_hybrid (Nichol & Dhariwal 2021)
  return t


def _sampling():
  s = ml_collections.ConfigDict()
  s.method = 'pc'                 # solver name, see score_sde.sampling.SOLVERS
  s.predictor = 'reverse_diffusion'
  s.corrector = 'langevin'
  s.snr = 0.16
  s.n_steps_each = 1
  s.noise_removal = True
  s.probability_flow = False      # pc: integrate the probability-flow ODE (no noise)
  s.steps = 0                     # 0: use sde.N
  s.ode_method = 'dopri5'
  s.rtol = 1e-5
  s.atol = 1e-5
  s.eta = 0.0                     # ddim
  s.order = 2                     # dpm_solver
  s.grid = 'logsnr'               # dpm_solver, unipc: logsnr | time_uniform | karras | optimized
                                  # (tuned on the model's own PF-ODE; score_sde.sampling.optimized_grid)
  s.grid_pilot_batch = 64         # optimized grid: prior draws it is tuned on
  s.grid_max_knots = 16           # optimized grid: knots of its log-SNR warp (tuning cost grows with it)
  s.grid_cache_dir = ''           # optimized grid: JSON cache folder ('' = memory only)
  s.multistep = True              # dpm_solver
  s.unipc_variant = 'bh2'         # unipc: bh1 | bh2 (order and grid as dpm_solver)
  s.variance = 'auto'             # ddpm: auto (learned if the model has it, else small) |
                                  # small (beta tilde) | large (beta) | learned
  s.rho = 7.0                     # heun: Karras grid exponent
  s.s_churn = 0.0                 # heun: stochastic churn (Karras et al. 2022, Alg. 2)
  s.s_tmin = 0.0
  s.s_tmax = 1e30
  s.s_noise = 1.0
  s.sde_method = 'euler'          # sde: torchsde method (euler | milstein | srk)
  s.eps = 1e-3
  s.batch_size = 64
  s.num_samples = 64
  s.guidance_scale = 1.0
  s.label = -1                    # -1: one grid row per class when conditional
  s.classifier_scale = 0.0        # > 0: classifier guidance with the noisy classifier
  s.classifier_checkpoint = ''    # default: newest in <workdir>/classifier/checkpoints
  s.seed = 0
  return s


def _eval():
  e = ml_collections.ConfigDict()  # --mode eval (and the batch size of --mode likelihood)
  e.batch_size = 256
  e.num_samples = 50000           # samples per checkpoint for FID / IS / KID (toys: sliced W2)
  e.begin_ckpt = 0                # checkpoints whose step is in [begin_ckpt, end_ckpt]
  e.end_ckpt = -1                 # -1: no end
  e.enable_sampling = True
  e.enable_bpd = True             # test-split bits/dim through the probability-flow ODE
  e.solver = ''                   # sampler for --mode eval ('' = sampling.method)
  e.stats_path = ''               # dataset Inception stats (.npz); default <workdir>/eval/
  e.kid_subset_size = 1000
  e.fid_method = 'sqrtm'          # sqrtm (as pytorch-fid / TTUR) | eig
  e.bpd_dataset = 'test'
  e.bpd_num_batches = 0           # 0: the whole split
  e.bpd_divergence = 'hutchinson'
  e.bpd_amp = 'none'              # none | fp16 (autocast of the network, ~2x on tensor cores) | bf16 (biased)
  e.bpd_method = 'ode'            # ode (PF-ODE, dequantised) | vlb (DDPM bound) | both
  e.vlb_steps = 0                 # vlb: steps of the strided chain (0: all N; fewer: looser)
  e.inception_path = ''
  return e


def _classifier():
  c = ml_collections.ConfigDict()  # --mode train_classifier (noisy classifier for guidance);
  c.ch = 64                       # it trains with the training.* and optim.* keys
  c.levels = 3                    # conv classifier width / number of levels (images)
  c.hidden = 128                  # MLP classifier (2-D toys)
  c.depth = 3
  c.eval_batches = 4              # accuracy per noise level (TensorBoard) on this many test batches
  return c


def _inverse():
  i = ml_collections.ConfigDict()  # --mode inpaint / colorize
  i.source = ''                   # '' = the test split; or a .npy/.npz/.png file of images
  i.num_images = 8
  i.mask = 'center'               # inpaint: center | left | random | a mask file (1 = known)
  i.random_fraction = 0.5         # mask 'random': fraction of known pixels
  i.method = ''                   # '' = 'project' for pc (the paper's), 'score' for other solvers
  return i


def _data():
  d = ml_collections.ConfigDict()
  d.dataset = 'digits'            # see score_sde.datasets.DATASETS
  d.root = ''
  d.image_size = 16
  d.num_channels = 1
  d.random_flip = False
  d.centered = True               # True: data in [-1, 1]; False: [0, 1]
  d.uniform_dequantization = False
  d.num_classes = 10
  d.num_workers = 0
  d.toy_size = 20000              # number of points drawn for 2-D toy data
  return d


def _model():
  m = ml_collections.ConfigDict()
  m.name = 'unet'                 # see score_sde.models.NETWORKS
  m.parameterization = 'auto'     # auto | eps | score | x0
  m.time_label = 'auto'           # auto | t999 | sigma | index | t
  m.conditional = True            # time conditioning (NCSN++ naming)
  m.class_conditional = False     # take a class label y
  m.sigma_min = 0.01
  m.sigma_max = 50.
  m.num_scales = 1000
  m.beta_min = 0.1
  m.beta_max = 20.
  m.schedule = 'linear'           # VP only: linear | cosine
  m.learn_sigma = False           # also output IDDPM's learned variance (mlp, unet, ddpm, ncsnpp)
  m.ema_rate = 0.9999
  m.dropout = 0.1
  m.nf = 128
  m.ch_mult = (1, 2, 2, 2)
  m.num_res_blocks = 4
  m.attn_resolutions = (16,)
  m.resamp_with_conv = True
  m.normalization = 'GroupNorm'
  m.nonlinearity = 'swish'
  m.scale_by_sigma = False
  m.embedding_type = 'positional'
  m.fourier_scale = 16.
  m.init_scale = 0.
  m.fir = False
  m.fir_kernel = (1, 3, 3, 1)
  m.skip_rescale = True
  m.resblock_type = 'biggan'
  m.progressive = 'none'
  m.progressive_input = 'none'
  m.progressive_combine = 'sum'
  m.attention_type = 'ddpm'        # the only kind score_sde_pytorch's networks use
  m.conv_size = 3                 # likewise (kept so that its configs translate one-to-one)
  m.hidden = 256                  # MLP
  m.depth = 3                     # MLP
  return m


def _optim():
  o = ml_collections.ConfigDict()
  o.optimizer = 'Adam'
  o.lr = 2e-4
  o.beta1 = 0.9
  o.eps = 1e-8
  o.weight_decay = 0.
  o.warmup = 5000
  o.grad_clip = 1.
  o.fused = True                  # fused Adam on CUDA
  return o


def _runtime():
  r = ml_collections.ConfigDict()
  r.device = 'auto'               # auto | cpu | cuda
  r.amp = 'none'                  # none | bf16
  r.channels_last = False
  r.compile = False               # torch.compile the network (training and sampling)
  r.cuda_graphs = False           # replay the sampler's score evaluations from CUDA graphs
  r.deterministic = False         # torch.use_deterministic_algorithms (slower on GPU)
  return r


def get_default_config():
  config = ml_collections.ConfigDict()
  config.training = _training()
  config.sampling = _sampling()
  config.eval = _eval()
  config.inverse = _inverse()
  config.classifier = _classifier()
  config.data = _data()
  config.model = _model()
  config.optim = _optim()
  config.runtime = _runtime()
  config.seed = 42
  config.lock()
  return config
