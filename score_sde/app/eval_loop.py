"""The batch loops of `--mode eval`: which checkpoints to evaluate, resumable sample and
bits/dim shards, and the sample-quality report.

Every shard is written to disk as soon as it is done (atomic writes, see score_sde.files.checkpoint)
and a shard already on disk is reused, so a pre-empted evaluation resumes where it stopped.
Sample shard i is drawn with its own seed, so a redrawn shard equals the lost one. A shard is
reused only if it was made with this run's settings (the folder's manifest, see
score_sde.evaluation.manifest) and reads back with the expected shape, dtype and finite values.
"""
from __future__ import annotations

import logging
import os

import numpy as np
import torch

from score_sde.app.build import data_shape
from score_sde.data import datasets
from score_sde.errors import UserError
from score_sde.evaluation.export import save_npz
from score_sde.evaluation import inception as inception_v3
from score_sde.evaluation.manifest import read_sample_shard, read_values_shard
from score_sde.evaluation.reference import read_reference
from score_sde.evaluation.report import image_quality, point_quality
from score_sde.evaluation import stats as feature_stats
from score_sde.files import checkpoint as ckpt
from score_sde.files.workdir import write_output
from score_sde.maths.likelihood import bits_per_dim, log_likelihood
from score_sde.maths.vlb import variational_bound
from score_sde.runtime import distributed
from score_sde.runtime.progress import progress


def eval_checkpoints(config, folder: str) -> list[tuple[int, str]]:
  """(step, path) of the checkpoints in `folder` numbered in [eval.begin_ckpt, eval.end_ckpt]
  (end -1: no end)."""
  e = config.eval
  every = ckpt.list_checkpoints(folder)
  if not every:
    raise UserError(f'no checkpoint in {folder}; train first (--mode train)')
  found = [(n, p) for n, p in every if n >= e.begin_ckpt and (e.end_ckpt < 0 or n <= e.end_ckpt)]
  if not found:
    raise UserError(f'no checkpoint numbered in [{e.begin_ckpt}, '
                    f"{e.end_ckpt if e.end_ckpt >= 0 else 'inf'}] in {folder} "
                    f'(it has {[n for n, _ in every]}; set config.eval.begin_ckpt / end_ckpt)')
  return found


