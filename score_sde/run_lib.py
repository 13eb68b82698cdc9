"""Training, sampling and likelihood loops. Orchestration only: the maths is in score_sde/.

Work directory layout:
  <workdir>/checkpoints/checkpoint_<step>.pth (+ .sha256)   rolling + permanent snapshots
  <workdir>/tensorboard/                                    scalars and sample grids
  <workdir>/samples/                                        PNG grids and .npz from --mode sample
  <workdir>/likelihood.json                                 from --mode likelihood
"""
from __future__ import annotations

import logging
import math
import os
import signal

import numpy as np
import torch
import tqdm

from score_sde import checkpoint as ckpt
from score_sde import config_check, datasets, visualize
from score_sde.errors import Interrupted, TrainingError, UserError  # noqa: F401 (re-exported)
from score_sde.generate import (ensure_writable, generate, grid_row, labels_for,
                                load_eval_model, load_guidance_classifier,
                                solver_kwargs, write_output)
from score_sde.models import data_shape
from score_sde.stop_signals import StopAgreement, StopSignals
from score_sde.trainer import Trainer
from score_sde.workdir import ckpt_dir


def check_config(config) -> None:
  """Validate every config value (a one-line ConfigError names the key and its range)."""
  config_check.validate(config)


def _grid_cache_in(config, workdir: str) -> None:
  """Optimized time grids are cached in <workdir>/grids unless sampling.grid_cache_dir is set."""
  if config.sampling.grid == 'optimized' and not config.sampling.grid_cache_dir:
    config.sampling.grid_cache_dir = os.path.join(workdir, 'grids')


def train(config, workdir: str, task: str = 'score') -> dict:
  """Train (resuming from the newest checkpoint) until config.training.n_iters, on one process
  or under torchrun (DDP; rank 0 logs and writes checkpoints and samples). `task` 'classifier'
  trains the noisy classifier of classifier guidance (--mode train_classifier) in
  <workdir>/classifier/, with its accuracy per noise level in TensorBoard.

  SIGTERM / SIGINT save a checkpoint at the current step and raise `Interrupted`. One training
  per workdir: it holds <workdir>/train.lock until it returns or raises (score_sde.run_lock)."""
  from score_sde import run_lock
  ensure_writable(ckpt_dir(workdir, task), 'checkpoints')
  with run_lock.hold(workdir, task):
    return _train(config, workdir, task)


def _train(config, workdir: str, task: str) -> dict:
  """`train` while holding the workdir's lock."""
  from torch.utils.tensorboard import SummaryWriter
  trainer = Trainer(config, workdir, task)
  try:
    trainer.restore()
    main = trainer.dist.is_main
    logs = os.path.join(workdir, *(['classifier'] if task == 'classifier' else []), 'tensorboard')
    writer = SummaryWriter(logs) if main else None
    metrics = _train_loop(config, trainer, writer)
    if writer is not None:
      writer.close()
  finally:
    trainer.close()
  return metrics


def _train_loop(config, trainer: Trainer, writer) -> dict:
  """Steps until n_iters or a stop signal (under torchrun, agreed by the ranks within about a
  second: StopAgreement), then a checkpoint at the step reached and `Interrupted`."""
  tr, metrics = config.training, {}
  agreed = StopAgreement(trainer.dist, trainer.device)
  with StopSignals() as stop, tqdm.tqdm(total=tr.n_iters, initial=trainer.step, desc='train',
                                        dynamic_ncols=True, disable=writer is None) as bar:
    while trainer.step < tr.n_iters and not agreed(trainer.step, stop.received is not None):
      before = trainer.step
      metrics = trainer.train_step()
      if trainer.step == before:
        continue  # a skipped non-finite step: nothing to log or save
      bar.update(1)
      _after_step(config, trainer, writer, metrics, bar)
    if trainer.step < tr.n_iters:
      path = trainer.save()
      signum = stop.received or signal.SIGTERM
      name = 'SIGINT' if signum == signal.SIGINT else 'SIGTERM'
      raise Interrupted(f'stopped by {name} at step {trainer.step}; saved {path}; run the same '
                        'command again to resume', signum)
  trainer.check_finite()
  return {k: float(v) for k, v in metrics.items()}


