"""Reference statistics for FID / KID / precision-recall, read from the files other code bases
publish, so that our numbers can be put next to theirs:

  - ours (and pytorch-fid's / clean-fid's): `mu` `[D]`, `sigma` `[D, D]`, optionally our raw
    features `pool3` `[N, D]` (KID and precision / recall need features; without them they are
    reported as null);
  - score_sde's `<dataset>_stats.npz`: the raw pool features `pool_3` `[N, D]`, from which mu and
    the unbiased covariance are computed here;
  - ADM's (guided-diffusion) reference batches: images `arr_0` `[N, H, W, C]` uint8 (NHWC), with
    or without precomputed `mu` / `sigma` (whole-dataset statistics, used for FID when present;
    `mu_s` / `sigma_s`, the spatial features of sFID, are ignored). The images' features are
    computed with our Inception network, for KID and precision / recall (and FID without mu).

Every problem is one line naming the file.
"""
from __future__ import annotations

import numpy as np

from score_sde.evaluation.metrics import feature_statistics
from score_sde.evaluation.stats import FeatureStats, _stats_problem, read_npz

FORMATS = ('mu_sigma', 'score_sde_pool_3', 'adm_arr_0')


def _features_problem(feats: np.ndarray, dim: int | None) -> str | None:
  if feats.dtype.kind not in 'fiu' or feats.ndim != 2 or feats.shape[0] < 2:
    return f'features of shape {feats.shape} and dtype {feats.dtype}, expected [N >= 2, D] floats'
  if dim is not None and feats.shape[1] != dim:
    return f'features have dimension {feats.shape[1]}, the Inception features have {dim}'
  if not np.isfinite(feats).all():
    return 'features are not finite'
  return None


def _images_problem(images: np.ndarray) -> str | None:
  if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] not in (1, 3) \
      or images.shape[0] < 2:
    return (f'arr_0 of shape {images.shape} and dtype {images.dtype}, expected uint8 images '
            '[N >= 2, H, W, 1 or 3] (NHWC, as ADM writes them)')
  return None


def read_reference(path: str, dim: int | None = None, featurize=None) -> tuple[FeatureStats, str]:
  """(FeatureStats, format) of a reference file in any of FORMATS (see the module docstring).

  `featurize(images uint8 [N, C, H, W]) -> features [N, D]` computes features of ADM images
  (None: such a file is refused). Raises a one-line ValueError naming the file."""
  arrays = read_npz(path, 'unreadable Inception stats file',
                    'give an .npz file (or delete a cached one to recompute)')
  bad = lambda problem: ValueError(f'bad Inception stats file {path}: {problem}')
  if 'arr_0' in arrays:
    images = arrays['arr_0']
    problem = _images_problem(images)
    if problem:
      raise bad(problem)
    if featurize is None:
      raise bad('ADM reference images (arr_0) need the Inception network to compute features')
    feats = np.asarray(featurize(np.ascontiguousarray(images.transpose(0, 3, 1, 2))))
    given = {k: arrays[k] for k in ('mu', 'sigma') if k in arrays}
    if given:
      problem = _stats_problem(given, dim)
      if problem:
        raise bad(problem)
      return FeatureStats(given['mu'].astype(np.float64), given['sigma'].astype(np.float64),
                          feats), 'adm_arr_0'
    mu, sigma = feature_statistics(feats)
    return FeatureStats(mu, sigma, feats), 'adm_arr_0'
  if 'pool_3' in arrays and 'mu' not in arrays:
    feats = arrays['pool_3']
    problem = _features_problem(feats, dim)
    if problem:
      raise bad(f'pool_3: {problem}')
    mu, sigma = feature_statistics(feats)
    return FeatureStats(mu, sigma, feats.astype(np.float32)), 'score_sde_pool_3'
  problem = _stats_problem(arrays, dim)
  if problem:
    if 'mu' not in arrays and 'sigma' not in arrays:
      problem = (f"found keys {sorted(arrays)}; expected 'mu' and 'sigma' (ours, pytorch-fid, "
                 "clean-fid), 'pool_3' (score_sde) or 'arr_0' (ADM reference batch)")
    raise ValueError(f'corrupt Inception stats cache {path}: {problem}; delete it to recompute')
  mu, sigma, pool3 = arrays['mu'], arrays['sigma'], arrays.get('pool3')
  return FeatureStats(mu.astype(np.float64), sigma.astype(np.float64), pool3), 'mu_sigma'


__all__ = ['FORMATS', 'read_reference']
