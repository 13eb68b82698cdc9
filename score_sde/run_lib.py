"""Training, sampling and likelihood loops. Orchestration only: the maths is in score_sde/.

Work directory layout:
  <workdir>/checkpoints/checkpoint_<step>.pth (+ .sha256)   rolling + permanent snapshots
  <workdir>/tensorboard/                                    scalars and sample grids
  <workdir>/samples/                                        PNG grids and .npz from --mode sample
  <workdir>/likelihood.json                                 from --mode likelihood
"""
from __future__ import annotations

import contextlib
import logging
import os
import signal
import sys

import numpy as np
import torch

from score_sde import checkpoint as ckpt
from score_sde import config_check, datasets, visualize
from score_sde.errors import Interrupted, TrainingError, UserError  # noqa: F401 (re-exported)
from score_sde.generate import (ensure_writable, generate, grid_row, labels_for,
                                load_eval_model, load_guidance_classifier,
                                solver_kwargs, write_output)
from score_sde.models import data_shape
from score_sde.progress import progress
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
  """`train` while holding the workdir's lock; rank 0 appends every log line to <folder>/log.txt
  and writes config.json and run.json there once resuming succeeded (score_sde.run_record;
  <folder> is the workdir, or <workdir>/classifier)."""
  from score_sde import run_record
  folder = os.path.dirname(ckpt_dir(workdir, task))
  rank0 = os.environ.get('RANK', '0').strip() in ('', '0')
  with run_record.log_file(folder) if rank0 else contextlib.nullcontext():
    return _train_logged(config, workdir, task, folder)


def _train_logged(config, workdir: str, task: str, folder: str) -> dict:
  """`_train` with its log file open: restore, write the run records, then the loop."""
  from torch.utils.tensorboard import SummaryWriter
  from score_sde import run_record
  trainer = Trainer(config, workdir, task)
  try:
    trainer.restore()
    main = trainer.dist.is_main
    if main:
      run_record.write_records(config, folder, trainer.dist.world_size)
      logging.info('training %s in %s to step %d (%s)', task, folder, config.training.n_iters,
                   ' '.join(sys.argv))
    logs = os.path.join(folder, 'tensorboard')
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
  with StopSignals() as stop, progress(total=tr.n_iters, initial=trainer.step, desc='train',
                                       disable=writer is None) as bar:
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
      values = {k: float(v) for k, v in metrics.items()}
      for k, v in values.items():
        writer.add_scalar(f'train/{k}', v, step)
      bar.set_postfix(loss=f"{values['loss']:.4g}")
      logging.info('step %d: %s', step, ', '.join(f'{k} {v:.5g}' for k, v in values.items()))
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
  """Sample config.sampling.num_samples; write samples/<solver>_<step>.png and .npz. Batch i
  (of sampling.batch_size) is drawn with seed mix_seed(sampling.seed, i); under torchrun batch
  i runs on rank i % world_size and rank 0 gathers and writes, so any number of ranks writes
  the same samples."""
  from score_sde import distributed
  from score_sde.evaluation.preflight import check_solver
  from score_sde.runtime import get_device
  ensure_writable(os.path.join(workdir, 'samples'), 'samples')
  _grid_cache_in(config, workdir)
  solver = (solver or config.sampling.method).lower()
  check_solver(config, solver)
  with distributed.ranks(get_device(config)) as dist:
    model, path = load_eval_model(config, workdir, checkpoint)
    classifier = load_guidance_classifier(config, workdir, next(model.parameters()).device)
    mine = distributed.agree(dist, lambda: _draw_batches(config, model, solver, classifier, dist),
                             'sampling')
    parts = sorted((p for rank in distributed.gather_objects(mine, dist) for p in rank),
                   key=lambda p: p[0])
  if not dist.is_main:
    return ''
  x, nfe = torch.cat([p[1] for p in parts]), sum(p[2] for p in parts)
  stem = os.path.join(workdir, 'samples', f'{solver}_{_stem(path)}')
  write_output(stem + '.png', lambda p: visualize.save_samples_png(x, p, nrow=grid_row(config, len(x))))
  write_output(stem + '.npz', lambda p: ckpt.save_arrays(p, True, samples=x.numpy(), nfe=np.array(nfe)))
  print(f'wrote {len(x)} samples to {stem}.png and {stem}.npz (NFE per batch: '
        f'{nfe // max(1, len(parts))})')
  return stem + '.png'


