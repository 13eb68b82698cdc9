"""Stream images through the FID Inception net and cache reference statistics.

The cache is an `.npz` with `mu` `[D]` and `sigma` `[D, D]` (the keys pytorch-fid uses, so its
precomputed statistics files load too) and, optionally, the raw `pool3` features `[N, D]`
that KID (Binkowski et al. 2018) needs.
"""
from __future__ import annotations

import os
import zipfile
from collections.abc import Callable, Iterable
from typing import NamedTuple

import numpy as np
import torch
from torch import nn

from score_sde.evaluation.metrics import feature_statistics
from score_sde.files.atomic import atomic_file
from score_sde.runtime.progress import progress as progress_bar


class Activations(NamedTuple):
  """Inception outputs for N images, as float32 NumPy arrays (the metrics upcast to float64).

  pool3: `[N, 2048]`; logits: `[N, 1008]`; logits_unbiased: `[N, 1008]` (no fc bias).
  """
  pool3: np.ndarray
  logits: np.ndarray
  logits_unbiased: np.ndarray


class FeatureStats(NamedTuple):
  """Gaussian statistics of pool3 features: mu `[D]`, sigma `[D, D]`, pool3 `[N, D]` or None."""
  mu: np.ndarray
  sigma: np.ndarray
  pool3: np.ndarray | None = None


def _as_image_batch(batch, keep_uint8: bool = False) -> torch.Tensor:
  """A tensor / array `[B, C, H, W]` (floats in [0, 1] or uint8 in [0, 255]) -> float tensor
  (uint8 kept as it is with `keep_uint8`, for a model that takes it: exact pixel values)."""
  images = torch.as_tensor(batch)
  if images.dtype == torch.uint8 and keep_uint8:
    return images
  if images.dtype == torch.uint8:
    return images.float() / 255.0
  if not images.is_floating_point():
    raise TypeError(f'images must be float in [0, 1] or uint8, got {images.dtype}')
  return images


@torch.no_grad()
def compute_activations(images_iter: Iterable, model: nn.Module, device: str | torch.device = 'cpu',
                        batch_size: int = 50, num_images: int | None = None,
                        progress: bool = True) -> Activations:
  """Run every image of `images_iter` through `model`, in chunks of at most `batch_size`.

  Args:
    images_iter: iterable of batches `[B, 3 or 1, H, W]` in [0, 1] (or uint8), any B.
    model: e.g. `FIDInceptionV3`; must return an object with `pool3`, `logits` and
      `logits_unbiased` fields (see `InceptionOutput`).
    device: where the forward passes run.
    num_images: total for the progress bar, if known.
  Returns:
    `Activations` with one row per image, in input order.
  """
  if batch_size < 1:
    raise ValueError(f'batch_size must be >= 1, got {batch_size}')
  outputs: dict[str, list[np.ndarray]] = {name: [] for name in Activations._fields}
  was_training = model.training
  model.eval()
  try:
    with progress_bar(total=num_images, unit='img', desc='Inception', disable=not progress) as bar:
      for batch in images_iter:
        for chunk in torch.split(_as_image_batch(batch, getattr(model, 'takes_uint8', False)),
                                 batch_size):
          out = model(chunk.to(device))
          for name in Activations._fields:
            outputs[name].append(getattr(out, name).detach().cpu().float().numpy())
          bar.update(chunk.shape[0])
  finally:
    model.train(was_training)
  if not outputs['pool3']:
    raise ValueError('compute_activations got no images')
  return Activations(*(np.concatenate(outputs[name]) for name in Activations._fields))


def read_npz(path: str, unreadable: str, advice: str) -> dict:
  """The arrays of a stats `.npz` (never unpickled); a one-line ValueError
  '<unreadable> <path>: <reason>; <advice>' if it cannot be read, or if it is not a regular file
  (a folder, or a FIFO that would block)."""
  if not os.path.isfile(path):
    raise ValueError(f'Inception stats file {path} is not a regular file; give an .npz file')
  try:
    with np.load(path, allow_pickle=False) as data:
      return {key: data[key] for key in data.files}
  except (OSError, ValueError, EOFError, TypeError, AttributeError, zipfile.BadZipFile) as err:
    reason = (str(err).strip().splitlines() or [type(err).__name__])[0]
    if isinstance(err, (TypeError, AttributeError)):
      reason = 'not an .npz archive'
    raise ValueError(f'{unreadable} {path}: {reason}; {advice}') from None