def _after_step(config, trainer: Trainer, writer, metrics: dict, bar) -> None:
  """Logging, checkpoints and snapshot samples after optimisation step `trainer.step`."""
  tr, step = config.training, trainer.step
  if step % tr.log_freq == 0:  # the only host sync of a training step
    trainer.check_finite()
    if writer is not None:
      for k, v in metrics.items():
        writer.add_scalar(f'train/{k}', float(v), step)
      bar.set_postfix(loss=f"{float(metrics['loss']):.4g}")
  if step % tr.snapshot_freq_for_preemption == 0 or step % tr.snapshot_freq == 0 or step == tr.n_iters:
    trainer.save()
    if trainer.task == 'classifier' and writer is not None:
      _classifier_accuracy(config, trainer, writer)
  if trainer.task == 'classifier':
    return
  sample_now = step % tr.snapshot_freq == 0 or (tr.sample_freq > 0 and step % tr.sample_freq == 0)
  if tr.snapshot_sampling and sample_now and writer is not None:
    writer.add_image('samples', _snapshot_samples(config, trainer), step, dataformats='HWC')


def _classifier_accuracy(config, trainer: Trainer, writer, bins: int = 5) -> None:
  """The classifier's test accuracy on x_t in `bins` equal ranges of t, as TensorBoard scalars
  accuracy/t_<lo>-<hi> (EMA weights, restored afterwards)."""
  from score_sde.classifier import accuracy_by_noise_level
  test = datasets.load_split(config, 'test')
  loader = datasets.InfiniteLoader(test, min(config.eval.batch_size, len(test)), seed=config.seed,
                                   shuffle=False, drop_last=False, device=trainer.device)
  scaler, gen = datasets.get_data_scaler(config), torch.Generator(device=trainer.device).manual_seed(0)
  trainer.ema.store(trainer.params)
  trainer.ema.copy_to(trainer.params)
  trainer.model.eval()
  accs = []
  for _ in range(min(config.classifier.eval_batches, loader.batches_per_epoch)):
    x, y = next(loader)
    accs.append(accuracy_by_noise_level(trainer.model, trainer.sde, scaler(x), y, bins, gen))
  trainer.model.train()
  trainer.ema.restore(trainer.params)
  edges = torch.linspace(config.training.eps, trainer.sde.T, bins + 1).tolist()
  for k, acc in enumerate(torch.stack(accs).mean(0).tolist()):
    writer.add_scalar(f'accuracy/t_{edges[k]:.2f}-{edges[k + 1]:.2f}', acc, trainer.step)


def _stem(path: str) -> str:
  """A checkpoint file's name without its extension ('final.pt' -> 'final')."""
  return os.path.splitext(os.path.basename(path))[0] or os.path.basename(path)


def _snapshot_samples(config, trainer: Trainer) -> np.ndarray:
  """Sample with the EMA weights (restored afterwards) and write samples/step_<n>.png."""
  trainer.ema.store(trainer.params)
  trainer.ema.copy_to(trainer.params)
  trainer.model.eval()
  x, _ = generate(config, trainer.model, num_samples=min(64, config.sampling.num_samples),
                  check_finite=False)   # the weights were checked when saved; a picture only
  trainer.model.train()
  trainer.ema.restore(trainer.params)
  if not torch.isfinite(x).all():
    logging.warning('step %d: the snapshot samples are not finite (the sampler diverged); '
                    'training goes on', trainer.step)
  path = os.path.join(trainer.workdir, 'samples', f'step_{trainer.step}.png')
  visualize.save_samples_png(x, path)
  return visualize.points_image(x) if x.ndim == 2 else visualize.image_grid(x)


