"""EDM samplers (Karras et al. 2022, "Elucidating the Design Space...", Alg. 1 and 2) for any SDE.

Any perturbation kernel x_t = alpha(t) x0 + sigma(t) z becomes EDM's x_hat = x0 + sigma_e z
in the scaled variable x_hat = x/alpha with sigma_e = sigma/alpha = exp(-lambda(t)) (all from
`grids.KernelAt`, float64); time is recovered from sigma_e with t(lambda = -log sigma_e). The denoiser is
D(x_hat; sigma_e) = (x + sigma^2 s(x, t))/alpha (Tweedie), and the PF-ODE is
dx_hat/dsigma_e = (x_hat - D)/sigma_e (Karras et al. Eq. 1 with s(t) = 1, sigma(t) = t).
Works for VP, sub-VP and VE.
"""
from __future__ import annotations

import math

import torch

from score_sde.sampling.common import Step, tweedie_denoise
from score_sde.sampling.grids import KernelAt, karras_grid, karras_sigmas
from score_sde.sampling.spec import SolverSpec
from score_sde.maths.sdes import SDE
from score_sde.maths.utils import randn_like


class EDMDenoiser:
  """D(x_hat `[B, ...]`; sigma_e) -> `[B, ...]` from any score_fn: x0 = (x + sigma^2 s)/alpha."""

  def __init__(self, sde: SDE, score_fn):
    self.sde, self.score_fn, self.kernel = sde, score_fn, KernelAt(sde)

  def __call__(self, x_hat: torch.Tensor, sigma_e: float) -> torch.Tensor:
    t = self.kernel.t_of_sigma_e(sigma_e)
    return tweedie_denoise(self.sde, self.score_fn, self.kernel.alpha(t) * x_hat, t)


def heun_grid(sde: SDE, steps: int, eps: float, rho: float = 7.0) -> list[float]:
  """The `steps + 1` times of `edm_sample`'s default grid: Karras et al. Eq. 5 in sigma_e from
  sigma_e(T) down to sigma_e(eps), mapped back to t (`grids.karras_grid`)."""
  return karras_grid(sde, steps, eps, rho)


def edm_sample(sde: SDE, score_fn, x: torch.Tensor, *, steps: int | None = None, eps: float = 1e-3,
               denoise: bool = True, generator=None, rho: float = 7.0, s_churn: float = 0.0,
               s_tmin: float = 0.0, s_tmax: float = float('inf'), s_noise: float = 1.0,
               ts=None, callback=None, progress=None) -> torch.Tensor:
  """Karras et al. 2022 Alg. 2 (Alg. 1 when s_churn = 0) from x_T `[B, ...]` at t = ts[0].

  `ts`: decreasing times (x is at ts[0]; default `heun_grid` of `steps`, default 18, to eps
  with `rho`): Heun on all but the last interval, Euler on the last (NFE = 2 steps - 1), then
  Tweedie at ts[-1] if `denoise`. Churn: gamma = min(s_churn/steps, sqrt(2) - 1) for
  s_tmin <= sigma_e <= s_tmax (in sigma_e units); the added noise is drawn from `generator`.
  `callback(Step)` after step i (1..steps) at t = ts[i] (see SPEC.denoised). Returns x at
  ts[-1] (or its Tweedie denoising) `[B, ...]`.
  """
  ts = SPEC.times(sde, steps, eps, ts, SPEC.options(rho=rho))
  kernel = KernelAt(sde)
  sig = [kernel.sigma_e(t) for t in ts]
  steps = len(ts) - 1
  denoiser = EDMDenoiser(sde, score_fn)
  x_hat = x / kernel.alpha(ts[0])
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
      callback(Step(i + 1, ts[i + 1], kernel.alpha(ts[i + 1]) * x_hat, denoised))
  x = kernel.alpha(ts[-1]) * x_hat
  return tweedie_denoise(sde, score_fn, x, ts[-1]) if denoise else x


SPEC = SolverSpec(
    'heun', edm_sample, grid=lambda sde, steps, eps, o: heun_grid(sde, steps, eps, o.rho), default_steps=18,
    grid_doc='Karras et al. Eq. 5 (rho) in sigma_e = sigma/alpha from sigma_e(T) to sigma_e(eps)',
    nfe=lambda steps, o, denoise: 2 * steps - 1 + denoise,
    denoised="the denoiser's output D at the step's start (k-diffusion's convention)",
    stochastic=lambda o: o.s_churn > 0)


__all__ = ['edm_sample', 'heun_grid', 'karras_sigmas', 'EDMDenoiser', 'SPEC']
