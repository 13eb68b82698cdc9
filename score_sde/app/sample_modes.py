"""The sampling modes of the command line: --mode sample, inpaint, colorize and interpolate
(orchestration only; the maths is in score_sde.sampling / inverse / pipeline). Batch i is drawn
with its own seed, and under torchrun on rank i % world_size."""
from __future__ import annotations

import os

import numpy as np
import torch

from score_sde.app import inverse_cli
from score_sde.app.build import is_vector_data, solver_kwargs
from score_sde.app.eval_model import load_eval_model
from score_sde.app.eval_preflight import check_solver
from score_sde.app.generate import class_labels_for, generate, grid_row, non_finite_cause
from score_sde.app.loading import load_guidance_classifier
from score_sde.app.pipeline import Pipeline
from score_sde.data import datasets
from score_sde.data.loader import mix_seed
from score_sde.errors import UserError
from score_sde.files import checkpoint as ckpt
from score_sde.files import visualize
from score_sde.files.workdir import ensure_writable, grid_cache_in, write_output
from score_sde.runtime import distributed
from score_sde.runtime.device import get_device
from score_sde.runtime.progress import progress
from score_sde.sampling import inverse


def _stem(path: str) -> str:
  """A checkpoint file's name without its extension ('final.pt' -> 'final')."""
  return os.path.splitext(os.path.basename(path))[0] or os.path.basename(path)




def sample(config, workdir: str, solver: str | None = None, checkpoint: str = '') -> str:
  """Sample config.sampling.num_samples; write samples/<solver>_<step>.png and .npz. Batch i
  (of sampling.batch_size) is drawn with seed mix_seed(sampling.seed, i); under torchrun batch
  i runs on rank i % world_size and rank 0 gathers and writes, so any number of ranks writes
  the same samples."""
  ensure_writable(os.path.join(workdir, 'samples'), 'samples')
  grid_cache_in(config.sampling, workdir)
  solver = (solver or config.sampling.method).lower()
  check_solver(config, solver)
  with distributed.ranks(get_device(config.runtime)) as dist:
    model, path = load_eval_model(config, workdir, checkpoint)
    classifier = load_guidance_classifier(config, workdir, next(model.parameters()).device)
    mine = distributed.agree(dist, lambda: _draw_batches(config, model, solver, classifier, dist),
                             'sampling')
    parts = distributed.gather_shards(mine, dist)
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
  s = config.sampling
  n, bs = s.num_samples, s.batch_size
  labels = class_labels_for(config, n, next(model.parameters()).device)
  bar = lambda it: progress(it, desc=f'sample ({solver})', leave=False)
  out = []
  for i in distributed.my_shards(-(-n // bs), dist):
    b = min(bs, n - i * bs)
    x, nfe = generate(config, model, b, solver, progress=bar, classifier=classifier,
                      seed=mix_seed(s.seed, i),
                      class_labels=None if labels is None else labels[i * bs:i * bs + b])
    out.append((i, x, nfe))
  return out


def inverse_problem(config, workdir: str, task: str, solver: str | None = None,
                    checkpoint: str = '') -> str:
  """--mode inpaint / colorize: fill the unknown pixels of `config.inverse.num_images` images
  (from `inverse.source` or the test split) with the model (Song et al. 2021, App. I.2); writes
  samples/<task>_<solver>_<checkpoint>.png (rows: input, result, original) and .npz. Images are
  solved in batches of sampling.batch_size, batch i with seed mix_seed(sampling.seed, i); under
  torchrun batch i runs on rank i % world_size and rank 0 gathers and writes."""
  out_dir = ensure_writable(os.path.join(workdir, 'samples'), f'{task} results')
  solver = (solver or config.sampling.method).lower()
  d = config.data
  if task == 'colorize' and d.num_channels != 3:
    raise UserError(f'colorize needs an RGB model; config.data.num_channels = {d.num_channels}')
  if is_vector_data(config):
    raise UserError(f'{task} works on images; config.model.name = {config.model.name!r} takes vectors')
  x0 = _inverse_inputs(config)
  with distributed.ranks(get_device(config.runtime)) as dist:
    model, path = load_eval_model(config, workdir, checkpoint)
    bs = config.sampling.batch_size
    mine = distributed.agree(dist, lambda: [
        (i, _inverse_batch(config, model, task, solver, x0, i)) for i in
        distributed.my_shards(-(-len(x0) // bs), dist)], f'solving {task}')
    parts = distributed.gather_shards(mine, dist)
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
  d, inv = config.data, config.inverse
  if inv.source:
    return inverse_cli.load_images(inv.source, d.num_channels, d.image_size)[:inv.num_images]
  test = datasets.load_split(config.data, 'test')
  return torch.stack([test[i][0] for i in range(min(inv.num_images, len(test)))])


def _inverse_batch(config, model, task: str, solver: str, x0_all, i: int):
  """(input shown, result in [0, 1]) `[b, C, H, W]` (CPU) of batch i of `inverse_problem`."""
  s, inv, device = config.sampling, config.inverse, next(model.parameters()).device
  sl = slice(i * s.batch_size, (i + 1) * s.batch_size)
  x0 = x0_all[sl].to(device)
  scaler, inverse_scaler = datasets.get_data_scaler(config.data), datasets.get_data_inverse_scaler(config.data)
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
  if is_vector_data(config):
    raise UserError(f'interpolate works on images; config.model.name = {config.model.name!r} '
                    'takes vectors')
  out_dir = ensure_writable(os.path.join(workdir, 'samples'), 'interpolations')
  model, path = load_eval_model(config, workdir, checkpoint)
  d, s = config.data, config.sampling
  if config.inverse.source:
    images = inverse_cli.load_images(config.inverse.source, d.num_channels, d.image_size)
    where = config.inverse.source
  else:
    test = datasets.load_split(config.data, 'test')
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
