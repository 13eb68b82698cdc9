"""Sample-quality reports for `--mode eval`: FID / IS / KID for images, sliced-W2 and moment
errors for low-dimensional (toy) data. Inputs are samples already in data space.
"""
from __future__ import annotations

import logging
from typing import Iterable

import numpy as np
import torch

from score_sde.evaluation.metrics import (feature_statistics, frechet_distance, inception_score,
                                          kernel_inception_distance, kid_blocks,
                                          random_directions, sliced_w2)
from score_sde.evaluation.precision_recall import precision_recall
from score_sde.evaluation.stats import FeatureStats, compute_activations


def image_quality(images: Iterable[torch.Tensor], num_images: int, inception, reference: FeatureStats,
                  device, kid_subset_size: int = 1000, batch_size: int = 50,
                  fid_method: str = 'sqrtm', is_splits: int = 10, kid_subsets: int = 100,
                  pr_k: int = 3) -> dict:
  """FID against `reference` (Heusel et al. 2017), IS (Salimans et al. 2016), KID (Binkowski et
  al. 2018) and improved precision / recall (Kynkaanniemi et al. 2019) of image batches
  `[B, C, H, W]` in [0, 1] (or uint8), with the conventions used under 'metric_conventions'.

  IS: `is_splits` contiguous splits (10 as Salimans et al. / ADM; 1 as score_sde and TF-GAN's
  classifier_score: all samples at once), from the logits with the fc bias. KID:
  `kid_subsets` random subsets of min(kid_subset_size, N samples, N reference) rows (seed 0), or
  with kid_subsets 0 TF-GAN's estimator over contiguous blocks of at most 1024 (what score_sde
  reports: the full sets below 1025 rows). KID and precision / recall (k = pr_k nearest
  neighbours, 0: skipped) need `reference.pool3` (the reference features); without them they
  are None. `fid_method`: see `frechet_distance`.
  """
  acts = compute_activations(images, inception, device, batch_size, num_images)
  mu, sigma = feature_statistics(acts.pool3)
  out = {'fid': frechet_distance(mu, sigma, reference.mu, reference.sigma, method=fid_method)}
  splits = min(is_splits, len(acts.logits))
  out['inception_score'], out['inception_score_std'] = inception_score(acts.logits, splits=splits)
  out['kid'] = out['kid_std'] = out['precision'] = out['recall'] = None
  ref = reference.pool3
  size = min(kid_subset_size, len(acts.pool3), len(ref)) if ref is not None else 0
  kid = ('TF-GAN blocks of <= 1024 rows (std: standard error)' if kid_subsets == 0 else
         f'{kid_subsets} random subsets of {size} (std over subsets)')
  if ref is not None and kid_subsets == 0:
    try:
      out['kid'], out['kid_std'] = kid_blocks(ref, acts.pool3)
    except ValueError as e:  # fewer than 2 samples per block of the reference
      logging.warning('KID not computed: %s', e)
  elif ref is not None:
    if size >= 2:
      out['kid'], out['kid_std'] = kernel_inception_distance(
          acts.pool3, ref, subsets=kid_subsets, subset_size=size, generator=0)
  if ref is not None and pr_k > 0 and min(len(ref), len(acts.pool3)) > pr_k:
    out['precision'], out['recall'] = precision_recall(ref, acts.pool3, k=pr_k, device=device)
  out['metric_conventions'] = {
      'inception_resize': getattr(inception, 'resize_mode', 'torch'),
      'inception_score': f'{splits} split(s), logits with the fc bias',
      'kid': kid if ref is not None else 'none (the reference has no features)',
      'precision_recall_k': pr_k if ref is not None else None,
      'fid_method': fid_method}
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