def sample(config, workdir: str, solver: str | None = None, checkpoint: str = '') -> str:
  """Sample config.sampling.num_samples; write samples/<solver>_<step>.png and .npz."""
  ensure_writable(os.path.join(workdir, 'samples'), 'samples')
  _grid_cache_in(config, workdir)
  model, path = load_eval_model(config, workdir, checkpoint)
  solver = (solver or config.sampling.method).lower()
  bar = lambda it: tqdm.tqdm(it, desc=f'sample ({solver})', leave=False, dynamic_ncols=True)
  classifier = load_guidance_classifier(config, workdir, next(model.parameters()).device)
  x, nfe = generate(config, model, config.sampling.num_samples, solver, progress=bar,
                    classifier=classifier)
  stem = os.path.join(workdir, 'samples', f'{solver}_{_stem(path)}')
  write_output(stem + '.png', lambda p: visualize.save_samples_png(x, p, nrow=grid_row(config, len(x))))
  write_output(stem + '.npz', lambda p: ckpt.save_arrays(p, True, samples=x.numpy(), nfe=np.array(nfe)))
  print(f'wrote {len(x)} samples to {stem}.png and {stem}.npz (NFE per batch: '
        f'{nfe // max(1, math.ceil(len(x) / config.sampling.batch_size))})')
  return stem + '.png'


def bpd_methods(config) -> tuple[str, ...]:
  """The likelihood estimates config.eval.bpd_method asks for: ('ode',), ('vlb',) or both."""
  m = config.eval.bpd_method.lower()
  return ('ode', 'vlb') if m == 'both' else (m,)


def likelihood(config, workdir: str, checkpoint: str = '') -> dict:
  """Mean bits/dim (nats/dim for 2-D toys) of eval.bpd_dataset (the test split by default),
  with its standard error, by the PF-ODE and / or the variational bound (eval.bpd_method);
  `mean` / `stderr` are the first method's, `<method>_mean` / `<method>_stderr` each one's,
  `vlb_breakdown` the bound's terms. A non-finite mean is reported as null with a warning (a
  single example's stderr is null too: JSON has no NaN)."""
  ensure_writable(workdir, 'likelihood.json')
  model, path = load_eval_model(config, workdir, checkpoint)
  from score_sde.evaluation.loop import likelihood_values, summary
  from score_sde.evaluation.manifest import checkpoint_sha256
  toy = len(data_shape(config)) == 1
  unit, split = ('nats/dim' if toy else 'bits/dim'), config.eval.bpd_dataset
  report = {'checkpoint': path, 'checkpoint_sha256': checkpoint_sha256(path), 'unit': unit,
            'bpd_dataset': split}
  for method in bpd_methods(config):
    gen = torch.Generator(device=next(model.parameters()).device).manual_seed(config.seed)
    terms = []
    v = likelihood_values(config, model, toy, generator=gen, method=method, terms=terms)
    mean, se = summary(v)
    report.update({f'{method}_mean': mean, f'{method}_stderr': se, 'num_examples': len(v)})
    report.setdefault('mean', mean)
    report.setdefault('stderr', se)
    if terms and mean is not None:
      t = sum(terms) / len(v)   # per term, bits/dim: prior, L_{K-1} ... L_1, decoder
      report['vlb_breakdown'] = {'prior': float(t[0]), 'kl_terms': float(t[1:-1].sum()),
                                 'decoder': float(t[-1]), 'terms': [float(x) for x in t]}
    shown = 'null (not finite)' if mean is None else f'{mean:.4f}'
    shown += f' +- {se:.4f}' if se is not None else ''
    print(f'{unit} ({method}): {shown} over {len(v)} {split} examples ({os.path.basename(path)})')
  write_output(os.path.join(workdir, 'likelihood.json'), lambda p: ckpt.save_json(p, report))
  return report


