"""The discrete chain of an SDE (Song et al. 2021, App. B): DDPM's for VP (Ho et al. 2020),
SMLD's for VE (Song & Ermon 2019), `sde.chain`; sub-VP has none (`sde.chain is None`).

The chain has N levels i = 0 .. N-1 at the times t_i = i T / (N - 1) (`sde.time_of_index`) and
the perturbation kernel x_i = alpha_i x_0 + sigma_i z; i = -1 is the data, (alpha, sigma) = (1, 0).
DDPM: alpha_i = sqrt(abar_i), sigma_i = sqrt(1 - abar_i); SMLD: alpha_i = 1, sigma_i the
geometric noise levels (`sdes.smld_sigmas`).
"""
from __future__ import annotations

from typing import Callable

import torch


class DiscreteChain:
  """`sde`'s N-level chain with kernel `kernel(i [B] long) -> (alpha_i, sigma_i)` float64 `[B]`
  (valid for i >= 0; i = -1 is handled here)."""

  def __init__(self, sde, name: str, kernel: Callable):
    self.sde, self.name, self._kernel = sde, name, kernel

  @property
  def N(self) -> int:
    return self.sde.N

  def kernel(self, i) -> tuple[torch.Tensor, torch.Tensor]:
    """(alpha_i, sigma_i) float64 `[B]` at indices i (int, list or long tensor `[B]`), on i's
    device; (1, 0) at i = -1 (the data)."""
    i = torch.as_tensor(i).long()
    alpha, sigma = self._kernel(i.clamp(min=0))
    data = i < 0
    return (torch.where(data, torch.ones_like(alpha), alpha),
            torch.where(data, torch.zeros_like(sigma), sigma))

  def step(self, i: torch.Tensor):
    """(a, G^2, r) `[B]` float64 of the step x_i = a x_{i-1} + G z into levels i `[B]`, with
    r = sigma_{i-1}^2 / sigma_i^2 (the posterior variance of x_{i-1} is r G^2)."""
    (a_t, s_t), (a_s, s_s) = self.kernel(i), self.kernel(i - 1)
    a = a_t / a_s
    return a, (s_t ** 2 - a ** 2 * s_s ** 2).clamp_min(0.0), s_s ** 2 / s_t ** 2


__all__ = ['DiscreteChain']
