"""Base configuration: every key any experiment may set lives here.

Experiment files call `get_default_config()` and override values only. The returned
ConfigDict is locked, so a typo such as `config.training.bacth_size = 64` (or
`--config.training.bacth_size=64` on the command line) fails loudly instead of being
silently ignored. Names follow score_sde_pytorch's configs where they exist so that
its configs translate one-to-one.
"""
import ml_collections


def _training():
  t = ml_collections.ConfigDict()  # the SDE, the loss, steps and checkpoints
  t.sde = 'vpsde'                 # vpsde | subvpsde | vesde
  t.batch_size = 128              # global batch of a step (split over ranks and grad_accum)
  t.n_iters = 1300001             # train until this step (a resumed run continues to it)
  t.snapshot_freq = 50000         # a permanent checkpoint every k steps
  t.snapshot_freq_for_preemption = 10000  # a rolling checkpoint every k steps (for resuming)
  t.keep_checkpoints = 3          # how many rolling checkpoints to keep
  t.log_freq = 50                 # log the loss every k steps (TensorBoard and the progress line)
  t.sample_freq = 0               # write a sample grid every k steps (0: only at snapshots)
  t.snapshot_sampling = True      # write a sample grid at every permanent checkpoint
  t.continuous = True             # t in [eps, T]; False: the discrete DDPM / SMLD chain
  t.reduce_mean = False           # average the loss over the data dimensions (False: sum)
  t.likelihood_weighting = False  # weight the DSM loss by g(t)^2 (maximum likelihood training)
  t.importance_sampling = False   # with likelihood weighting: sample t ~ g^2/std^2
  t.p_uncond = 0.0                # classifier-free label dropout probability
  t.nan_policy = 'stop'           # on a non-finite loss: stop | skip the step
  t.max_nan_skips = 20            # nan_policy=skip: stop after this many non-finite losses in a row
  t.eps = 1e-5                    # smallest training time
  t.grad_accum = 1                # micro-batches per step; batch_size is the global batch
  t.loss = 'dsm'                  # dsm (weighted DSM; L_simple when discrete) | hybrid | vlb:
                                  # IDDPM's L_simple + vlb_weight L_vlb, or L_vlb with t
                                  # importance-sampled (both discrete-time VP; see score_sde.vlb)
  t.vlb_weight = 0.001            # lambda of L_hybrid (Nichol & Dhariwal 2021)
  return t


def _sampling():
  s = ml_collections.ConfigDict()  # the solver and its options
  s.method = 'pc'                 # solver name, see score_sde.sampling.SOLVERS
  s.predictor = 'reverse_diffusion'  # pc: predictor (score_sde.sampling.PREDICTORS)
  s.corrector = 'langevin'        # pc: corrector (score_sde.sampling.CORRECTORS)
  s.snr = 0.16                    # pc: signal-to-noise ratio of the Langevin corrector
  s.n_steps_each = 1              # pc: corrector steps per predictor step
  s.noise_removal = True          # end with a denoising step at t = eps (Tweedie)
  s.probability_flow = False      # pc: integrate the probability-flow ODE (no noise)
  s.steps = 0                     # solver steps (0: the solver's default, SolverSpec.default_steps)
  s.ode_method = 'dopri5'         # ode: torchdiffeq method
  s.rtol = 1e-5                   # ode / sde: relative tolerance of adaptive methods
  s.atol = 1e-5                   # ode / sde: absolute tolerance of adaptive methods
  s.eta = 0.0                     # ddim: noise scale (0: deterministic DDIM, 1: DDPM-like)
  s.order = 2                     # dpm_solver: order 1, 2 or 3
  s.grid = 'logsnr'               # dpm_solver, unipc: logsnr | time_uniform | karras | optimized
                                  # (tuned on the model's own PF-ODE; score_sde.sampling.optimized_grid)
  s.grid_pilot_batch = 64         # optimized grid: prior draws it is tuned on
  s.grid_max_knots = 16           # optimized grid: knots of its log-SNR warp (tuning cost grows with it)
  s.grid_cache_dir = ''           # optimized grid: JSON cache folder ('' = memory only)
  s.multistep = True              # dpm_solver: multistep (True) or singlestep updates
  s.unipc_variant = 'bh2'         # unipc: bh1 | bh2 (order and grid as dpm_solver)
  s.variance = 'auto'             # ddpm: auto (learned if the model has it, else small) |
                                  # small (beta tilde) | large (beta) | learned
  s.timestep_spacing = 'leading'  # ddpm, ddim: which N-table indices `steps` visit (diffusers):
                                  # leading | trailing | linspace
  s.steps_offset = 0              # ddpm, ddim: added to the leading indices (diffusers' steps_offset)
  s.set_alpha_to_one = True       # ddim: last step ends at the data (False: at table index 0, diffusers)
  s.clip_x0 = False               # ddpm, ddim, dpm_solver, unipc: clip the x0 prediction to the data range
  s.threshold = 0.0               # ddpm, ddim, dpm_solver, unipc: dynamic thresholding quantile p (0: off;
                                  # Imagen / DPM-Solver++ use 0.995), in the data range; replaces clipping
  s.threshold_max = 0.0           # ddpm, ddim, dpm_solver, unipc: cap on the threshold s (0: none)
  s.clipped_eps = True            # ddim: re-derive eps from the clipped x0 (False: diffusers' default)
  s.rho = 7.0                     # heun: Karras grid exponent
  s.s_churn = 0.0                 # heun: stochastic churn (Karras et al. 2022, Alg. 2)
  s.s_tmin = 0.0                  # heun: churn only for noise levels in [s_tmin, s_tmax]
  s.s_tmax = 1e30                 # heun: upper end of the churn range
  s.s_noise = 1.0                 # heun: noise inflation of the churn step
  s.sde_method = 'euler'          # sde: torchsde method (euler | milstein | srk)
  s.eps = 1e-3                    # smallest time the samplers integrate to
  s.batch_size = 64               # samples per batch
  s.num_samples = 64              # samples written by --mode sample
  s.guidance_scale = 1.0          # classifier-free guidance w (1: conditional, 0: uncond.)
  s.label = -1                    # -1: one grid row per class when conditional
  s.classifier_scale = 0.0        # > 0: classifier guidance with the noisy classifier
  s.classifier_checkpoint = ''    # default: newest in <workdir>/classifier/checkpoints
  s.seed = 0                      # seed of the sampling noise
  s.interpolate_images = (0, 1)   # --mode interpolate: indices of the two images (test split or inverse.source)
  s.interpolate_steps = 8         # --mode interpolate: images decoded along the latent path, ends included
  return s


