"""Validation of every config value, when the config is loaded: a value out of range or an
unknown choice is a one-line `ConfigError` naming the key and what it allows, instead of a
traceback (or silent garbage, such as a negative batch size) deep inside a run."""
from __future__ import annotations

import difflib
import math

from score_sde.errors import ConfigError


def _num(lo=None, hi=None, *, integer=False, lo_open=False, hi_open=False):
  """A check for a number in [lo, hi] (open ends as asked); returns (check, description)."""
  def check(v):
    if isinstance(v, bool) or not isinstance(v, (int, float)) or (integer and not isinstance(v, int)):
      return False
    if not math.isfinite(v):
      return False
    if lo is not None and (v <= lo if lo_open else v < lo):
      return False
    return not (hi is not None and (v >= hi if hi_open else v > hi))
  kind = 'an integer' if integer else 'a number'
  lo_s = '' if lo is None else f"{'>' if lo_open else '>='} {lo}"
  hi_s = '' if hi is None else f"{'<' if hi_open else '<='} {hi}"
  return check, f"{kind} {' and '.join(s for s in (lo_s, hi_s) if s)}".strip()


def _choice(options):
  opts = tuple(options)
  return (lambda v: isinstance(v, str) and v.lower() in opts), 'one of: ' + ', '.join(opts)


POSITIVE_INT = _num(1, integer=True)
NON_NEGATIVE_INT = _num(0, integer=True)
PROBABILITY = _num(0.0, 1.0)
BOOL = ((lambda v: isinstance(v, bool)), 'True or False')
SEED = (_num(0, 2**63 - 1, integer=True)[0], 'an integer in [0, 2**63 - 1]')  # within torch.manual_seed's
GRAD_CLIP = ((lambda v: _num()[0](v) and v != 0),
             'a finite number: > 0 clips the gradient norm there, negative (e.g. -1) turns clipping off')
NOT_NAN_NON_NEGATIVE = ((lambda v: _num(0.0)[0](v) or v == float('inf')), 'a number >= 0 (inf allowed)')
INF_ALLOWED = ('sampling.s_tmax',)  # keys where an infinite float means "no bound"


