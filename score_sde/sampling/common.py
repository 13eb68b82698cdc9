"""Pieces every solver shares: NFE counting, the Tweedie denoising step and time grids."""
from __future__ import annotations

import dataclasses

import torch

from score_sde.conventions import x0_from_score
from score_sde.sdes import SDE
from score_sde.utils import full_t


@dataclasses.dataclass
class SampleResult:
  """x: samples `[B, ...]` at time 0 (denoised) or eps; nfe: score evaluations (one per
  batched call); trajectory: optional list of intermediate states."""
  x: torch.Tensor
  nfe: int
  trajectory: list | None = None


class CountingScore:
  """Wraps `score_fn(x, t)` and counts its (batched) evaluations."""

  def __init__(self, score_fn):
    self.score_fn = score_fn
    self.nfe = 0

  def __call__(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    self.nfe += 1
    return self.score_fn(x, t)

  @property
  def score_and_variance(self):
    """The wrapped function's `score_and_variance` (learned variances), also counted."""
    both = getattr(self.score_fn, 'score_and_variance', None)
    if both is None:
      return None

    def counted(x, t):
      self.nfe += 1
      return both(x, t)
    return counted


def tweedie_denoise(sde: SDE, score_fn, x: torch.Tensor, t: float) -> torch.Tensor:
  """E[x_0 | x_t] = (x + sigma(t)^2 s(x, t)) / alpha(t) (Tweedie's formula; Efron 2011).

  One score evaluation; the "noise removal" final step of Song et al. 2021 (App. G).
  """
  tt = full_t(t, x.shape[0], x)
  alpha, std = sde.mean_coeff(tt), sde.marginal_std(tt)
  return x0_from_score(x, score_fn(x, tt), alpha, std)


def uniform_time_grid(sde: SDE, steps: int, eps: float, device) -> torch.Tensor:
  """`steps` times equally spaced from T down to eps (inclusive): score_sde's PC grid."""
  return torch.linspace(sde.T, eps, steps, device=device)


def check_options(solver: str, options: dict, allowed) -> None:
  """Reject unknown keyword options with a one-line message."""
  unknown = sorted(set(options) - set(allowed))
  if unknown:
    raise ValueError(f"unknown option(s) {', '.join(unknown)} for solver '{solver}'; "
                     f"allowed: {', '.join(sorted(allowed)) or 'none'}")
