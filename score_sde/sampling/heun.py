"""EDM samplers (Karras et al. 2022, "Elucidating the Design Space...", Alg. 1 and 2) for any SDE.

Any perturbation kernel x_t = alpha(t) x0 + sigma(t) z becomes EDM's x_hat = x0 + sigma_e z
in the scaled variable x_hat = x/alpha with sigma_e = sigma/alpha = exp(-lambda(t)); time is
recovered from sigma_e with `sde.t_from_log_snr(-log sigma_e)`. The denoiser is
D(x_hat; sigma_e) = (x + sigma^2 s(x, t))/alpha (Tweedie), and the PF-ODE is
dx_hat/dsigma_e = (x_hat - D)/sigma_e (Karras et al. Eq. 1 with s(t) = 1, sigma(t) = t).
Works for VP, sub-VP and VE.
"""
from __future__ import annotations

import math

import torch

from score_sde.sampling.common import check_times, tweedie_denoise
from score_sde.sdes import SDE
from score_sde.utils import randn_like


def karras_sigmas(sigma_min: float, sigma_max: float, n: int, rho: float = 7.0) -> list[float]:
  """Karras et al. Eq. 5: n + 1 values from sigma_max down to sigma_min (n intervals)."""
  a, b = sigma_max ** (1 / rho), sigma_min ** (1 / rho)
  return [(a + k / n * (b - a)) ** rho for k in range(n + 1)]


def sigma_edm(sde: SDE, t: float) -> float:
  """sigma_e(t) = sigma(t)/alpha(t) = exp(-lambda(t)) (a float)."""
  return math.exp(-float(sde.log_snr(torch.tensor([float(t)], dtype=torch.float64))))


def time_of_sigma(sde: SDE, sigma_e: float) -> float:
  """t with sigma_e(t) = sigma_e, via `sde.t_from_log_snr`."""
  return float(sde.t_from_log_snr(torch.tensor([-math.log(sigma_e)], dtype=torch.float64)))


def _alpha(sde: SDE, t: float) -> float:
  return float(sde.mean_coeff(torch.tensor([t], dtype=torch.float64)))


class EDMDenoiser:
  """D(x_hat `[B, ...]`; sigma_e) -> `[B, ...]` from any score_fn: x0 = (x + sigma^2 s)/alpha."""

  def __init__(self, sde: SDE, score_fn):
    self.sde, self.score_fn = sde, score_fn

  def __call__(self, x_hat: torch.Tensor, sigma_e: float) -> torch.Tensor:
    t = time_of_sigma(self.sde, sigma_e)
    return tweedie_denoise(self.sde, self.score_fn, _alpha(self.sde, t) * x_hat, t)


def heun_grid(sde: SDE, steps: int, eps: float, rho: float = 7.0) -> list[float]:
  """The `steps + 1` times of `edm_sample`'s default grid: Karras et al. Eq. 5 in sigma_e from
  sigma_e(T) down to sigma_e(eps), mapped back to t (the ends are exactly T and eps)."""
  return _named_grid(sde, steps, eps, rho)[0]


def _named_grid(sde: SDE, steps: int, eps: float, rho: float):
  """(times, sigma_e) of the default grid; the sigmas straight from Eq. 5 (no round trip via t)."""
  sig = karras_sigmas(sigma_edm(sde, eps), sigma_edm(sde, sde.T), steps, rho)
  return [sde.T] + [time_of_sigma(sde, s) for s in sig[1:-1]] + [eps], sig


def edm_sample(sde: SDE, score_fn, x: torch.Tensor, *, steps: int | None = None, eps: float = 1e-3,
               denoise: bool = True, generator=None, rho: float = 7.0, s_churn: float = 0.0,
               s_tmin: float = 0.0, s_tmax: float = float('inf'), s_noise: float = 1.0,
               ts=None, callback=None, progress=None) -> torch.Tensor:
  """Karras et al. 2022 Alg. 2 (Alg. 1 when s_churn = 0) from x_T `[B, ...]` at t = T.

  `steps` (default 18) intervals of the rho-grid from sigma_e(T) to sigma_e(eps) (`heun_grid`),
  or explicit decreasing times `ts` (x is at ts[0]): Heun on all but the last, Euler on the
  last (NFE = 2 steps - 1), then Tweedie at ts[-1] if `denoise`. Churn: gamma =
  min(s_churn/steps, sqrt(2) - 1) for s_tmin <= sigma_e <= s_tmax (in sigma_e units); the added
  noise is drawn from `generator`. `callback(i, t, x, denoised)` after step i (1..steps) with
  x `[B, ...]` at t and the denoiser's output D at the step's start (k-diffusion's convention).
  Returns x at t = 0 (or ts[-1]) `[B, ...]`.
  """
  if ts is None:
    ts, sig = _named_grid(sde, steps or 18, eps, rho)
  else:
    ts = check_times(sde, ts)
    sig = [sigma_edm(sde, t) for t in ts]
  steps = len(ts) - 1
  denoiser = EDMDenoiser(sde, score_fn)
  x_hat = x / _alpha(sde, ts[0])
  idx = range(steps)
  for i in (progress(idx) if progress else idx):
    s_cur, s_next = sig[i], sig[i + 1]
    gamma = min(s_churn / steps, math.sqrt(2) - 1) if s_tmin <= s_cur <= s_tmax else 0.0
    if gamma > 0:  # Alg. 2 lines 5-6: increase noise temporarily
      s_hat = s_cur * (1 + gamma)
      x_hat = x_hat + math.sqrt(s_hat ** 2 - s_cur ** 2) * s_noise * randn_like(x_hat, generator)
      s_cur = s_hat
    denoised = denoiser(x_hat, s_cur)
    d_cur = (x_hat - denoised) / s_cur  # Euler step (Alg. 1 lines 4-5)
    x_next = x_hat + (s_next - s_cur) * d_cur
    if i < steps - 1:  # 2nd-order correction (Alg. 1 lines 6-8)
      d_next = (x_next - denoiser(x_next, s_next)) / s_next
      x_next = x_hat + (s_next - s_cur) * (0.5 * d_cur + 0.5 * d_next)
    x_hat = x_next
    if callback is not None:
      callback(i + 1, ts[i + 1], _alpha(sde, ts[i + 1]) * x_hat, denoised)
  x = _alpha(sde, ts[-1]) * x_hat
  return tweedie_denoise(sde, score_fn, x, ts[-1]) if denoise else x


__all__ = ['edm_sample', 'heun_grid', 'karras_sigmas', 'EDMDenoiser', 'sigma_edm', 'time_of_sigma']
