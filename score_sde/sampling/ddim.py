"""DDPM ancestral sampling (Ho et al. 2020, Alg. 2) and DDIM (Song, Meng & Ermon 2021, Eq. 12)
on the discrete DDPM table of a `VPSDE` (`sde.alphas_cumprod`, float64).

Table index i (0-based) has abar_i = prod_{j<=i} (1 - beta_j) and is matched to the continuous
time t_i = (i + 1)/N (DESIGN.md Sec. 4), where the continuous `score_fn` is evaluated; the
noise prediction is eps = -sqrt(1 - abar_i) score. With `steps < N` both samplers run on the
strided "leading" subsequence tau = (0, r, 2r, ..., (steps-1) r), r = N // steps (as diffusers).
Only `VPSDE` is supported: sub-VP and VE have no DDPM table (a ValueError says so).
Both end at sigma = 0 (the last update returns the x0 prediction), so `denoise` and `eps` are
not used and no extra score evaluation is made.
"""
from __future__ import annotations

import math

import torch

from score_sde.sdes import SDE, SubVPSDE, VPSDE
from score_sde.utils import full_t, randn_like


def _check_vp(sde: SDE, name: str) -> None:
  if isinstance(sde, SubVPSDE) or not isinstance(sde, VPSDE):
    raise ValueError(f"solver '{name}' runs on the discrete DDPM table of a VPSDE; "
                     f"{type(sde).__name__} has none (use 'dpm_solver', 'heun', 'sde' or 'pc')")


def leading_indices(n: int, steps: int) -> list[int]:
  """The "leading" strided subsequence tau of table indices 0..n-1, increasing, `steps` long."""
  if not 1 <= steps <= n:
    raise ValueError(f'steps must be in [1, {n}], got {steps}')
  ratio = n // steps
  return [k * ratio for k in range(steps)]


def predict_eps(score_fn, x: torch.Tensor, i: int, abar: float, n: int) -> torch.Tensor:
  """eps_theta(x_i, i) = -sqrt(1 - abar_i) score(x, t_i) with t_i = (i + 1)/N; `[B, ...]`."""
  return -math.sqrt(1.0 - abar) * score_fn(x, full_t((i + 1) / n, x.shape[0], x))


def ddim_step(x: torch.Tensor, eps: torch.Tensor, a_t: float, a_s: float, eta: float,
              noise: torch.Tensor | None) -> torch.Tensor:
  """One DDIM update t -> s < t (Song et al. 2021, Eq. 12), all tensors `[B, ...]`:
  x0 = (x - sqrt(1 - a_t) eps)/sqrt(a_t); sigma = eta sqrt((1-a_s)/(1-a_t)) sqrt(1 - a_t/a_s);
  x_s = sqrt(a_s) x0 + sqrt(1 - a_s - sigma^2) eps + sigma z."""
  x0 = (x - math.sqrt(1.0 - a_t) * eps) / math.sqrt(a_t)
  sigma = eta * math.sqrt((1.0 - a_s) / (1.0 - a_t) * (1.0 - a_t / a_s))
  out = math.sqrt(a_s) * x0 + math.sqrt(max(1.0 - a_s - sigma ** 2, 0.0)) * eps
  return out + sigma * noise if sigma > 0 else out


def ddpm_step(x: torch.Tensor, eps: torch.Tensor, a_t: float, a_s: float, variance: str,
              noise: torch.Tensor | None) -> torch.Tensor:
  """One ancestral step from the posterior q(x_s | x_t, x0) (Ho et al. 2020, Eq. 6-7), with the
  strided beta' = 1 - a_t/a_s: mean = sqrt(a_s) beta'/(1-a_t) x0 + sqrt(1-beta')(1-a_s)/(1-a_t) x_t;
  variance beta_tilde = (1-a_s)/(1-a_t) beta' ("small") or beta' ("large"). No noise when a_s = 1."""
  beta = 1.0 - a_t / a_s
  x0 = (x - math.sqrt(1.0 - a_t) * eps) / math.sqrt(a_t)
  mean = (math.sqrt(a_s) * beta / (1.0 - a_t)) * x0 + (math.sqrt(1.0 - beta) * (1.0 - a_s) / (1.0 - a_t)) * x
  if a_s >= 1.0:
    return mean
  if variance == 'small':
    var = (1.0 - a_s) / (1.0 - a_t) * beta
  elif variance == 'large':
    var = beta
  else:
    raise ValueError(f"unknown DDPM variance '{variance}'; choose 'small' or 'large'")
  return mean + math.sqrt(var) * noise


def _run(sde: VPSDE, score_fn, x, steps, progress, update):
  """Shared loop over the strided table from its last index down to the first."""
  n = sde.N
  abar = sde.alphas_cumprod.tolist()
  tau = leading_indices(n, steps or n)
  pairs = list(zip(tau[::-1], tau[::-1][1:] + [-1]))
  for i, s in (progress(pairs) if progress else pairs):
    a_t, a_s = abar[i], (abar[s] if s >= 0 else 1.0)
    x = update(x, predict_eps(score_fn, x, i, a_t, n), a_t, a_s)
  return x


def ddpm_sample(sde: SDE, score_fn, x: torch.Tensor, *, steps: int | None = None, eps: float = 1e-3,
                denoise: bool = True, generator=None, variance: str = 'small',
                progress=None) -> torch.Tensor:
  """DDPM ancestral sampling (Ho et al. 2020, Alg. 2) from x_T `[B, ...]`; returns x_0 `[B, ...]`.

  `steps` (default N) table steps; `variance` "small" (beta_tilde) or "large" (beta).
  """
  _check_vp(sde, 'ddpm')
  if variance not in ('small', 'large'):
    raise ValueError(f"unknown DDPM variance '{variance}'; choose 'small' or 'large'")
  update = lambda x, e, a_t, a_s: ddpm_step(x, e, a_t, a_s, variance,
                                            randn_like(x, generator) if a_s < 1.0 else None)
  return _run(sde, score_fn, x, steps, progress, update)


def ddim_sample(sde: SDE, score_fn, x: torch.Tensor, *, steps: int | None = None, eps: float = 1e-3,
                denoise: bool = True, generator=None, eta: float = 0.0,
                progress=None) -> torch.Tensor:
  """DDIM (Song, Meng & Ermon 2021, Eq. 12) from x_T `[B, ...]`; returns x_0 `[B, ...]`.

  eta = 0 is deterministic (Euler on the PF-ODE in (x/sqrt(a), sqrt((1-a)/a)), i.e.
  DPM-Solver-1); eta = 1 on the full grid has DDPM's marginals.
  """
  _check_vp(sde, 'ddim')
  if eta < 0:
    raise ValueError(f'eta must be >= 0, got {eta}')
  update = lambda x, e, a_t, a_s: ddim_step(x, e, a_t, a_s, eta,
                                            randn_like(x, generator) if eta > 0 and a_s < 1.0 else None)
  return _run(sde, score_fn, x, steps, progress, update)


__all__ = ['ddpm_sample', 'ddim_sample', 'ddim_step', 'ddpm_step', 'leading_indices']
