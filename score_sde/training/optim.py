"""Adam with linear learning-rate warm-up and gradient-norm clipping, as in score_sde
(Song et al. 2021, App. H: lr 2e-4, 5000 warm-up steps, clip 1)."""
from __future__ import annotations

import math

import torch

OPTIMIZERS = {'adam': torch.optim.Adam, 'adamw': torch.optim.AdamW}


def get_optimizer(config, params):
  """The optimizer named by `config.optim.optimizer` (fused kernels on CUDA if asked)."""
  o = config.optim
  name = o.optimizer.lower()
  if name not in OPTIMIZERS:
    raise ValueError(f"unknown optimizer '{o.optimizer}'; choose one of: {', '.join(OPTIMIZERS)}")
  params = list(params)
  fused = bool(o.fused) and all(p.is_cuda for p in params)
  return OPTIMIZERS[name](params, lr=o.lr, betas=(o.beta1, 0.999), eps=o.eps,
                          weight_decay=o.weight_decay, fused=fused or None)


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