def _load_cache(path: str, dim: int | None = None) -> FeatureStats:
  """Read and validate a stats `.npz` (finite float `mu` `[D]`, `sigma` `[D, D]`, optional `pool3`
  `[N, D]`; D == `dim` if given); any problem is one line naming the file."""
  arrays = read_npz(path, 'corrupt Inception stats cache', 'delete it to recompute')
  problem = _stats_problem(arrays, dim)
  if problem:
    raise ValueError(f'corrupt Inception stats cache {path}: {problem}; delete it to recompute')
  mu, sigma, pool3 = arrays['mu'], arrays['sigma'], arrays.get('pool3')
  return FeatureStats(mu.astype(np.float64), sigma.astype(np.float64), pool3)


def _stats_problem(arrays: dict, dim: int | None) -> str | None:
  """What is wrong with the arrays of a stats file, or None."""
  mu, sigma, pool3 = arrays.get('mu'), arrays.get('sigma'), arrays.get('pool3')
  if mu is None or sigma is None:
    return f"needs keys 'mu' and 'sigma', found {sorted(arrays)}"
  if any(a.dtype.kind not in 'fiu' for a in (mu, sigma, *([pool3] if pool3 is not None else []))):
    return 'mu, sigma and pool3 must be real numbers'
  if mu.ndim != 1 or mu.shape[0] < 1 or sigma.shape != (mu.shape[0], mu.shape[0]):
    return f'mu {mu.shape} and sigma {sigma.shape} do not match'
  if dim is not None and mu.shape[0] != dim:
    return f'mu has dimension {mu.shape[0]}, the Inception features have {dim}'
  if not (np.isfinite(mu).all() and np.isfinite(sigma).all()):
    return 'mu or sigma is not finite'
  if pool3 is not None and (pool3.ndim != 2 or pool3.shape[1] != mu.shape[0]):
    return f'pool3 {pool3.shape} does not match mu {mu.shape}'
  if pool3 is not None and not np.isfinite(pool3).all():
    return 'pool3 is not finite'
  return None


def _save_cache(path: str, stats: FeatureStats) -> None:
  """Write the cache atomically (an O_EXCL temporary file + rename, score_sde.files.atomic), so a
  crash never leaves half a file and a planted link is never written through."""
  arrays = {'mu': stats.mu, 'sigma': stats.sigma}
  if stats.pool3 is not None:
    arrays['pool3'] = stats.pool3
  with atomic_file(path) as f:  # a file object stops np.savez from appending '.npz'
    np.savez(f, **arrays)


def load_or_compute_stats(cache_path: str | os.PathLike | None,
                          images_iter_fn: Callable[[], Iterable], model: nn.Module,
                          device: str | torch.device = 'cpu', batch_size: int = 50,
                          keep_features: bool = False, num_images: int | None = None,
                          progress: bool = True) -> FeatureStats:
  """Pool3 statistics of a dataset, read from `cache_path` if present, else computed and saved.

  Args:
    cache_path: `.npz` file; None or '' disables caching.
    images_iter_fn: called (only on a cache miss) to get a fresh iterable of image batches.
    keep_features: also return (and cache) the pool3 features `[N, 2048]`, e.g. for KID. A
      cache without them is recomputed and rewritten.
  Raises:
    ValueError (one line) if the cache exists but is unreadable or inconsistent.
  """
  cache_path = os.fspath(cache_path) if cache_path else None
  if cache_path and os.path.exists(cache_path):
    stats = _load_cache(cache_path)
    if stats.pool3 is not None or not keep_features:
      return stats if keep_features else stats._replace(pool3=None)
  acts = compute_activations(images_iter_fn(), model, device, batch_size, num_images, progress)
  mu, sigma = feature_statistics(acts.pool3)
  stats = FeatureStats(mu, sigma, acts.pool3 if keep_features else None)
  if cache_path:
    _save_cache(cache_path, stats)
  return stats
