"""Exponential moving average of the weights (Polyak averaging), as in score_sde.

The state dict has score_sde_pytorch's layout, `{'decay', 'num_updates', 'shadow_params'}`
with `shadow_params` a list in `model.parameters()` order, so its checkpoints load as is.
"""
from __future__ import annotations

import torch


class ExponentialMovingAverage:
  """theta_ema <- d theta_ema + (1 - d) theta, with the warm-up d = min(decay, (1+n)/(10+n))."""

  def __init__(self, parameters, decay: float, use_num_updates: bool = True):
    if not 0.0 <= decay <= 1.0:
      raise ValueError(f'EMA decay must be in [0, 1], got {decay}')
    self.decay = decay
    self.num_updates = 0 if use_num_updates else None
    self.shadow_params = [p.detach().clone() for p in parameters if p.requires_grad]
    self.collected_params: list[torch.Tensor] = []

  @torch.no_grad()
  def update(self, parameters) -> None:
    decay = self.decay
    if self.num_updates is not None:
      self.num_updates += 1
      decay = min(decay, (1 + self.num_updates) / (10 + self.num_updates))
    params = [p for p in parameters if p.requires_grad]
    torch._foreach_lerp_(self.shadow_params, [p.detach() for p in params], 1.0 - decay)

  @torch.no_grad()
  def copy_to(self, parameters) -> None:
    for s, p in zip(self.shadow_params, [p for p in parameters if p.requires_grad]):
      p.copy_(s)

  def store(self, parameters) -> None:
    self.collected_params = [p.detach().clone() for p in parameters]

  @torch.no_grad()
  def restore(self, parameters) -> None:
    for c, p in zip(self.collected_params, parameters):
      p.copy_(c)

  def state_dict(self) -> dict:
    return {'decay': self.decay, 'num_updates': self.num_updates,
            'shadow_params': self.shadow_params}

  def load_state_dict(self, state: dict) -> None:
    shadow = state['shadow_params']
    if len(shadow) != len(self.shadow_params):
      raise ValueError(f'EMA has {len(shadow)} tensors, model has {len(self.shadow_params)}')
    for i, (s, mine) in enumerate(zip(shadow, self.shadow_params)):
      if s.shape != mine.shape:
        raise ValueError(f'EMA tensor {i} has shape {tuple(s.shape)}, model expects {tuple(mine.shape)}')
    self.decay, self.num_updates = state['decay'], state['num_updates']
    self.shadow_params = [s.to(m.device, m.dtype) for s, m in zip(shadow, self.shadow_params)]