def _eval():
  e = ml_collections.ConfigDict()  # --mode eval (and the batch size of --mode likelihood)
  e.batch_size = 256              # batch of sampling and of the bits/dim pass
  e.num_samples = 50000           # samples per checkpoint for FID / IS / KID (toys: sliced W2)
  e.begin_ckpt = 0                # checkpoints whose step is in [begin_ckpt, end_ckpt]
  e.end_ckpt = -1                 # -1: no end
  e.enable_sampling = True        # sample and compute FID / IS / KID (toys: sliced W2)
  e.enable_bpd = True             # test-split bits/dim through the probability-flow ODE
  e.solver = ''                   # sampler for --mode eval ('' = sampling.method)
  e.stats_path = ''               # dataset Inception stats (.npz); default <workdir>/eval/
  e.kid_subset_size = 1000        # KID: samples per subset
  e.fid_method = 'sqrtm'          # sqrtm (as pytorch-fid / TTUR) | eig
  e.bpd_dataset = 'test'          # split for bits/dim: train | test
  e.bpd_num_batches = 0           # bits/dim on this many batches (0: the whole split)
  e.bpd_divergence = 'hutchinson'  # PF-ODE divergence: hutchinson (stochastic trace) | exact
  e.bpd_amp = 'none'              # none | fp16 (autocast of the network, ~2x on tensor cores) | bf16 (biased)
  e.bpd_method = 'ode'            # ode (PF-ODE, dequantised) | vlb (DDPM bound) | both
  e.vlb_steps = 0                 # vlb: steps of the strided chain (0: all N; fewer: looser)
  e.inception_path = ''           # Inception-v3 weights file (FID / IS / KID; no download)
  e.inception_resize = 'tf1'      # Inception input: tf1 (TF-GAN / official FID: comparable with papers) | torch (pytorch-fid)
  e.is_splits = 10                # IS over this many splits (10: Salimans et al., ADM; 1: all at once, as score_sde)
  e.kid_subsets = 100             # KID over random subsets of kid_subset_size (0: TF-GAN's blocks of <= 1024, as score_sde)
  e.pr_k = 3                      # improved precision / recall: k nearest neighbours (0: skip; needs reference features)
  e.export = ''                   # also export the samples: '' | png (folder) | npz (arr_0, uint8 NHWC) | both
  return e


def _classifier():
  c = ml_collections.ConfigDict()  # --mode train_classifier (noisy classifier for guidance;
                                   # it trains with the training.* and optim.* keys)
  c.ch = 64                       # conv classifier (images): base width
  c.levels = 3                    # conv classifier (images): number of resolution levels
  c.hidden = 128                  # MLP classifier (2-D toys): hidden width
  c.depth = 3                     # MLP classifier (2-D toys): hidden layers
  c.eval_batches = 4              # accuracy per noise level (TensorBoard) on this many test batches
  return c


def _inverse():
  i = ml_collections.ConfigDict()  # --mode inpaint / colorize
  i.source = ''                   # '' = the test split; or a .npy/.npz/.png file of images
  i.num_images = 8                # how many images to inpaint / colorize
  i.mask = 'center'               # inpaint: center | left | random | a mask file (1 = known)
  i.random_fraction = 0.5         # mask 'random': fraction of known pixels
  i.method = ''                   # '' = 'project' for pc (the paper's), 'score' for other solvers
  return i