def rules() -> dict:
  """`{'section.key': (check, description)}` for every validated key."""
  from score_sde.app.eval_modes import BPD_METHODS
  from score_sde.data.datasets import DATASETS, SPLITS
  from score_sde.evaluation.export import EXPORTS
  from score_sde.evaluation.inception import RESIZE_MODES
  from score_sde.evaluation.metrics import FID_METHODS
  from score_sde.maths.conventions import PARAMETERIZATIONS, TIME_LABELS
  from score_sde.maths.likelihood import AMP_DTYPES, DIVERGENCES
  from score_sde.maths.sdes import SCHEDULES, SDES
  from score_sde.models import NETWORKS
  from score_sde.runtime.device import AMP_MODES
  from score_sde.sampling import SOLVERS
  from score_sde.sampling.inverse import METHODS as INVERSE_METHODS
  from score_sde.training.optim import OPTIMIZERS
  from score_sde.training.task import NAN_POLICIES
  from score_sde.training.vlb_loss import VLB_LOSSES
  return {
      'training.sde': _choice(SDES), 'training.batch_size': POSITIVE_INT,
      'training.n_iters': NON_NEGATIVE_INT, 'training.snapshot_freq': POSITIVE_INT,
      'training.snapshot_freq_for_preemption': POSITIVE_INT, 'training.keep_checkpoints': POSITIVE_INT,
      'training.log_freq': POSITIVE_INT,
      'training.sample_freq': NON_NEGATIVE_INT, 'training.nan_policy': _choice(NAN_POLICIES),
      'training.max_nan_skips': POSITIVE_INT, 'training.grad_accum': POSITIVE_INT, 'training.p_uncond': PROBABILITY,
      'training.eps': _num(0.0, 1.0, lo_open=True, hi_open=True),
      'training.loss': _choice(('dsm',) + VLB_LOSSES), 'training.vlb_weight': _num(0.0),
      'eval.bpd_method': _choice(BPD_METHODS), 'eval.vlb_steps': NON_NEGATIVE_INT,
      'sampling.method': _choice(SOLVERS), **_solver_choices(), 'sampling.snr': _num(0.0),
      'sampling.n_steps_each': NON_NEGATIVE_INT, 'sampling.steps': NON_NEGATIVE_INT,
      'sampling.rtol': _num(0.0, lo_open=True), 'sampling.atol': _num(0.0, lo_open=True),
      'sampling.eta': _num(0.0),
      'sampling.eps': _num(0.0, 1.0, lo_open=True, hi_open=True),
      'sampling.batch_size': POSITIVE_INT, 'sampling.num_samples': POSITIVE_INT,
      'sampling.guidance_scale': _num(), 'sampling.seed': SEED,
      'sampling.grid_pilot_batch': POSITIVE_INT, 'sampling.grid_max_knots': _num(2, integer=True),
      'sampling.grid_cache_dir': ((lambda v: isinstance(v, str)), 'a folder path (a string)'),
      'sampling.rho': _num(0.0, lo_open=True),
      'sampling.s_churn': _num(0.0), 'sampling.s_noise': _num(0.0),
      'sampling.steps_offset': NON_NEGATIVE_INT, 'sampling.set_alpha_to_one': BOOL, 'sampling.clip_x0': BOOL,
      'sampling.clipped_eps': BOOL,
      'sampling.threshold': _num(0.0, 1.0),
      'sampling.threshold_max': ((lambda v: _num()[0](v) and (v == 0 or v >= 1)), 'a number >= 1, or 0 (no cap)'),
      'model.attention_type': _choice(('ddpm',)), 'model.conv_size': _choice_int((3,)),
      'eval.batch_size': POSITIVE_INT, 'eval.bpd_dataset': _choice(SPLITS),
      'eval.bpd_num_batches': NON_NEGATIVE_INT, 'eval.num_samples': POSITIVE_INT,
      'eval.begin_ckpt': NON_NEGATIVE_INT, 'eval.end_ckpt': _num(-1, integer=True),
      'eval.kid_subset_size': _num(2, integer=True), 'eval.fid_method': _choice(FID_METHODS),
      'eval.bpd_divergence': _choice(DIVERGENCES), 'eval.bpd_amp': _choice(AMP_DTYPES),
      'eval.inception_resize': _choice(RESIZE_MODES), 'eval.is_splits': POSITIVE_INT,
      'eval.kid_subsets': NON_NEGATIVE_INT, 'eval.pr_k': NON_NEGATIVE_INT,
      'eval.export': _choice(EXPORTS),
      'data.dataset': _choice(DATASETS), 'data.image_size': POSITIVE_INT,
      'data.num_channels': POSITIVE_INT, 'data.num_classes': POSITIVE_INT,
      'data.num_workers': NON_NEGATIVE_INT, 'data.toy_size': POSITIVE_INT,
      'model.name': _choice(NETWORKS), 'model.parameterization': _choice(('auto',) + PARAMETERIZATIONS),
      'model.time_label': _choice(('auto',) + TIME_LABELS), 'model.schedule': _choice(SCHEDULES),
      'model.num_scales': _num(2, integer=True), 'model.beta_min': _num(0.0, lo_open=True),
      'model.beta_max': _num(0.0, lo_open=True), 'model.sigma_min': _num(0.0, lo_open=True),
      'model.sigma_max': _num(0.0, lo_open=True), 'model.ema_rate': PROBABILITY,
      'model.dropout': _num(0.0, 1.0, hi_open=True), 'model.nf': POSITIVE_INT,
      'optim.optimizer': _choice(OPTIMIZERS), 'optim.lr': _num(0.0, 1.0, lo_open=True),
      'optim.beta1': _num(0.0, 1.0, hi_open=True), 'optim.eps': _num(0.0, lo_open=True),
      'optim.weight_decay': _num(0.0), 'optim.warmup': NON_NEGATIVE_INT,
      'runtime.amp': _choice(AMP_MODES),
      'classifier.ch': POSITIVE_INT, 'classifier.levels': POSITIVE_INT,
      'classifier.hidden': POSITIVE_INT, 'classifier.depth': POSITIVE_INT,
      'classifier.eval_batches': POSITIVE_INT, 'sampling.classifier_scale': _num(0.0),
      'inverse.num_images': POSITIVE_INT, 'inverse.random_fraction': PROBABILITY,
      'inverse.method': _choice(('',) + INVERSE_METHODS),
      'seed': SEED, 'optim.grad_clip': GRAD_CLIP, 'sampling.label': _num(-1, integer=True),
      'sampling.s_tmin': _num(0.0), 'sampling.s_tmax': NOT_NAN_NON_NEGATIVE,
      'model.fourier_scale': _num(0.0, lo_open=True), 'model.init_scale': _num(0.0),
      'model.hidden': POSITIVE_INT, 'model.depth': NON_NEGATIVE_INT,
      'model.num_res_blocks': NON_NEGATIVE_INT,
      'sampling.interpolate_steps': _num(2, integer=True), 'runtime.num_threads': NON_NEGATIVE_INT,
      'sampling.interpolate_images': ((lambda v: isinstance(v, (tuple, list)) and len(v) == 2 and all(
          isinstance(i, int) and not isinstance(i, bool) and i >= 0 for i in v)),
          'two image indices >= 0, e.g. (0, 1)'),
  }


