"""Time grids of every solver and the one float64 evaluator of the perturbation kernel they
share (heun, dpm_solver, unipc and the grid tuner).

A grid is a list of floats from T down to the end time (eps, or 0 for the chain solvers and
pc's last predictor step), one more than the steps that walk it. `sampling.sample` resolves
`steps` / `grid` / `ts` into such a list once (`SolverSpec.times`, `resolve_times`) and the
solvers receive it. The named grids: uniform in t, uniform in the half log-SNR
lambda = log(alpha/sigma), the Karras rho grid of EDM's sigma_e = sigma/alpha = exp(-lambda)
(Karras et al. 2022, Eq. 5) and the chain grid of a discrete SDE's table times; the
model-tuned grid='optimized' is in `optimized_grid`.
"""
from __future__ import annotations

import math

import torch

from score_sde.maths.chain_posterior import leading_indices
from score_sde.sampling.common import check_times
from score_sde.maths.sdes import SDE

GRIDS = ('time_uniform', 'logsnr', 'karras')  # named grids of the exponential integrators


class KernelAt:
  """The perturbation kernel x_t = alpha(t) x0 + sigma(t) z of `sde` at float times, in
  float64: alpha, sigma, lambda = log(alpha/sigma) and EDM's sigma_e = sigma/alpha =
  exp(-lambda) (Karras et al.'s sigma(t) with s(t) = alpha(t)), and the inverse maps t(lambda),
  t(sigma_e). Each takes a float (returns a float) or a list of floats (returns a list,
  evaluated as one tensor)."""

  def __init__(self, sde: SDE):
    self.sde = sde

  def _eval(self, fn, t):
    if isinstance(t, (list, tuple)):
      return fn(torch.tensor(t, dtype=torch.float64)).tolist()
    return float(fn(torch.tensor([float(t)], dtype=torch.float64)))

  def alpha(self, t):
    return self._eval(self.sde.mean_coeff, t)

  def sigma(self, t):
    return self._eval(self.sde.marginal_std, t)

  def lam(self, t):
    return self._eval(self.sde.log_snr, t)

  def __call__(self, t: float) -> tuple[float, float, float]:
    """(alpha, sigma, lambda) at the float time t."""
    return self.alpha(t), self.sigma(t), self.lam(t)

  def t_of_lam(self, lam):
    return self._eval(self.sde.t_from_log_snr, lam)

  def sigma_e(self, t: float) -> float:
    return math.exp(-self.lam(t))

  def t_of_sigma_e(self, sigma_e: float) -> float:
    return self.t_of_lam(-math.log(sigma_e))


def karras_sigmas(sigma_min: float, sigma_max: float, n: int, rho: float = 7.0) -> list[float]:
  """Karras et al. Eq. 5: n + 1 values from sigma_max down to sigma_min (n intervals)."""
  a, b = sigma_max ** (1 / rho), sigma_min ** (1 / rho)
  return [(a + k / n * (b - a)) ** rho for k in range(n + 1)]


def uniform_grid(sde: SDE, steps: int, eps: float) -> list[float]:
  """steps + 1 times equally spaced from T down to eps (float64)."""
  return torch.linspace(sde.T, eps, steps + 1, dtype=torch.float64).tolist()


def karras_grid(sde: SDE, steps: int, eps: float, rho: float = 7.0) -> list[float]:
  """steps + 1 times: Eq. 5 of Karras et al. in sigma_e from sigma_e(T) down to sigma_e(eps),
  mapped back to t (the ends are exactly T and eps)."""
  k = KernelAt(sde)
  sig = karras_sigmas(k.sigma_e(eps), k.sigma_e(sde.T), steps, rho)
  return [sde.T] + [k.t_of_sigma_e(s) for s in sig[1:-1]] + [eps]


def logsnr_grid(sde: SDE, steps: int, eps: float) -> list[float]:
  """steps + 1 times uniform in lambda from lambda(T) to lambda(eps)."""
  k = KernelAt(sde)
  lams = torch.linspace(k.lam(sde.T), k.lam(eps), steps + 1, dtype=torch.float64).tolist()
  return [sde.T] + [k.t_of_lam(l) for l in lams[1:-1]] + [eps]


def time_grid(sde: SDE, steps: int, eps: float, grid: str) -> list[float]:
  """The named `grid` (one of GRIDS) of steps + 1 times from T down to eps."""
  if grid == 'time_uniform':
    return uniform_grid(sde, steps, eps)
  if grid == 'logsnr':
    return logsnr_grid(sde, steps, eps)
  if grid == 'karras':
    return karras_grid(sde, steps, eps)
  if grid == 'optimized':
    raise ValueError("grid='optimized' needs the model: use score_sde.sampling.sample (which tunes "
                     'and caches it), or pass ts=optimized_grid(...) from score_sde.sampling.optimized_grid')
  raise ValueError(f"unknown grid '{grid}'; choose one of: {', '.join(GRIDS)}")


def chain_grid(sde: SDE, steps: int) -> list[float]:
  """The times of the table indices a chain solver visits (the leading subsequence of `steps`
  of the N indices, `sde.time_of_index`), from the last down, then 0 (the data): steps + 1."""
  return [sde.time_of_index(i) for i in leading_indices(sde.N, steps)[::-1]] + [0.0]


def times_of_lambdas(sde: SDE, lams: list[float], eps: float) -> list[float]:
  """[T, t(lams[1:-1]) ..., eps]: a grid given by its half log-SNRs (the ends kept exact)."""
  return [sde.T] + KernelAt(sde).t_of_lam(list(lams[1:-1])) + [eps]


__all__ = ['GRIDS', 'KernelAt', 'karras_sigmas', 'uniform_grid', 'karras_grid', 'logsnr_grid',
           'time_grid', 'chain_grid', 'times_of_lambdas', 'check_times']
