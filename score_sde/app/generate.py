"""Sampling orchestration shared by the command-line modes: the score a sampler sees (class
labels, classifier-free and classifier guidance, compiled or CUDA-graphed), optimized grids and
batched generation. Models and classifiers come from `score_sde.app.loading`, solver options
from `score_sde.app.build.solver_kwargs`; the maths is in score_sde.sampling / maths.guidance."""
from __future__ import annotations

import torch

from score_sde.app.build import data_shape, solver_kwargs
from score_sde.data import datasets
from score_sde.errors import ConfigError, UserError
from score_sde.files import checkpoint as ckpt
from score_sde.maths.guidance import bind, classifier_free, classifier_guidance
from score_sde.runtime.device import autocast
from score_sde.sampling import SOLVERS, resolve_times, sample as run_sampler
from score_sde.sampling.graphed import GraphedScore
from score_sde.sampling.optimized_grid import GridTuning, model_fingerprint
from score_sde.training.classifier import classifier_log_prob_fn


def optimized_times(config, model, solver: str, kwargs: dict, classifier, device) -> list[float]:
  """The optimized grid (`sampling.grid = 'optimized'`) of `solver` for this model and guidance,
  tuned on `sampling.grid_pilot_batch` prior draws (labels as `class_labels_for`) and cached per model
  fingerprint in memory and in `sampling.grid_cache_dir` (if set)."""
  s = config.sampling
  pilot = s.grid_pilot_batch
  if class_labels_for(config, 1, device) is None:
    score = model
  else:  # the tuner and its guard draw batches of several sizes: labels for each (as class_labels_for)
    score = lambda x, t: guided_score_fn(config, model, class_labels_for(config, x.shape[0], x.device),
                                         classifier)(x, t)
  modules = [model] + ([classifier] if classifier is not None else [])
  key = model_fingerprint(*modules, extra=f'w={s.guidance_scale},c={s.classifier_scale},y={s.label}')
  tuning = GridTuning(key=key, cache_dir=s.grid_cache_dir or None, pilot_batch=pilot,
                      max_knots=s.grid_max_knots)
  with autocast(config.runtime.amp, device):
    return resolve_times(model.sde, score, solver, data_shape(config), steps=s.steps or None, eps=s.eps,
                         tuning=tuning, device=device, **kwargs)