def _solver_choices() -> dict:
  """`{'sampling.<key>': rule}` of every solver option with a choice of values, from the
  solvers' `SolverSpec.choices` (keys as `build.config_key`; options shared by several
  solvers, such as order, allow the values of all)."""
  from score_sde.app.build import config_key
  from score_sde.sampling.spec import REGISTRY
  allowed = {}
  for spec in REGISTRY.values():
    for option, values in spec.choices.items():
      key = f'sampling.{config_key(spec.name, option)}'
      allowed[key] = tuple(dict.fromkeys(allowed.get(key, ()) + tuple(values)))
  return {key: _choice_int(v) if all(isinstance(x, int) for x in v) else _choice(v)
          for key, v in allowed.items()}


def _choice_int(options):
  return (lambda v: v in options and not isinstance(v, bool)), 'one of: ' + ', '.join(map(str, options))


def _get(config, dotted: str):
  node = config
  for part in dotted.split('.'):
    node = node[part]
  return node


def validate(config) -> None:
  """Raise a one-line ConfigError for the first bad value of `config`."""
  for key, (check, allowed) in rules().items():
    try:
      value = _get(config, key)
    except (KeyError, AttributeError):
      continue  # an older config without this key: its default applies
    if not check(value):
      raise ConfigError(f'config.{key} = {value!r}: must be {allowed}')
  _check_finite(config)
  _check_relations(config)


def _check_finite(config) -> None:
  """Every float of the config (in tuples too) is finite, including keys without a rule above:
  a NaN would pass any range check (comparisons with NaN are False)."""
  for key in _flatten(config):
    value = _get(config, key)
    for v in value if isinstance(value, (tuple, list)) else (value,):
      if isinstance(v, float) and not math.isfinite(v) and not (key in INF_ALLOWED and not math.isnan(v)):
        raise ConfigError(f'config.{key} = {value!r}: must be finite')