def _data():
  d = ml_collections.ConfigDict()  # dataset, image shape and scaling
  d.dataset = 'digits'            # see score_sde.data.datasets.DATASETS
  d.root = ''                     # dataset folder (not needed for digits and 2-D toys)
  d.image_size = 16               # height = width of the images
  d.num_channels = 1              # image channels (2-D toys: 2 coordinates)
  d.random_flip = False           # random horizontal flips of training images
  d.centered = True               # True: data in [-1, 1]; False: [0, 1]
  d.uniform_dequantization = False  # add uniform noise of one intensity level to training images
  d.num_classes = 10              # number of class labels (class-conditional models, classifiers)
  d.num_workers = 0               # DataLoader worker processes (0: in the main process)
  d.toy_size = 20000              # number of points drawn for 2-D toy data
  return d


def _model():
  m = ml_collections.ConfigDict()  # network, its SDE constants and its EMA
  m.name = 'unet'                 # see score_sde.models.NETWORKS
  m.parameterization = 'auto'     # auto | eps | score | x0
  m.time_label = 'auto'           # auto | t999 | sigma | index | t
  m.conditional = True            # time conditioning (NCSN++ naming)
  m.class_conditional = False     # take a class label y
  m.sigma_min = 0.01              # VE SDE: smallest noise level
  m.sigma_max = 50.               # VE SDE: largest noise level
  m.num_scales = 1000             # N, steps of the discrete chain / discretisation of the SDE
  m.beta_min = 0.1                # VP / sub-VP SDE: beta(0)
  m.beta_max = 20.                # VP / sub-VP SDE: beta(1)
  m.schedule = 'linear'           # VP only: linear | cosine
  m.learn_sigma = False           # also output IDDPM's learned variance (mlp, unet, ddpm, ncsnpp)
  m.ema_rate = 0.9999             # decay of the EMA of the weights (used to sample)
  m.dropout = 0.1                 # dropout probability
  m.nf = 128                      # base number of channels
  m.ch_mult = (1, 2, 2, 2)        # channel multiplier of each resolution level
  m.num_res_blocks = 4            # residual blocks per resolution level
  m.attn_resolutions = (16,)      # resolutions with self-attention
  m.attn_every_up_block = False   # ddpm: attention after every up-path res block at attn_resolutions
                                  # (Ho et al., diffusers); False: one per level (score_sde_pytorch)
  m.resamp_with_conv = True       # convolutions in up- and downsampling
  m.normalization = 'GroupNorm'   # normalisation layer (NCSN++: GroupNorm)
  m.nonlinearity = 'swish'        # activation: swish | relu | lrelu | elu
  m.scale_by_sigma = False        # divide the output by sigma(t) (NCSN++ on VE)
  m.embedding_type = 'positional'  # time embedding: positional | fourier (NCSN++)
  m.fourier_scale = 16.           # scale of the Gaussian Fourier time features
  m.init_scale = 0.               # initial scale of the residual branches (NCSN++; 0: near zero)
  m.fir = False                   # FIR-filtered up- and downsampling (NCSN++)
  m.fir_kernel = (1, 3, 3, 1)     # the FIR kernel
  m.skip_rescale = True           # scale skip connections by 1/sqrt(2) (NCSN++)
  m.resblock_type = 'biggan'      # residual block: ddpm | biggan (NCSN++)
  m.progressive = 'none'          # output pyramid: none | output_skip | residual (NCSN++)
  m.progressive_input = 'none'    # input pyramid: none | input_skip | residual (NCSN++)
  m.progressive_combine = 'sum'   # how the pyramid joins: sum | cat (NCSN++)
  m.attention_type = 'ddpm'       # attention block (only ddpm, as score_sde_pytorch)
  m.conv_size = 3                 # convolution size (only 3; as score_sde_pytorch's configs)
  m.hidden = 256                  # MLP: hidden width
  m.depth = 3                     # MLP: hidden layers
  return m


def _optim():
  o = ml_collections.ConfigDict()  # optimiser and learning-rate schedule
  o.optimizer = 'Adam'            # Adam | AdamW
  o.lr = 2e-4                     # learning rate after warm-up
  o.beta1 = 0.9                   # Adam's beta1
  o.eps = 1e-8                    # Adam's epsilon
  o.weight_decay = 0.             # weight decay
  o.warmup = 5000                 # steps of linear learning-rate warm-up (0: none)
  o.grad_clip = 1.                # clip the gradient norm to this (< 0: no clipping)
  o.fused = True                  # fused Adam on CUDA
  return o


def _runtime():
  r = ml_collections.ConfigDict()  # device and speed settings
  r.device = 'auto'               # auto | cpu | cuda
  r.amp = 'none'                  # none | bf16
  r.channels_last = False         # channels-last layout of images (faster on GPUs)
  r.compile = False               # torch.compile the network (training and sampling)
  r.cuda_graphs = False           # replay the sampler's score evaluations from CUDA graphs
  r.deterministic = False         # torch.use_deterministic_algorithms (slower on GPU)
  r.num_threads = 0               # CPU threads of torch's kernels (0: auto, 1 unless OMP_NUM_THREADS says)
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
  config.seed = 42                # seed of the initial weights, data order, training noise
  config.lock()
  return config