def eval_samples(config, sample_shard, out_dir: str, shards=None) -> tuple[list[str], float]:
  """Exactly config.eval.num_samples samples in shards of config.sampling.batch_size, one
  `samples_<i>.npz` each under out_dir (images as uint8 `[B, C, H, W]`, vectors as float
  `[B, D]`, with the shard's NFE; bytes that depend only on the content). `sample_shard(i,
  start, n) -> (x in data space, nfe)`. `shards`: the indices this process draws (default: all;
  under torchrun `distributed.my_shards`). A shard on disk is reused only if it reads back with
  the expected shape, dtype and finite values (score_sde.evaluation.manifest); else it is
  redrawn. Returns the files and the mean NFE per shard (of `shards`)."""
  n, bs = config.eval.num_samples, config.sampling.batch_size
  shape = data_shape(config)
  flat = len(shape) == 1
  count = -(-n // bs)
  todo = list(range(count) if shards is None else shards)
  files, nfes = [], []
  for i in progress(todo, desc='eval samples'):
    start = i * bs
    path, size = os.path.join(out_dir, f'samples_{i:05d}.npz'), min(bs, n - start)
    found = read_sample_shard(path, (size, *shape), flat)
    if found is None:
      x, nfe = sample_shard(i, start, size)
      if not torch.isfinite(x).all():
        raise UserError(f'shard {i} of the evaluation samples is not finite (NaN or inf): the '
                        'checkpoint\'s weights are likely NaN (a diverged run); evaluate an '
                        'earlier checkpoint')
      x = x.numpy() if flat else (x.clamp(0, 1) * 255).round().to(torch.uint8).numpy()
      write_output(path, lambda p: save_npz(p, samples=x, nfe=np.array(nfe)))
      found = (x, nfe)
    files.append(path)
    nfes.append(found[1])
  return files, float(np.mean(nfes)) if nfes else 0.0


def _samples(path: str) -> np.ndarray:
  with np.load(path, allow_pickle=False) as f:
    return f['samples']


def reference_stats(config, workdir: str, inception, device, info: dict | None = None):
  """Inception statistics (and features, for KID and precision / recall) of the reference:
  the file config.eval.stats_path in any format of score_sde.evaluation.reference (ours,
  pytorch-fid / clean-fid, score_sde's `pool_3`, ADM's reference batch), or else the training
  split without random flips, cached at <workdir>/eval/<dataset>_<size>_train_stats_tf1.npz
  (eval.inception_resize 'tf1'; '..._train_stats.npz' for 'torch', as before). A bad
  file is a one-line UserError. `info` gets 'reference' (the file) and 'reference_format'."""
  d, info = config.data, {} if info is None else info
  mode = config.eval.inception_resize.lower()  # features depend on it: one cache per mode
  suffix = '' if mode == 'torch' else '_' + mode
  path = config.eval.stats_path or os.path.join(
      workdir, 'eval', f'{d.dataset}_{d.image_size}_train_stats{suffix}.npz')
  info['reference'] = path
  if os.path.exists(path):  # given or cached (without features KID and P/R are skipped)
    bs = config.eval.batch_size
    featurize = lambda im: feature_stats.compute_activations(
        (torch.from_numpy(im[i:i + bs]) for i in range(0, len(im), bs)), inception, device,
        num_images=len(im)).pool3
    try:
      stats, info['reference_format'] = read_reference(path, inception_v3.POOL3_DIM, featurize)
    except ValueError as e:
      raise UserError(str(e)) from None
    return stats
  info['reference_format'] = f'{d.dataset} train split (cached)'
  cfg = config.copy_and_resolve_references()
  cfg.data.random_flip = False
  loader = datasets.InfiniteLoader(datasets.load_split(cfg.data, 'train'), config.eval.batch_size, seed=0,
                                   shuffle=False, drop_last=False)
  batches = lambda: (next(loader)[0] for _ in range(loader.batches_per_epoch))
  return feature_stats.load_or_compute_stats(path, batches, inception, device, keep_features=True,
                               num_images=len(loader.dataset))


def quality_reference(config, workdir: str, cache: dict, device) -> None:
  """Load the Inception network (with eval.inception_resize) and the reference statistics into
  `cache` (once), so that a missing or bad file is reported before any sample is drawn."""
  if 'inception' not in cache:
    try:
      cache['inception'] = inception_v3.load_inception(config.eval.inception_path, device)
    except (FileNotFoundError, ValueError) as e:
      raise UserError(str(e)) from None
    if isinstance(cache['inception'], inception_v3.FIDInceptionV3):
      cache['inception'].resize_mode = config.eval.inception_resize.lower()
    cache['reference_info'] = {}
    cache['reference'] = reference_stats(config, workdir, cache['inception'], device,
                                         cache['reference_info'])


def sample_quality(config, workdir: str, files: list[str], flat: bool, cache: dict, device) -> dict:
  """FID / IS / KID / precision-recall of the sample files (images), or sliced-W2 and moment
  errors against the test split (vectors). `cache` keeps the Inception network and reference
  statistics between checkpoints."""
  e = config.eval
  if flat:
    test = datasets.load_split(config.data, 'test')
    return point_quality(np.concatenate([_samples(f) for f in files]),
                         torch.stack([test[i][0] for i in range(len(test))]).numpy())
  quality_reference(config, workdir, cache, device)
  images = (torch.from_numpy(_samples(f)) for f in files)
  out = image_quality(images, e.num_samples, cache['inception'], cache['reference'], device,
                      e.kid_subset_size, fid_method=e.fid_method, is_splits=e.is_splits,
                      kid_subsets=e.kid_subsets, pr_k=e.pr_k)
  out['metric_conventions'].update(cache.get('reference_info', {}))
  return out


def _vlb_values(config, model, x, flat: bool, gen, terms: list | None) -> np.ndarray:
  """Per-example bits/dim `[B]` of the discrete-time variational bound (score_sde.maths.vlb) of an
  8-bit image batch; appends the batch's per-term bits/dim summed over examples to `terms`."""
  if flat:
    raise UserError("config.eval.bpd_method = 'vlb' needs 8-bit image data (a toy's points are "
                    'continuous: use ode)')
  rng = datasets.data_range(config.data)
  x = datasets.get_data_scaler(config.data)(x)
  res = variational_bound(model.sde, model, x, data_range=rng, generator=gen, clip_x0=True,
                          variance='learned' if model.learn_sigma else 'small',
                          steps=config.eval.vlb_steps or None)
  if terms is not None:
    terms.append((res.terms / (x[0].numel() * np.log(2.0))).sum(0).cpu().double().numpy())
  return res.bpd.cpu().double().numpy()


def _batch_values(config, model, x, flat: bool, gen, method: str = 'ode', terms=None) -> np.ndarray:
  """Per-example bits/dim (nats/dim for vectors) `[B]` of a data batch via the PF-ODE
  (images uniformly dequantised first), or the variational bound (method 'vlb')."""
  if method == 'vlb':
    return _vlb_values(config, model, x, flat, gen, terms)
  x = datasets.get_data_scaler(config.data)(x if flat else datasets.dequantize(x, gen))
  try:
    res = log_likelihood(model.sde, model, x, divergence=config.eval.bpd_divergence,
                         rtol=config.sampling.rtol, atol=config.sampling.atol, generator=gen,
                         amp=config.eval.bpd_amp)
  except ValueError as e:
    raise UserError(f'{e} (config.sampling.rtol / atol)') from None
  if flat:
    return (-res.logp / x[0].numel()).cpu().double().numpy()
  rng = datasets.data_range(config.data)
  return bits_per_dim(res.logp, x.shape, data_range=rng).cpu().double().numpy()


def likelihood_values(config, model, flat: bool, cache_dir: str = '', generator=None,
                      method: str = 'ode', terms: list | None = None) -> np.ndarray:
  """Per-example bits/dim (nats/dim for vectors) of config.eval.bpd_dataset, `[N]` float64,
  over its first eval.bpd_num_batches batches (0: all), by `method` ('ode' or 'vlb'; `terms`
  collects the VLB's per-term breakdown per batch, see `_vlb_values`): `likelihood_batches` of
  every batch, concatenated in order."""
  per_terms = {} if terms is not None else None
  found = likelihood_batches(config, model, flat, cache_dir, generator, method, per_terms)
  if terms is not None:
    terms.extend(per_terms[i] for i in sorted(per_terms))
  return np.concatenate([found[i] for i in sorted(found)])


def likelihood_batches(config, model, flat: bool, cache_dir: str = '', generator=None,
                       method: str = 'ode', terms: dict | None = None,
                       dist=None) -> dict:
  """{batch index: per-example values `[B]` float64} of this rank's batches
  (`distributed.my_shards` of `dist`; all batches on one process or with dist None). With `cache_dir`, each batch's
  values are saved there as bpd_<i>.npy (vlb_<i>.npy) and reused. The noise comes from `generator` (one stream for all
  batches), or else from a generator per batch seeded by seed + i, so that a batch recomputed
  after a pre-emption, or on another rank, equals the lost one. `terms` gets {i: VLB terms}."""
  device = next(model.parameters()).device
  loader = datasets.InfiniteLoader(datasets.load_split(config.data, config.eval.bpd_dataset),
                                   config.eval.batch_size, seed=config.seed, shuffle=False,
                                   drop_last=False, device=device)
  n_batches = loader.batches_per_epoch
  if config.eval.bpd_num_batches > 0:
    n_batches = min(n_batches, config.eval.bpd_num_batches)
  wanted = set(range(n_batches) if dist is None else distributed.my_shards(n_batches, dist))
  values, stem = {}, 'bpd' if method == 'ode' else 'vlb'
  for i in progress(range(n_batches), desc=f'likelihood ({method})'):
    x, _ = next(loader)
    if i not in wanted:
      continue
    cached = os.path.join(cache_dir, f'{stem}_{i:05d}.npy') if cache_dir else ''
    found = read_values_shard(cached, len(x)) if cached else None
    if found is not None:
      values[i] = found
      continue
    gen = generator or torch.Generator(device=device).manual_seed(config.seed + i)
    batch_terms = [] if terms is not None else None
    values[i] = _batch_values(config, model, x, flat, gen, method, batch_terms)
    if batch_terms:
      terms[i] = batch_terms[0]
    if not np.isfinite(values[i]).all():  # never cached; the summary reports null
      logging.warning('likelihood (%s) of batch %d is not finite for %d of %d examples: the '
                      "checkpoint's weights may be NaN", method, i,
                      int((~np.isfinite(values[i])).sum()), len(x))
    elif cached:
      write_output(cached, lambda p: ckpt.save_npy(p, values[i]))
  return values


def summary(values: np.ndarray) -> tuple[float | None, float | None]:
  """Mean and standard error of per-example values: None for the error of a single value, and
  None for both (with a warning) if any value is not finite (JSON has no NaN)."""
  if not np.isfinite(values).all():
    logging.warning('%d of %d likelihood values are not finite: reported as null',
                    int((~np.isfinite(values)).sum()), len(values))
    return None, None
  se = float(values.std(ddof=1) / np.sqrt(len(values))) if len(values) > 1 else None
  return float(values.mean()), se


__all__ = ['eval_checkpoints', 'eval_samples', 'reference_stats', 'quality_reference',
           'sample_quality', 'likelihood_values', 'likelihood_batches', 'summary']
