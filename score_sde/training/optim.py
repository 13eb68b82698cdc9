"""Adam with linear learning-rate warm-up and gradient-norm clipping, as in score_sde
(Song et al. 2021, App. H: lr 2e-4, 5000 warm-up steps, clip 1)."""
from __future__ import annotations

import math

import torch

OPTIMIZERS = {'adam': torch.optim.Adam, 'adamw': torch.optim.AdamW}


def learning_rate(step: int, lr: float, warmup: int) -> float:
  """lr * min(step / warmup, 1): linear warm-up from 0 (step counts from 1)."""
  return lr * min(step / warmup, 1.0) if warmup > 0 else lr


def optimization_step(optimizer, params, step: int, lr: float, warmup: int,
                      grad_clip: float) -> torch.Tensor:
  """Set the warmed-up lr, clip the gradient norm (if grad_clip >= 0) and step.

  Returns the gradient norm before clipping (a 0-d tensor on the device, so that no host sync
  is needed; nan/inf if the gradient is not finite).
  """
  for group in optimizer.param_groups:
    group['lr'] = learning_rate(step, lr, warmup)
  params = [p for p in params if p.grad is not None]
  max_norm = grad_clip if grad_clip >= 0 else math.inf
  norm = torch.nn.utils.clip_grad_norm_(params, max_norm=max_norm)
  optimizer.step()
  return norm.detach()