def class_labels_for(config, num_samples: int, device):
  """Class labels `[num_samples]` for conditional sampling or classifier guidance:
  config.sampling.label (a class in [0, num_classes)), or one grid row per class (label -1).
  Any other label (num_classes is the classifier-free "no label" index) is a ConfigError."""
  if not config.model.class_conditional and config.sampling.classifier_scale <= 0:
    return None
  n_cls, label = config.data.num_classes, config.sampling.label
  if isinstance(label, bool) or not isinstance(label, int) or not -1 <= label < n_cls:
    raise ConfigError(f'config.sampling.label = {label!r}: must be -1 (one grid row per class) or a '
                      f'class in [0, {n_cls - 1}] (data.num_classes = {n_cls})')
  if label >= 0:
    return torch.full((num_samples,), config.sampling.label, device=device, dtype=torch.long)
  return (torch.arange(num_samples, device=device) * n_cls // num_samples).long()


def guided_score_fn(config, model, y, classifier=None):
  """The score the sampler sees: the model, with its label bound, CFG applied (conditional
  models) and the noisy classifier's guidance added (`classifier`)."""
  if y is None:
    return model
  score = model
  if config.model.class_conditional:
    score = bind(classifier_free(model, config.sampling.guidance_scale,
                                 null_label=config.data.num_classes), y)
  if classifier is None:
    return score
  guided = classifier_guidance(score, classifier_log_prob_fn(classifier), config.sampling.classifier_scale)
  return bind(guided, y)


def generate(config, model, num_samples: int, solver: str | None = None, progress=None,
             classifier=None, seed: int | None = None, class_labels=None, check_finite: bool = True,
             temperature: float = 1.0):
  """Samples `[n, ...]` in data space ([0, 1] for images) and the total NFE, in batches
  (noise from `seed`, default sampling.seed; class labels `class_labels`, default `class_labels_for`).
  A batch with a non-finite value is a one-line UserError naming the likely cause (NaN
  weights, or a diverged solver) unless `check_finite` is False (one host sync per batch).
  `temperature` scales the prior draws x_T (Song et al. 2021, Sec. 4.3; 1: the model's prior)."""
  solver = (solver or config.sampling.method).lower()
  if solver not in SOLVERS:
    raise UserError(f"unknown solver '{solver}'; choose one of: {', '.join(SOLVERS)}")
  s = config.sampling
  shape = data_shape(config)
  device = next(model.parameters()).device
  inverse = datasets.get_data_inverse_scaler(config.data)
  gen = torch.Generator(device=device).manual_seed(s.seed if seed is None else seed)
  labels = class_labels_for(config, num_samples, device) if class_labels is None else class_labels
  out, nfe = [], 0
  net = compiled(config, model)
  scorer = lambda y: _graphed(config, guided_score_fn(config, net, y, classifier), classifier)
  unlabelled = scorer(None) if labels is None else None  # one score (and its CUDA graphs) for all batches
  try:
    kwargs = solver_kwargs(config, solver)
    if kwargs.get('grid') == 'optimized':
      kwargs = {**kwargs, 'grid': 'logsnr',
                'ts': optimized_times(config, model, solver, kwargs, classifier, device)}
    for start in range(0, num_samples, s.batch_size):
      b = min(s.batch_size, num_samples - start)
      y = None if labels is None else labels[start:start + b]
      score = unlabelled if y is None else scorer(y)
      x_init = None if temperature == 1 else temperature * model.sde.prior_sampling((b,) + shape, gen, device)
      with autocast(config.runtime.amp, device):
        res = run_sampler(model.sde, score, (b,) + shape, solver, x_init=x_init,
                          steps=s.steps or None, generator=gen, device=device, eps=s.eps,
                          denoise=s.noise_removal, progress=progress, **kwargs)
      if check_finite and not bool(torch.isfinite(res.x).all()):
        raise UserError(non_finite_cause(model, classifier, f'batch {start // s.batch_size + 1}'))
      out.append(inverse(res.x.float()).cpu())
      nfe += res.nfe
  except ValueError as e:
    raise UserError(str(e)) from None
  return torch.cat(out), nfe


def non_finite_cause(model, classifier=None, where: str = 'the results') -> str:
  """The message for samples (`where`) with NaN / inf values: which network's weights are not
  finite, else a diverged solver."""
  for name, net in (('score model', model), ('guidance classifier', classifier)):
    if net is not None and ckpt.first_non_finite(net.state_dict()) is not None:
      return (f'sampling gave NaN / inf values ({where}): the {name} has non-finite weights '
              '(a diverged or damaged checkpoint); use an earlier checkpoint')
  return (f'sampling gave NaN / inf values ({where}) although the weights are finite: the '
          'solver diverged; try more sampling.steps, another solver or a smaller guidance scale')


def compiled(config, model):
  """`torch.compile(model)` when config.runtime.compile (made once per model), else the model.
  The compiled module is called like the model and forwards its attributes. It is kept in the
  model's `__dict__` (not a submodule, so state dicts are unchanged): a weak-keyed table would
  never drop it, since the compiled module refers to the model."""
  if not config.runtime.compile:
    return model
  if '_compiled_for_sampling' not in model.__dict__:
    model.__dict__['_compiled_for_sampling'] = torch.compile(model)
  return model.__dict__['_compiled_for_sampling']


def _graphed(config, score_fn, classifier=None):
  """`score_fn` replayed from CUDA graphs when config.runtime.cuda_graphs (score_sde.sampling.graphed);
  classifier guidance, which differentiates the classifier, stays eager."""
  return GraphedScore(score_fn) if config.runtime.cuda_graphs and classifier is None else score_fn


def grid_row(config, n: int) -> int | None:
  guided = config.model.class_conditional or config.sampling.classifier_scale > 0
  if guided and config.sampling.label < 0:
    return max(1, n // config.data.num_classes)
  return None
