"""DDPM ancestral sampling (Ho et al. 2020, Alg. 2) and DDIM (Song, Meng & Ermon 2021, Eq. 12)
on the discrete chain of an SDE: its kernel x_i = alpha_i x_0 + sigma_i z from
`sde.discrete_kernel` (the DDPM table for VP, float64: alpha_i = sqrt(abar_i); the SMLD sigma
grid for VE). Sub-VP has no chain and is refused with a ValueError.

Table index i is evaluated at the SDE's own time `sde.time_of_index(i)`, so a discrete-time
network ('index' labels) sees exactly the integer indices it was trained on; the noise
prediction is eps = -sigma_i score. With `steps < N` both samplers run on the strided "leading"
subsequence tau = (0, r, 2r, ..., (steps-1) r), r = N // steps (as diffusers). Both end at
sigma = 0 (the last update returns the x0 prediction), so `denoise` and `eps` are not used and
no extra score evaluation is made.

In terms of (alpha, sigma), with a = alpha_t / alpha_s and v = sigma_t^2 - a^2 sigma_s^2 the
variance of the step s -> t (beta' = 1 - abar_t/abar_s for DDPM), the formulas are the papers'
written for any Gaussian kernel.
"""
from __future__ import annotations

import math

import torch

from score_sde import conventions as cv
from score_sde.sdes import SDE
from score_sde.utils import full_t, randn_like


def _check_chain(sde: SDE, name: str) -> None:
  if not sde.has_discrete_chain:
    raise ValueError(f"solver '{name}' runs on a discrete chain (the DDPM table of a VP SDE, the "
                     f"SMLD grid of a VE SDE); {type(sde).__name__} has none "
                     "(use 'dpm_solver', 'heun', 'sde' or 'pc')")


def leading_indices(n: int, steps: int) -> list[int]:
  """The "leading" strided subsequence tau of table indices 0..n-1, increasing, `steps` long."""
  if not 1 <= steps <= n:
    raise ValueError(f'steps must be in [1, {n}], got {steps}')
  ratio = n // steps
  return [k * ratio for k in range(steps)]


def predict_eps(sde: SDE, score_fn, x: torch.Tensor, i: int, sigma: float) -> torch.Tensor:
  """eps_theta(x_i, i) = -sigma_i score(x, time_of_index(i)); `[B, ...]`."""
  return cv.eps_from_score(score_fn(x, full_t(sde.time_of_index(i), x.shape[0], x)), sigma)


def ddim_step(x: torch.Tensor, eps: torch.Tensor, k_t: tuple, k_s: tuple, eta: float,
              noise: torch.Tensor | None) -> torch.Tensor:
  """One DDIM update t -> s < t (Song et al. 2021, Eq. 12) for kernels k = (alpha, sigma):
  x0 = (x - sigma_t eps)/alpha_t; c = eta (sigma_s/sigma_t) sqrt(v), which for DDPM is
  eta sqrt((1-a_s)/(1-a_t)) sqrt(1 - a_t/a_s); x_s = alpha_s x0 + sqrt(sigma_s^2 - c^2) eps + c z.
  All tensors `[B, ...]`."""
  (al_t, si_t), (al_s, si_s) = k_t, k_s
  x0 = cv.x0_from_eps(x, eps, al_t, si_t)
  a = al_t / al_s
  var = si_t ** 2 - a ** 2 * si_s ** 2
  c = eta * (si_s / si_t) * math.sqrt(max(var, 0.0))
  out = al_s * x0 + math.sqrt(max(si_s ** 2 - c ** 2, 0.0)) * eps
  return out + c * noise if c > 0 else out


def ddpm_step(x: torch.Tensor, eps: torch.Tensor, k_t: tuple, k_s: tuple, variance: str,
              noise: torch.Tensor | None) -> torch.Tensor:
  """One ancestral step from the posterior q(x_s | x_t, x0) (Ho et al. 2020, Eq. 6-7) for kernels
  k = (alpha, sigma): mean = (alpha_s v / sigma_t^2) x0 + (a sigma_s^2 / sigma_t^2) x_t; variance
  v sigma_s^2 / sigma_t^2 ("small", beta tilde) or v ("large", beta). No noise when sigma_s = 0."""
  (al_t, si_t), (al_s, si_s) = k_t, k_s
  a = al_t / al_s
  var = si_t ** 2 - a ** 2 * si_s ** 2
  x0 = cv.x0_from_eps(x, eps, al_t, si_t)
  mean = (al_s * var / si_t ** 2) * x0 + (a * si_s ** 2 / si_t ** 2) * x
  if si_s <= 0.0:
    return mean
  if variance == 'small':
    var = var * si_s ** 2 / si_t ** 2
  elif variance != 'large':
    raise ValueError(f"unknown DDPM variance '{variance}'; choose 'small' or 'large'")
  return mean + math.sqrt(var) * noise


def _run(sde: SDE, score_fn, x, steps, progress, update):
  """Shared loop over the strided table from its last index down to the data (index -1)."""
  tau = leading_indices(sde.N, steps or sde.N)
  alphas, sigmas = sde.discrete_kernel(torch.tensor(tau + [-1]))
  kern = {i: (float(a), float(s)) for i, a, s in zip(tau + [-1], alphas, sigmas)}
  pairs = list(zip(tau[::-1], tau[::-1][1:] + [-1]))
  for i, s in (progress(pairs) if progress else pairs):
    x = update(x, predict_eps(sde, score_fn, x, i, kern[i][1]), kern[i], kern[s])
  return x


def ddpm_sample(sde: SDE, score_fn, x: torch.Tensor, *, steps: int | None = None, eps: float = 1e-3,
                denoise: bool = True, generator=None, variance: str = 'small',
                progress=None) -> torch.Tensor:
  """DDPM ancestral sampling (Ho et al. 2020, Alg. 2) from x_T `[B, ...]`; returns x_0 `[B, ...]`.

  `steps` (default N) table steps; `variance` "small" (beta_tilde) or "large" (beta).
  """
  _check_chain(sde, 'ddpm')
  if variance not in ('small', 'large'):
    raise ValueError(f"unknown DDPM variance '{variance}'; choose 'small' or 'large'")
  update = lambda x, e, k_t, k_s: ddpm_step(x, e, k_t, k_s, variance,
                                            randn_like(x, generator) if k_s[1] > 0 else None)
  return _run(sde, score_fn, x, steps, progress, update)


def ddim_sample(sde: SDE, score_fn, x: torch.Tensor, *, steps: int | None = None, eps: float = 1e-3,
                denoise: bool = True, generator=None, eta: float = 0.0,
                progress=None) -> torch.Tensor:
  """DDIM (Song, Meng & Ermon 2021, Eq. 12) from x_T `[B, ...]`; returns x_0 `[B, ...]`.

  eta = 0 is deterministic (Euler on the PF-ODE in (x/alpha, sigma/alpha), i.e.
  DPM-Solver-1); eta = 1 on the full grid has DDPM's marginals.
  """
  _check_chain(sde, 'ddim')
  if eta < 0:
    raise ValueError(f'eta must be >= 0, got {eta}')
  update = lambda x, e, k_t, k_s: ddim_step(x, e, k_t, k_s, eta,
                                            randn_like(x, generator) if eta > 0 and k_s[1] > 0 else None)
  return _run(sde, score_fn, x, steps, progress, update)


__all__ = ['ddpm_sample', 'ddim_sample', 'ddim_step', 'ddpm_step', 'leading_indices']