def inverse_problem(config, workdir: str, task: str, solver: str | None = None,
                    checkpoint: str = '') -> str:
  """--mode inpaint / colorize: fill the unknown pixels of `config.inverse.num_images` images
  (from `inverse.source` or the test split) with the model (Song et al. 2021, App. I.2); writes
  samples/<task>_<solver>_<checkpoint>.png (rows: input, result, original) and .npz."""
  from score_sde import inverse, inverse_cli
  from score_sde.generate import non_finite_cause
  out_dir = ensure_writable(os.path.join(workdir, 'samples'), f'{task} results')
  model, path = load_eval_model(config, workdir, checkpoint)
  solver = (solver or config.sampling.method).lower()
  d, inv, device = config.data, config.inverse, next(model.parameters()).device
  if task == 'colorize' and d.num_channels != 3:
    raise UserError(f'colorize needs an RGB model; config.data.num_channels = {d.num_channels}')
  if len(data_shape(config)) != 3:
    raise UserError(f'{task} works on images; config.model.name = {config.model.name!r} takes vectors')
  if inv.source:
    x0 = inverse_cli.load_images(inv.source, d.num_channels, d.image_size)[:inv.num_images]
  else:
    test = datasets.load_split(config, 'test')
    x0 = torch.stack([test[i][0] for i in range(min(inv.num_images, len(test)))])
  x0 = x0.to(device)
  scaler, inverse_scaler = datasets.get_data_scaler(config), datasets.get_data_inverse_scaler(config)
  s = config.sampling
  kwargs = dict(steps=s.steps or None, eps=s.eps, denoise=s.noise_removal,
                generator=torch.Generator(device=device).manual_seed(s.seed))
  method = inv.method or ('project' if solver == 'pc' else 'score')
  options = solver_kwargs(config, solver) if method == 'score' else {
      k: v for k, v in solver_kwargs(config, 'pc').items() if k != 'probability_flow'}
  try:
    with torch.no_grad():
      if task == 'inpaint':
        mask = inverse_cli.make_mask(inv.mask, x0.shape, inv.random_fraction, s.seed).to(device)
        y = scaler(x0)
        x = inverse.inpaint(model.sde, model, y, mask, solver, method=method, solver_options=options, **kwargs)
        shown = x0 * mask
      else:
        grey = scaler(x0).mean(1, keepdim=True)
        x = inverse.colorize(model.sde, model, grey, solver, method=method, solver_options=options, **kwargs)
        shown = x0.mean(1, keepdim=True).expand_as(x0)
  except ValueError as e:
    raise UserError(str(e)) from None
  if not bool(torch.isfinite(x).all()):  # not a silent NaN image
    raise UserError(non_finite_cause(model, where=f'{task} results'))
  result = inverse_scaler(x.float()).clamp(0, 1)
  stem = os.path.join(out_dir, f'{task}_{solver}_{_stem(path)}')
  grid = torch.cat([shown, result, x0]).cpu()
  write_output(stem + '.png', lambda p: visualize.save_samples_png(grid, p, nrow=len(x0)))
  write_output(stem + '.npz', lambda p: ckpt.save_arrays(p, True, input=shown.cpu().numpy(),
                                                      result=result.cpu().numpy(),
                                                      original=x0.cpu().numpy()))
  err = float((result - x0).pow(2).mean().sqrt())
  print(f'wrote {len(x0)} {task} results to {stem}.png (rows: input, result, original; '
        f'RMSE to the originals {err:.4f})')
  return stem + '.png'