def _check_relations(config) -> None:
  m, d = config.model, config.data
  if m.beta_max < m.beta_min:
    raise ConfigError(f'config.model.beta_max = {m.beta_max} must be >= model.beta_min = {m.beta_min}')
  if m.sigma_max <= m.sigma_min:
    raise ConfigError(f'config.model.sigma_max = {m.sigma_max} must be > model.sigma_min = {m.sigma_min}')
  label = config.sampling.label
  if label >= d.num_classes:
    raise ConfigError(f'config.sampling.label = {label}: must be -1 (one grid row per class) or a class '
                      f'in [0, {d.num_classes - 1}] (data.num_classes = {d.num_classes})')
  from score_sde.models import network_spec
  if not network_spec(config.model.name).flat:
    levels = len(tuple(m.ch_mult))
    factor = 2 ** (levels - 1)
    if d.image_size % factor or d.image_size < factor:
      raise ConfigError(f'config.data.image_size = {d.image_size} must be a multiple of {factor} '
                        f'(model.ch_mult has {levels} resolution levels, each halving the size)')
  if not isinstance(m.get('attn_every_up_block', False), bool):
    raise ConfigError(f'config.model.attn_every_up_block = {m.attn_every_up_block!r}: must be True or False')
  if m.get('attn_every_up_block', False) and m.name.lower() != 'ddpm':
    raise ConfigError(f"config.model.attn_every_up_block is an option of the ddpm network, not '{m.name}'; "
                      'unset it')
  _check_variational(config)
  device = config.runtime.device
  if not (device in ('auto', 'cpu', 'cuda') or (device.startswith('cuda:') and device[5:].isdigit())):
    raise ConfigError(f"config.runtime.device = {device!r}: must be auto, cpu, cuda or cuda:N")


def _check_variational(config) -> None:
  """Learned variances, the hybrid / VLB losses and the VLB bits/dim need a discrete chain."""
  from score_sde.maths.sdes import SDES
  from score_sde.models import network_spec
  m, tr = config.model, config.training
  chained = SDES[tr.sde.lower()]().chain is not None  # whether this kind of SDE has a chain
  if m.learn_sigma:
    if not network_spec(config.model.name).learn_sigma:
      raise ConfigError(f"config.model.learn_sigma: network '{m.name}' cannot learn variances "
                        '(mlp, unet, ddpm and ncsnpp can)')
    if m.scale_by_sigma:
      raise ConfigError('config.model.learn_sigma cannot be combined with model.scale_by_sigma')
  if tr.loss != 'dsm':
    if tr.continuous or not chained:
      raise ConfigError(f"config.training.loss = '{tr.loss}' trains on the discrete chain: set "
                        'training.continuous=False with training.sde vpsde (DDPM) or vesde')
    if tr.likelihood_weighting or tr.importance_sampling:
      raise ConfigError(f"config.training.loss = '{tr.loss}' has its own weighting; unset "
                        'training.likelihood_weighting / importance_sampling')
    if tr.loss == 'hybrid' and not m.learn_sigma:
      raise ConfigError("config.training.loss = 'hybrid' trains the learned variance: set model.learn_sigma=True")
  if config.eval.bpd_method != 'ode' and not chained:
    raise ConfigError(f"config.eval.bpd_method = '{config.eval.bpd_method}': the variational bound "
                      f'needs a discrete chain and {tr.sde} has none (use ode)')


def check_override_keys(argv, default_config) -> None:
  """Raise a one-line ConfigError for a `--config.a.b=v` flag whose key the config lacks,
  with the closest known keys as suggestions."""
  known = sorted(_flatten(default_config))
  for arg in argv:
    if not arg.startswith('--config.'):
      continue
    key = arg[len('--config.'):].split('=', 1)[0]
    if key not in known and not any(k.startswith(key + '.') for k in known):
      section, _, leaf = key.rpartition('.')
      siblings = {k.rpartition('.')[2]: k for k in known if k.rpartition('.')[0] == section}
      close = [siblings[c] for c in difflib.get_close_matches(leaf, list(siblings), n=3, cutoff=0.7)]
      close = close or difflib.get_close_matches(key, known, n=2, cutoff=0.8)
      hint = f" (did you mean {' or '.join(close)}?)" if close else ''
      raise ConfigError(f'unknown config key {key}{hint}')


def _flatten(config, prefix=''):
  for k, v in config.items():
    path = f'{prefix}{k}'
    if hasattr(v, 'items'):
      yield from _flatten(v, path + '.')
    else:
      yield path
