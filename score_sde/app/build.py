"""The build layer: the config turned into the library's objects (the SDE, the network and its
`ScoreModel`, the loss, the optimizer, the classifier, a solver's options), so that no module
below the application layer takes a whole config."""
from __future__ import annotations

from score_sde.data import datasets
from score_sde.errors import ConfigError
from score_sde.maths.sdes import SDE, SDES, VESDE
from score_sde.models import ScoreModel, network_spec, resolve_conventions
from score_sde.models.classifier import MLPClassifier, NoisyClassifier
from score_sde.sampling import solver_spec
from score_sde.training.losses import get_loss_fn
from score_sde.training.optim import OPTIMIZERS
from score_sde.training.vlb_loss import get_vlb_loss_fn


def build_sde(config) -> SDE:
  """The SDE named by `config.training.sde`, from `config.model`'s schedule keys."""
  name = config.training.sde.lower()
  m = config.model
  if name == 'vesde':
    return VESDE(m.sigma_min, m.sigma_max, m.num_scales)
  if name in SDES:
    return SDES[name](m.beta_min, m.beta_max, m.num_scales, m.schedule)
  raise ValueError(f"unknown SDE '{config.training.sde}'; choose one of: {', '.join(SDES)}")


def data_shape(config) -> tuple[int, ...]:
  """Shape of one data item for `config`: `(C,)` for flat networks, else `(C, H, W)`."""
  d = config.data
  return (d.num_channels,) if is_vector_data(config) else (d.num_channels, d.image_size, d.image_size)


def is_vector_data(config) -> bool:
  """Whether `config`'s data are vectors `[B, C]` (toy points, flat networks) rather than
  images `[B, C, H, W]`: the one answer every mode and metric uses."""
  return network_spec(config.model.name).flat


def create_network(config):
  """The raw network named by `config.model.name`, built from `config.model` and `config.data`."""
  m = config.model
  if m.name.lower() == 'ncsnpp' and m.embedding_type.lower() == 'fourier' and not config.training.continuous:
    raise ValueError('Fourier features are only used for continuous training.')
  return network_spec(m.name).build(m, config.data)


def create_model(config, sde: SDE) -> ScoreModel:
  """The network for `config` wrapped with the SDE's conventions into a `ScoreModel`."""
  spec, m = network_spec(config.model.name), config.model
  param, label = resolve_conventions(m.parameterization, m.time_label, config.training.continuous,
                                     sde, (spec.parameterization, spec.time_label))
  return ScoreModel(create_network(config), sde, param, label, learn_sigma=m.learn_sigma)


def build_optimizer(config, params):
  """The optimizer named by `config.optim.optimizer` (fused kernels on CUDA if asked)."""
  o = config.optim
  name = o.optimizer.lower()
  if name not in OPTIMIZERS:
    raise ValueError(f"unknown optimizer '{o.optimizer}'; choose one of: {', '.join(OPTIMIZERS)}")
  params = list(params)
  fused = bool(o.fused) and all(p.is_cuda for p in params)
  return OPTIMIZERS[name](params, lr=o.lr, betas=(o.beta1, 0.999), eps=o.eps,
                          weight_decay=o.weight_decay, fused=fused or None)


def build_loss(config, sde: SDE):
  """The training loss of `config.training`: weighted denoising score matching (`losses`), or
  IDDPM's hybrid / VLB objectives (`vlb_loss`) for training.loss 'hybrid' / 'vlb'."""
  tr = config.training
  if tr.loss != 'dsm':
    return get_vlb_loss_fn(sde, tr.loss, learn_sigma=config.model.learn_sigma,
                           vlb_weight=tr.vlb_weight, reduce_mean=tr.reduce_mean,
                           data_range=datasets.data_range(config.data))
  return get_loss_fn(sde, continuous=tr.continuous,
                     weighting='likelihood' if tr.likelihood_weighting else 'score',
                     importance_sampling=tr.importance_sampling, reduce_mean=tr.reduce_mean,
                     eps=tr.eps)


def build_classifier(config, flat: bool):
  """The noisy classifier for `config.data` (`score_sde.models.classifier`): an MLP for flat
  (toy) data, else the conv encoder; sizes from `config.classifier`."""
  c, d = config.classifier, config.data
  if flat:
    return MLPClassifier(d.num_channels, d.num_classes, hidden=c.hidden, depth=c.depth)
  return NoisyClassifier(d.num_channels, d.num_classes, ch=c.ch, levels=c.levels)


def config_key(solver: str, option: str) -> str:
  """The config.sampling key of a solver option: the option's name, except pc's n_steps
  (config.sampling.n_steps_each), unipc's variant (config.sampling.unipc_variant) and the
  methods of ode and sde (config.sampling.ode_method, config.sampling.sde_method)."""
  renamed = {('pc', 'n_steps'): 'n_steps_each', ('unipc', 'variant'): 'unipc_variant',
             ('ode', 'method'): 'ode_method', ('sde', 'method'): 'sde_method'}
  return renamed.get((solver, option), option)


def solver_kwargs(config, solver: str) -> dict:
  """The options of `solver` (its `SolverSpec.options`) read from config.sampling (keys as
  `config_key`); an option without a key (sde's adaptive, say) keeps the solver's default.
  Options of other solvers are not read. x0 clipping / thresholding (sampling.clip_x0,
  sampling.threshold) act in the image data range (`datasets.data_range`): clip_x0 is passed as
  (-1, 1) for centered data, else (0, 1), when either is on; toy points have no range (a
  ConfigError)."""
  s = config.sampling
  keys = {name: config_key(solver, name) for name in solver_spec(solver).option_names}
  kwargs = {name: s[key] for name, key in keys.items() if key in s}
  if 'clip_x0' in kwargs and (kwargs['clip_x0'] or kwargs.get('threshold', 0) > 0):
    if is_vector_data(config):
      raise ConfigError('config.sampling.clip_x0 / threshold: vector (toy) data have no data range to '
                        'clip to; turn them off (in Python, pass clip_x0=(lo, hi) to sample())')
    kwargs['clip_x0'] = datasets.data_range(config.data)
  return kwargs