def evaluate(config, workdir: str, solver: str | None = None, checkpoint: str = '') -> list[dict]:
  """--mode eval: for each checkpoint in [eval.begin_ckpt, eval.end_ckpt] (or `checkpoint`),
  exactly eval.num_samples samples (in resumable shards under <workdir>/eval/<stem>/, <stem>
  the checkpoint file's name without extension, '-<sha256 prefix>' added for a checkpoint from
  outside this workdir) scored by FID / IS / KID against the dataset's Inception statistics
  (sliced W2 for 2-D toys), and the test-split bits/dim when eval.enable_bpd; a JSON report per
  checkpoint (<stem>.json, holding the folder's manifest: shards made with other settings are
  discarded and redrawn, see score_sde.evaluation.manifest) and TensorBoard scalars under eval/."""
  from torch.utils.tensorboard import SummaryWriter
  from score_sde.evaluation import loop
  from score_sde.runtime import get_device
  _grid_cache_in(config, workdir)
  e = config.eval
  solver = (solver or e.solver or config.sampling.method).lower()
  out_root = ensure_writable(os.path.join(workdir, 'eval'), 'evaluation results')
  targets = ([(ckpt.step_of(checkpoint) or 0, checkpoint)] if checkpoint
             else loop.eval_checkpoints(config, ckpt_dir(workdir)))
  flat, cache, reports = len(data_shape(config)) == 1, {}, []
  if e.enable_sampling and not flat:  # a missing or bad Inception / stats file: before sampling
    loop.quality_reference(config, workdir, cache, get_device(config))
  writer = SummaryWriter(os.path.join(workdir, 'tensorboard', 'eval'))
  for step, path in targets:
    name, report = _evaluate_checkpoint(config, workdir, out_root, solver, step, path, cache)
    for k, v in report.items():
      if isinstance(v, float):
        writer.add_scalar(f'eval/{k}', v, step)
    print(f'{name}: ' + ', '.join(f'{k} {v:.4g}' for k, v in report.items() if isinstance(v, float)))
    reports.append(report)
  writer.close()
  return reports


def _evaluate_checkpoint(config, workdir: str, out_root: str, solver: str, step: int, path: str,
                         cache: dict) -> tuple[str, dict]:
  """One checkpoint of `evaluate`: (folder name, report). The report, with the folder's
  manifest, is written before the first shard ('complete': false) and after the last."""
  from score_sde.data.loader import mix_seed
  from score_sde.evaluation import loop, manifest
  e, flat = config.eval, len(data_shape(config)) == 1
  model, _ = load_eval_model(config, workdir, path)
  device = next(model.parameters()).device
  sha = manifest.checkpoint_sha256(path)
  name = manifest.folder_name(path, sha, ckpt_dir(workdir))
  out_dir = ensure_writable(os.path.join(out_root, name), 'evaluation shards')
  report_path = os.path.join(out_root, name + '.json')
  classifier = load_guidance_classifier(config, workdir, device) if e.enable_sampling else None
  sections = {}
  if e.enable_sampling:
    sections['samples'] = manifest.sample_settings(
        config, solver, sha, manifest.classifier_sha256(config, workdir), flat)
  for method in bpd_methods(config) if e.enable_bpd else ():
    kind = 'bpd' if method == 'ode' else 'vlb'
    sections[kind] = manifest.likelihood_settings(config, method, sha, flat)
  folder = manifest.reconcile(out_dir, report_path, sections)
  report = {'checkpoint': path, 'checkpoint_sha256': sha, 'step': step, 'solver': solver}
  save = lambda r: write_output(report_path, lambda p: ckpt.save_json(p, r))
  save({**report, 'complete': False, 'manifest': folder})
  if e.enable_sampling:
    all_labels = labels_for(config, e.num_samples, device)
    shard = lambda i, start, n: generate(
        config, model, n, solver, classifier=classifier, seed=mix_seed(config.sampling.seed, i),
        labels=None if all_labels is None else all_labels[start:start + n])
    files, nfe = loop.eval_samples(config, shard, out_dir)
    report.update(num_samples=e.num_samples, nfe_per_batch=nfe,
                  **loop.sample_quality(config, workdir, files, flat, cache, device))
  for method in bpd_methods(config) if e.enable_bpd else ():
    values = loop.likelihood_values(config, model, flat, out_dir, method=method)
    mean, se = loop.summary(values)
    unit = ('nats_per_dim' if flat else 'bits_per_dim') if method == 'ode' else 'vlb_bits_per_dim'
    report.update({unit: mean, f'{unit}_stderr': se, 'bpd_num_examples': len(values),
                   'bpd_dataset': e.bpd_dataset})
  report = {**manifest.finite_or_none(report), 'complete': True, 'manifest': folder}
  save(report)
  return name, report

