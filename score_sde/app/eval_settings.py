"""The settings an evaluation's shards are made with, read off the config: the sections of an
evaluation folder's manifest (`score_sde.evaluation.manifest`), one per kind of shard. A
section that differs from a folder's recorded one makes that kind's shards stale."""
from __future__ import annotations

import os

from score_sde.app.build import solver_kwargs
from score_sde.evaluation.manifest import checkpoint_sha256, plain
from score_sde.files.workdir import latest_checkpoint


def classifier_sha256(config, workdir: str) -> str | None:
  """SHA-256 of the guidance classifier's checkpoint (as `load_guidance_classifier` finds it),
  or None without classifier guidance."""
  if config.sampling.classifier_scale <= 0:
    return None
  path = config.sampling.classifier_checkpoint
  if not path:
    found = latest_checkpoint(workdir, 'classifier')
    path = found[1] if found else ''
  return checkpoint_sha256(path) if path and os.path.isfile(path) else None


def _model_settings(config) -> dict:
  m, t = config.model, config.training
  return {'sde': t.sde, 'continuous': t.continuous, 'num_scales': m.num_scales,
          'beta_min': m.beta_min, 'beta_max': m.beta_max, 'sigma_min': m.sigma_min,
          'sigma_max': m.sigma_max, 'schedule': m.schedule, 'parameterization': m.parameterization,
          'time_label': m.time_label}


def _data_settings(config, flat: bool) -> dict:
  d = config.data
  out = {'dataset': d.dataset, 'image_size': d.image_size, 'num_channels': d.num_channels,
         'centered': d.centered}
  if flat:
    out['toy_size'] = d.toy_size
  return out


def sample_settings(config, solver: str, sha256: str, classifier_sha256: str | None,
                    flat: bool) -> dict:
  """Everything that shapes the sample shards of `solver` for this checkpoint."""
  s = config.sampling
  options = solver_kwargs(config, solver)
  out = {'checkpoint_sha256': sha256, 'solver': solver, 'options': options, 'steps': s.steps,
         'eps': s.eps, 'noise_removal': s.noise_removal, 'seed': s.seed,
         'batch_size': s.batch_size, 'amp': config.runtime.amp,
         'model': _model_settings(config), 'data': _data_settings(config, flat)}
  if options.get('grid') == 'optimized':
    out['grid_tuning'] = {'pilot_batch': s.grid_pilot_batch, 'max_knots': s.grid_max_knots}
  if config.model.class_conditional or s.classifier_scale > 0:
    out['guidance'] = {'class_conditional': config.model.class_conditional, 'label': s.label,
                       'num_classes': config.data.num_classes, 'guidance_scale': s.guidance_scale,
                       'classifier_scale': s.classifier_scale,
                       'classifier_sha256': classifier_sha256}
    if s.label < 0:  # one row per class: shard i's labels depend on the total
      out['guidance']['num_samples'] = config.eval.num_samples
  return plain(out)


def likelihood_settings(config, method: str, sha256: str, flat: bool) -> dict:
  """Everything that shapes the per-example values of `method` ('ode' or 'vlb') per batch."""
  e = config.eval
  out = {'checkpoint_sha256': sha256, 'method': method, 'split': e.bpd_dataset,
         'batch_size': e.batch_size, 'seed': config.seed, 'data_root': config.data.root,
         'model': _model_settings(config), 'data': _data_settings(config, flat)}
  if method == 'ode':
    out.update(divergence=e.bpd_divergence, rtol=config.sampling.rtol, atol=config.sampling.atol,
               amp=e.bpd_amp)
  else:
    out['vlb_steps'] = e.vlb_steps
  return plain(out)
