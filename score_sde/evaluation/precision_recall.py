"""Improved precision and recall (Kynkaenniemi et al. 2019, "Improved Precision and Recall
Metric for Assessing Generative Models"), as ADM's evaluator (guided-diffusion) reports them.

Each feature set estimates its manifold as the union of balls around its points, each ball's
radius the distance to the point's k-th nearest other point (k = 3). Precision: the fraction of
samples inside the reference manifold; recall: the fraction of reference points inside the
samples' manifold. A point at distance exactly equal to a radius counts as inside.
Distances are computed in blocks (memory O(block * N)) on `device`, in float64 on the CPU and
float32 on a GPU (ADM uses float16 where it is finite).
"""
from __future__ import annotations

import numpy as np
import torch


def _sq_dists(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
  """Squared Euclidean distances `[len(a), len(b)]`, clamped at 0."""
  d = (a * a).sum(1, keepdim=True) - 2.0 * a @ b.T + (b * b).sum(1)[None]
  return d.clamp_min(0.0)


def knn_radii(feats: torch.Tensor, k: int = 3, block: int = 1024) -> torch.Tensor:
  """Squared distance `[N]` of each point to its k-th nearest other point (the point itself,
  at distance 0, is the 0-th)."""
  if not 1 <= k < len(feats):
    raise ValueError(f'precision / recall need more than k = {k} points per set, got {len(feats)}')
  out = []
  for start in range(0, len(feats), block):
    d = _sq_dists(feats[start:start + block], feats)
    rows = torch.arange(d.shape[0], device=d.device)
    d[rows, rows + start] = 0.0  # exactly 0 for the point itself (round-off aside)
    out.append(d.kthvalue(k + 1, dim=1).values)
  return torch.cat(out)


def _covered(points: torch.Tensor, centres: torch.Tensor, radii: torch.Tensor,
             block: int) -> torch.Tensor:
  """Bool `[len(points)]`: inside some ball (centres, squared radii)."""
  out = []
  for start in range(0, len(points), block):
    out.append((_sq_dists(points[start:start + block], centres) <= radii[None]).any(1))
  return torch.cat(out)


def precision_recall(reference, samples, k: int = 3, device='cpu',
                     block: int = 1024) -> tuple[float, float]:
  """(precision, recall) of sample features `[N, D]` against reference features `[M, D]`."""
  device = torch.device(device)
  dtype = torch.float64 if device.type == 'cpu' else torch.float32
  ref = torch.as_tensor(np.asarray(reference), device=device).to(dtype)
  gen = torch.as_tensor(np.asarray(samples), device=device).to(dtype)
  if ref.ndim != 2 or gen.ndim != 2 or ref.shape[1] != gen.shape[1]:
    raise ValueError(f'precision / recall need features [M, D] and [N, D], got '
                     f'{tuple(ref.shape)} and {tuple(gen.shape)}')
  r_ref, r_gen = knn_radii(ref, k, block), knn_radii(gen, k, block)
  precision = _covered(gen, ref, r_ref, block).double().mean()
  recall = _covered(ref, gen, r_gen, block).double().mean()
  return float(precision), float(recall)


__all__ = ['knn_radii', 'precision_recall']