def _draw_batches(config, model, solver: str, classifier, dist) -> list[tuple]:
  """[(i, samples of batch i, its NFE)] for this rank's batches of `sample` (all, on one
  process)."""
  from score_sde import distributed
  from score_sde.data.loader import mix_seed
  s = config.sampling
  n, bs = s.num_samples, s.batch_size
  labels = labels_for(config, n, next(model.parameters()).device)
  bar = lambda it: progress(it, desc=f'sample ({solver})', leave=False)
  out = []
  for i in distributed.my_shards(-(-n // bs), dist):
    b = min(bs, n - i * bs)
    x, nfe = generate(config, model, b, solver, progress=bar, classifier=classifier,
                      seed=mix_seed(s.seed, i),
                      labels=None if labels is None else labels[i * bs:i * bs + b])
    out.append((i, x, nfe))
  return out


def bpd_methods(config) -> tuple[str, ...]:
  """The likelihood estimates config.eval.bpd_method asks for: ('ode',), ('vlb',) or both."""
  m = config.eval.bpd_method.lower()
  return ('ode', 'vlb') if m == 'both' else (m,)


def likelihood(config, workdir: str, checkpoint: str = '') -> dict:
  """Mean bits/dim (nats/dim for 2-D toys) of eval.bpd_dataset (the test split by default),
  with its standard error, by the PF-ODE and / or the variational bound (eval.bpd_method);
  `mean` / `stderr` are the first method's, `<method>_mean` / `<method>_stderr` each one's,
  `vlb_breakdown` the bound's terms. A non-finite mean is reported as null with a warning (a
  single example's stderr is null too: JSON has no NaN). Batch i's noise is seeded by
  seed + i; under torchrun batch i runs on rank i % world_size and rank 0 writes the report."""
  from score_sde import distributed
  from score_sde.evaluation.manifest import checkpoint_sha256
  from score_sde.runtime import get_device
  ensure_writable(workdir, 'likelihood.json')
  datasets.load_split(config, config.eval.bpd_dataset)  # a missing dataset: before the model
  toy = len(data_shape(config)) == 1
  unit, split = ('nats/dim' if toy else 'bits/dim'), config.eval.bpd_dataset
  with distributed.ranks(get_device(config)) as dist:
    model, path = load_eval_model(config, workdir, checkpoint)
    report = {'checkpoint': path, 'checkpoint_sha256': checkpoint_sha256(path), 'unit': unit,
              'bpd_dataset': split}
    for method in bpd_methods(config):
      v, terms = _likelihood_over_ranks(config, model, toy, method, dist)
      if dist.is_main:
        _likelihood_summary(report, method, v, terms, f'{unit} ({method})',
                            f'{split} examples ({os.path.basename(path)})')
  if dist.is_main:
    write_output(os.path.join(workdir, 'likelihood.json'), lambda p: ckpt.save_json(p, report))
  return report


def _likelihood_over_ranks(config, model, toy: bool, method: str, dist):
  """(values [N] in batch order, VLB terms per batch) of `likelihood`, batches split over the
  ranks; (None, None) off rank 0."""
  from score_sde import distributed
  from score_sde.evaluation.loop import likelihood_batches
  terms = {}
  mine = distributed.agree(dist, lambda: likelihood_batches(
      config, model, toy, method=method, terms=terms, shard=(dist.rank, dist.world_size)),
      f'computing the likelihood ({method})')
  parts = distributed.gather_objects((mine, terms), dist)
  if not dist.is_main:
    return None, None
  values = {i: v for got, _ in parts for i, v in got.items()}
  all_terms = {i: t for _, got in parts for i, t in got.items()}
  return (np.concatenate([values[i] for i in sorted(values)]),
          [all_terms[i] for i in sorted(all_terms)])


def _likelihood_summary(report: dict, method: str, v, terms: list, what: str, where: str) -> None:
  """Add method's mean, stderr and (VLB) breakdown to `report`, and print them."""
  from score_sde.evaluation.loop import summary
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
  print(f'{what}: {shown} over {len(v)} {where}')


def inverse_problem(config, workdir: str, task: str, solver: str | None = None,
                    checkpoint: str = '') -> str:
  """--mode inpaint / colorize: fill the unknown pixels of `config.inverse.num_images` images
  (from `inverse.source` or the test split) with the model (Song et al. 2021, App. I.2); writes
  samples/<task>_<solver>_<checkpoint>.png (rows: input, result, original) and .npz. Images are
  solved in batches of sampling.batch_size, batch i with seed mix_seed(sampling.seed, i); under
  torchrun batch i runs on rank i % world_size and rank 0 gathers and writes."""
  from score_sde import distributed
  from score_sde.runtime import get_device
  out_dir = ensure_writable(os.path.join(workdir, 'samples'), f'{task} results')
  solver = (solver or config.sampling.method).lower()
  d = config.data
  if task == 'colorize' and d.num_channels != 3:
    raise UserError(f'colorize needs an RGB model; config.data.num_channels = {d.num_channels}')
  if len(data_shape(config)) != 3:
    raise UserError(f'{task} works on images; config.model.name = {config.model.name!r} takes vectors')
  x0 = _inverse_inputs(config)
  with distributed.ranks(get_device(config)) as dist:
    model, path = load_eval_model(config, workdir, checkpoint)
    bs = config.sampling.batch_size
    mine = distributed.agree(dist, lambda: [
        (i, _inverse_batch(config, model, task, solver, x0, i)) for i in
        distributed.my_shards(-(-len(x0) // bs), dist)], f'solving {task}')
    parts = sorted((p for rank in distributed.gather_objects(mine, dist) for p in rank),
                   key=lambda p: p[0])
  if not dist.is_main:
    return ''
  shown, result = (torch.cat([p[1][k] for p in parts]) for k in (0, 1))
  stem = os.path.join(out_dir, f'{task}_{solver}_{_stem(path)}')
  grid = torch.cat([shown, result, x0])
  write_output(stem + '.png', lambda p: visualize.save_samples_png(grid, p, nrow=len(x0)))
  write_output(stem + '.npz', lambda p: ckpt.save_arrays(p, True, input=shown.numpy(),
                                                      result=result.numpy(), original=x0.numpy()))
  err = float((result - x0).pow(2).mean().sqrt())
  print(f'wrote {len(x0)} {task} results to {stem}.png (rows: input, result, original; '
        f'RMSE to the originals {err:.4f})')
  return stem + '.png'


def _inverse_inputs(config) -> torch.Tensor:
  """The originals `[n, C, H, W]` in [0, 1] (CPU) of `inverse_problem`."""
  from score_sde import inverse_cli
  d, inv = config.data, config.inverse
  if inv.source:
    return inverse_cli.load_images(inv.source, d.num_channels, d.image_size)[:inv.num_images]
  test = datasets.load_split(config, 'test')
  return torch.stack([test[i][0] for i in range(min(inv.num_images, len(test)))])


def _inverse_batch(config, model, task: str, solver: str, x0_all, i: int):
  """(input shown, result in [0, 1]) `[b, C, H, W]` (CPU) of batch i of `inverse_problem`."""
  from score_sde import inverse, inverse_cli
  from score_sde.data.loader import mix_seed
  from score_sde.generate import non_finite_cause
  s, inv, device = config.sampling, config.inverse, next(model.parameters()).device
  sl = slice(i * s.batch_size, (i + 1) * s.batch_size)
  x0 = x0_all[sl].to(device)
  scaler, inverse_scaler = datasets.get_data_scaler(config), datasets.get_data_inverse_scaler(config)
  kwargs = dict(steps=s.steps or None, eps=s.eps, denoise=s.noise_removal,
                generator=torch.Generator(device=device).manual_seed(mix_seed(s.seed, i)))
  method = inv.method or ('project' if solver == 'pc' else 'score')
  options = solver_kwargs(config, solver) if method == 'score' else {
      k: v for k, v in solver_kwargs(config, 'pc').items() if k != 'probability_flow'}
  try:
    with torch.no_grad():
      if task == 'inpaint':  # the mask of all images (seeded once), then this batch's rows
        mask = inverse_cli.make_mask(inv.mask, x0_all.shape, inv.random_fraction, s.seed)[sl]
        mask = mask.to(device)
        x = inverse.inpaint(model.sde, model, scaler(x0), mask, solver, method=method,
                            solver_options=options, **kwargs)
        shown = x0 * mask
      else:
        x = inverse.colorize(model.sde, model, scaler(x0).mean(1, keepdim=True), solver,
                             method=method, solver_options=options, **kwargs)
        shown = x0.mean(1, keepdim=True).expand_as(x0)
  except ValueError as e:
    raise UserError(str(e)) from None
  if not bool(torch.isfinite(x).all()):  # not a silent NaN image
    raise UserError(non_finite_cause(model, where=f'{task} results'))
  return shown.cpu(), inverse_scaler(x.float()).clamp(0, 1).cpu()


def interpolate(config, workdir: str, checkpoint: str = '') -> str:
  """--mode interpolate (Song et al. 2021, Sec. 4.3): the two images sampling.interpolate_images
  of inverse.source (or the test split) encoded to their latents by the probability-flow ODE,
  and sampling.interpolate_steps images decoded along the spherical path between them; writes
  samples/interpolate_<checkpoint>.png (one row: original, path, original) and .npz."""
  from score_sde import inverse_cli
  from score_sde.pipeline import Pipeline
  if len(data_shape(config)) != 3:
    raise UserError(f'interpolate works on images; config.model.name = {config.model.name!r} '
                    'takes vectors')
  out_dir = ensure_writable(os.path.join(workdir, 'samples'), 'interpolations')
  model, path = load_eval_model(config, workdir, checkpoint)
  d, s = config.data, config.sampling
  if config.inverse.source:
    images = inverse_cli.load_images(config.inverse.source, d.num_channels, d.image_size)
    where = config.inverse.source
  else:
    test = datasets.load_split(config, 'test')
    count = min(len(test), max(s.interpolate_images) + 1)
    images, where = [test[i][0] for i in range(count)], 'the test split'
  if max(s.interpolate_images) >= len(images):
    raise UserError(f'config.sampling.interpolate_images = {tuple(s.interpolate_images)}: '
                    f'{where} has {len(images)} images')
  x0, x1 = (images[i].float().clamp(0, 1) for i in s.interpolate_images)
  label = s.label if config.model.class_conditional and s.label >= 0 else None
  pipe = Pipeline(config, model, path, workdir)
  row = pipe.interpolate(x0, x1, s.interpolate_steps, label, uint8=False)
  err = float(torch.stack([row[0] - x0, row[-1] - x1]).pow(2).mean().sqrt())
  grid = torch.cat([x0[None], row, x1[None]])
  stem = os.path.join(out_dir, f'interpolate_{_stem(path)}')
  write_output(stem + '.png', lambda p: visualize.save_samples_png(grid, p, nrow=len(grid)))
  write_output(stem + '.npz', lambda p: ckpt.save_arrays(p, True, images=grid.numpy()))
  print(f'wrote an interpolation of {len(row)} images to {stem}.png (row: original, path, '
        f'original; RMSE of the decoded ends to the originals {err:.4f})')
  return stem + '.png'


def evaluate(config, workdir: str, solver: str | None = None, checkpoint: str = '') -> list[dict]:
  """--mode eval: for each checkpoint in [eval.begin_ckpt, eval.end_ckpt] (or `checkpoint`),
  exactly eval.num_samples samples (in resumable shards under <workdir>/eval/<stem>/, <stem>
  the checkpoint file's name without extension, '-<sha256 prefix>' added for a checkpoint from
  outside this workdir) scored by FID / IS / KID / precision-recall against the reference
  statistics (sliced W2 for 2-D toys), and the test-split bits/dim when eval.enable_bpd; a JSON
  report per checkpoint (<stem>.json, holding the folder's manifest: shards made with other
  settings are discarded and redrawn, see score_sde.evaluation.manifest), TensorBoard scalars
  under eval/ and, with eval.export, the samples for external evaluators.

  Everything the run needs is checked before the first sample (score_sde.evaluation.preflight).
  Under torchrun, shard i (samples or bits/dim batch) is computed on rank i % world_size; its
  content depends only on i and the seeds, so any number of ranks writes the same shards and
  report, and a killed run resumes on any number of ranks. Rank 0 alone reconciles the folder,
  scores and writes reports (the others wait)."""
  from torch.utils.tensorboard import SummaryWriter
  from score_sde import distributed
  from score_sde.evaluation import loop, preflight
  from score_sde.runtime import get_device
  _grid_cache_in(config, workdir)
  e = config.eval
  solver = (solver or e.solver or config.sampling.method).lower()
  out_root = ensure_writable(os.path.join(workdir, 'eval'), 'evaluation results')
  targets = ([(ckpt.step_of(checkpoint) or 0, checkpoint)] if checkpoint
             else loop.eval_checkpoints(config, ckpt_dir(workdir)))
  flat, cache, reports = len(data_shape(config)) == 1, {}, []
  with distributed.ranks(get_device(config)) as dist:
    distributed.agree(dist, lambda: preflight.check_eval(
        config, workdir, solver, cache, dist.device, flat, dist.is_main), 'checking the inputs')
    writer = SummaryWriter(os.path.join(workdir, 'tensorboard', 'eval')) if dist.is_main else None
    for step, path in targets:
      name, report = _evaluate_checkpoint(config, workdir, out_root, solver, step, path, cache,
                                          dist)
      if writer is None:
        continue
      for k, v in report.items():
        if isinstance(v, float):
          writer.add_scalar(f'eval/{k}', v, step)
      print(f'{name}: ' + ', '.join(f'{k} {v:.4g}' for k, v in report.items() if isinstance(v, float)))
      reports.append(report)
    if writer is not None:
      writer.close()
  return reports


def _evaluate_checkpoint(config, workdir: str, out_root: str, solver: str, step: int, path: str,
                         cache: dict, dist=None) -> tuple[str, dict]:
  """One checkpoint of `evaluate`: (folder name, report; {} off rank 0). The report, with the
  folder's manifest, is written before the first shard ('complete': false) and after the last."""
  from score_sde import distributed
  from score_sde.data.loader import mix_seed
  from score_sde.evaluation import loop, manifest
  dist = dist or distributed.Dist()
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
  report = {'checkpoint': path, 'checkpoint_sha256': sha, 'step': step, 'solver': solver}
  save = lambda r: write_output(report_path, lambda p: ckpt.save_json(p, r))

  def start() -> dict:  # rank 0, before any rank touches a shard
    folder = manifest.reconcile(out_dir, report_path, sections)
    save({**report, 'complete': False, 'manifest': folder})
    return folder
  folder = distributed.agree(dist, start, 'opening the evaluation folder', main_only=True)
  shard = None
  if e.enable_sampling:
    all_labels = labels_for(config, e.num_samples, device)
    shard = lambda i, begin, n: generate(
        config, model, n, solver, classifier=classifier, seed=mix_seed(config.sampling.seed, i),
        labels=None if all_labels is None else all_labels[begin:begin + n])
    count = -(-e.num_samples // config.sampling.batch_size)
    distributed.agree(dist, lambda: loop.eval_samples(config, shard, out_dir,
                                                      distributed.my_shards(count, dist)),
                      'drawing the evaluation samples')
  for method in bpd_methods(config) if e.enable_bpd else ():
    distributed.agree(dist, lambda: loop.likelihood_batches(
        config, model, flat, out_dir, method=method, shard=(dist.rank, dist.world_size)),
        f'computing bits/dim ({method})')
  finish = lambda: _score_checkpoint(config, workdir, report, flat, model, shard, out_dir,
                                     cache, name)
  report = distributed.agree(dist, finish, 'scoring', main_only=True)
  if dist.is_main:
    report = {**manifest.finite_or_none(report), 'complete': True, 'manifest': folder}
    save(report)
  return name, report or {}


def _score_checkpoint(config, workdir: str, report: dict, flat: bool, model, shard, out_dir: str,
                      cache: dict, name: str) -> dict:
  """Rank 0 of `_evaluate_checkpoint`, every shard on disk: the sample quality, bits/dim and
  the export (eval.export) of the samples. Returns the report's values."""
  from score_sde.evaluation import loop
  from score_sde.evaluation.export import export_samples
  e, device, report = config.eval, next(model.parameters()).device, dict(report)
  if e.enable_sampling:
    files, nfe = loop.eval_samples(config, shard, out_dir)  # all there: read back and checked
    report.update(num_samples=e.num_samples, nfe_per_batch=nfe,
                  **loop.sample_quality(config, workdir, files, flat, cache, device))
    export_samples(files, os.path.dirname(out_dir), name, e.export.lower(), flat)
  for method in bpd_methods(config) if e.enable_bpd else ():
    values = loop.likelihood_values(config, model, flat, out_dir, method=method)
    mean, se = loop.summary(values)
    unit = ('nats_per_dim' if flat else 'bits_per_dim') if method == 'ode' else 'vlb_bits_per_dim'
    report.update({unit: mean, f'{unit}_stderr': se, 'bpd_num_examples': len(values),
                   'bpd_dataset': e.bpd_dataset})
  return report

