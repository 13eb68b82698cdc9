"""Sample-quality reports for `--mode eval`: FID / IS / KID for images, sliced-W2 and moment
errors for low-dimensional (toy) data. Inputs are samples already in data space.
"""
from __future__ import annotations

from typing import Iterable

import numpy as np
import torch

from score_sde.evaluation.metrics import (feature_statistics, frechet_distance, inception_score,
                                          kernel_inception_distance, random_directions, sliced_w2)
from score_sde.evaluation.stats import FeatureStats, compute_activations


def image_quality(images: Iterable[torch.Tensor], num_images: int, inception, reference: FeatureStats,
                  device, kid_subset_size: int = 1000, batch_size: int = 50,
                  fid_method: str = 'sqrtm') -> dict:
  """FID against `reference` (Heusel et al. 2017), IS (10 splits, Salimans et al. 2016) and KID
  (Binkowski et al. 2018) of image batches `[B, C, H, W]` in [0, 1] (or uint8).

  KID needs `reference.pool3` (the dataset's features); it is skipped (None) without them.
  Its subset size is min(kid_subset_size, N samples, N reference). `fid_method`: see
  `frechet_distance`.
  """
  acts = compute_activations(images, inception, device, batch_size, num_images)
  mu, sigma = feature_statistics(acts.pool3)
  out = {'fid': frechet_distance(mu, sigma, reference.mu, reference.sigma, method=fid_method)}
  out['inception_score'], out['inception_score_std'] = inception_score(
      acts.logits, splits=min(10, len(acts.logits)))
  out['kid'] = out['kid_std'] = None
  if reference.pool3 is not None:
    size = min(kid_subset_size, len(acts.pool3), len(reference.pool3))
    if size >= 2:
      out['kid'], out['kid_std'] = kernel_inception_distance(acts.pool3, reference.pool3,
                                                             subset_size=size)
  return out


def point_quality(x, reference, num_directions: int = 256, seed: int = 0) -> dict:
  """Sliced-W2 between samples x `[n, D]` and reference data `[m, D]`, and the errors of the
  sample mean (L2 norm) and covariance (Frobenius norm) against the reference's."""
  x, ref = np.asarray(x, dtype=np.float64), np.asarray(reference, dtype=np.float64)
  proj = random_directions(x.shape[1], num_directions, seed)
  return {'sliced_w2': sliced_w2(x, ref, proj),
          'mean_error': float(np.linalg.norm(x.mean(0) - ref.mean(0))),
          'cov_error': float(np.linalg.norm(np.cov(x.T) - np.cov(ref.T)))}


__all__ = ['image_quality', 'point_quality']
