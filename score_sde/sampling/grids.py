"""Time grids of the exponential-integrator solvers (dpm_solver, unipc): named grids from T
down to eps (uniform in t, uniform in the half log-SNR lambda = log(alpha/sigma), or the Karras
rho = 7 grid of sigma_e = exp(-lambda); Karras et al. 2022, Eq. 5) or explicit times. The
model-tuned grid='optimized' lives in `optimized_grid` (resolved by `sampling.sample`)."""
from __future__ import annotations

import math

import torch

from score_sde.sampling.common import check_times
from score_sde.sampling.heun import karras_sigmas
from score_sde.sdes import SDE

GRIDS = ('time_uniform', 'logsnr', 'karras')


class Schedule:
  """alpha, sigma, lambda at float times (float64), and t(lambda)."""

  def __init__(self, sde: SDE):
    self.sde = sde

  def __call__(self, t: float):
    tt = torch.tensor([t], dtype=torch.float64)
    return (float(self.sde.mean_coeff(tt)), float(self.sde.marginal_std(tt)),
            float(self.sde.log_snr(tt)))

  def t_of(self, lam: float) -> float:
    return float(self.sde.t_from_log_snr(torch.tensor([lam], dtype=torch.float64)))


def time_grid(sde: SDE, steps: int, eps: float, grid: str) -> list[float]:
  """steps + 1 times from T down to eps, uniform in t, in lambda, or on the Karras rho = 7 grid
  of sigma_e = exp(-lambda) (Karras et al. 2022, Eq. 5)."""
  sched = Schedule(sde)
  if grid == 'time_uniform':
    return torch.linspace(sde.T, eps, steps + 1, dtype=torch.float64).tolist()
  lam_t, lam_e = sched(sde.T)[2], sched(eps)[2]
  if grid == 'logsnr':
    lams = torch.linspace(lam_t, lam_e, steps + 1, dtype=torch.float64).tolist()
  elif grid == 'karras':
    lams = [-math.log(s) for s in karras_sigmas(math.exp(-lam_e), math.exp(-lam_t), steps)]
  else:
    raise ValueError(f"unknown grid '{grid}'; choose one of: {', '.join(GRIDS)}")
  return [sde.T] + [sched.t_of(l) for l in lams[1:-1]] + [eps]


def resolve_grid(sde: SDE, steps: int, eps: float, grid: str, ts=None) -> list[float]:
  """`ts` as a list of floats (strictly decreasing, within (0, T], at least 2), or the named
  `grid` of `steps` intervals from T to eps."""
  if ts is None:
    if grid == 'optimized':
      raise ValueError("grid='optimized' needs the model: use score_sde.sampling.sample (which tunes "
                       'and caches it), or pass ts=optimized_grid(...) from score_sde.sampling.optimized_grid')
    return time_grid(sde, steps, eps, grid)
  return check_times(sde, ts)


__all__ = ['GRIDS', 'Schedule', 'time_grid', 'resolve_grid', 'check_times']
