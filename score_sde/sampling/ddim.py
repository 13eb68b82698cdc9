"""DDPM ancestral sampling (Ho et al. 2020, Alg. 2) and DDIM (Song, Meng & Ermon 2021, Eq. 12)
on the discrete chain of an SDE: its kernel x_i = alpha_i x_0 + sigma_i z from
`sde.chain.kernel` (the DDPM table for VP, float64: alpha_i = sqrt(abar_i); the SMLD sigma
grid for VE). Sub-VP has no chain and is refused with a ValueError.

Table index i is evaluated at the SDE's own time `sde.time_of_index(i)`, so a discrete-time
network ('index' labels) sees exactly the integer indices it was trained on; the noise
prediction is eps = -sigma_i score. With `steps < N` both samplers run on the strided "leading"
subsequence tau = (0, r, 2r, ..., (steps-1) r), r = N // steps (as diffusers), or on diffusers'
other `timestep_spacing`s (`spaced_indices`). Both end at sigma = 0 (the last update returns
the x0 prediction), so they take no end time and no `denoise`, and make no extra score
evaluation. Their times `ts` (`chain_times`, or explicit decreasing times) select the table
indices `sde.index_of_time(t)` of all but the last time (the end, at the data).

diffusers parity (`DDPMScheduler` / `DDIMScheduler` with the same weights and noise give the
same samples): `timestep_spacing`, `steps_offset` (leading only, as there), ddim's
`set_alpha_to_one` (False: the last step ends at table index 0's kernel, not at the data), and
`clip_x0` / `threshold` (diffusers' `clip_sample` / `thresholding`: `sampling.thresholding`) on
the x0 prediction, the direction term keeping the unclipped eps (as diffusers' default
`use_clipped_model_output=False`). On its own grid ddim steps from table index i to
i - N // steps, as diffusers' DDIMScheduler does; that is the next visited index for 'leading'
(and 'trailing' when steps divides N), but for 'linspace' and other 'trailing' step counts the
state reaches the next model call at a slightly different noise level than its label, which
diffusers does and parity keeps. Explicit `ts` step from visited index to visited index.

A model with a learned variance (`conventions.variance_fn`, IDDPM) is used by both: DDPM draws
from N(mean, Sigma_theta) (variance 'learned', chosen by 'auto'), and DDIM with eta > 0 adds
noise of variance eta^2 Sigma_theta instead of eta^2 beta tilde (so eta = 1 is still DDPM's
ancestral step). Both take `callback(Step)` after every step.

In terms of (alpha, sigma), with a = alpha_t / alpha_s and v = sigma_t^2 - a^2 sigma_s^2 the
variance of the step s -> t (beta' = 1 - abar_t/abar_s for DDPM), the formulas are the papers'
written for any Gaussian kernel.
"""
from __future__ import annotations

import math

import numpy as np
import torch

from score_sde.maths import conventions as cv
from score_sde.maths.chain_posterior import leading_indices, step_posterior
from score_sde.sampling.common import Step, Times, check_times
from score_sde.sampling.spec import SolverSpec
from score_sde.sampling.thresholding import x0_limit
from score_sde.maths.sdes import SDE
from score_sde.maths.utils import full_t, randn_like

VARIANCES = ('auto', 'small', 'large', 'learned')
SPACINGS = ('leading', 'trailing', 'linspace')  # diffusers' timestep_spacing


def _check_chain(sde: SDE, name: str) -> None:
  if sde.chain is None:
    raise ValueError(f"solver '{name}' runs on a discrete chain (the DDPM table of a VP SDE, the "
                     f"SMLD grid of a VE SDE); {type(sde).__name__} has none "
                     "(use 'dpm_solver', 'heun', 'sde' or 'pc')")


def predict_eps(sde: SDE, score_fn, x: torch.Tensor, i: int, sigma: float) -> torch.Tensor:
  """eps_theta(x_i, i) = -sigma_i score(x, time_of_index(i)); `[B, ...]`."""
  return cv.eps_from_score(score_fn(x, full_t(sde.time_of_index(i), x.shape[0], x)), sigma)


def predict_eps_and_v(sde: SDE, score_fn, x: torch.Tensor, i: int, sigma: float):
  """(eps_theta, v) `[B, ...]` at table index i; v is None without a learned variance."""
  both = cv.variance_fn(score_fn)
  if both is None:
    return predict_eps(sde, score_fn, x, i, sigma), None
  score, v = both(x, full_t(sde.time_of_index(i), x.shape[0], x))
  return cv.eps_from_score(score, sigma), v


def _learned_var(v: torch.Tensor, beta: float, beta_tilde: float) -> torch.Tensor:
  """Sigma_theta `[B, ...]` of one step from v (IDDPM Eq. 15 between beta and beta tilde)."""
  return torch.exp(cv.learned_log_variance(v, math.log(beta), math.log(beta_tilde)))


def ddim_step(x: torch.Tensor, eps: torch.Tensor, k_t: tuple, k_s: tuple, eta: float,
              noise: torch.Tensor | None, v: torch.Tensor | None = None, x0_fn=None,
              clipped_eps: bool = False) -> torch.Tensor:
  """One DDIM update t -> s < t (Song et al. 2021, Eq. 12) for kernels k = (alpha, sigma):
  x0 = (x - sigma_t eps)/alpha_t; c = eta (sigma_s/sigma_t) sqrt(v), which for DDPM is
  eta sqrt((1-a_s)/(1-a_t)) sqrt(1 - a_t/a_s); x_s = alpha_s x0 + sqrt(sigma_s^2 - c^2) eps + c z.
  With a learned variance v `[B, ...]`: c^2 = eta^2 Sigma_theta (capped at sigma_s^2).
  `x0_fn`: clipping / thresholding of x0 (`thresholding.x0_limit`), after which eps is
  re-derived from the clipped x0 if `clipped_eps` (diffusers' use_clipped_model_output) or
  kept (diffusers' default). All tensors `[B, ...]`."""
  (al_t, si_t), (al_s, si_s) = k_t, k_s
  x0 = cv.x0_from_eps(x, eps, al_t, si_t)
  if x0_fn is not None:
    x0 = x0_fn(x0)
    if clipped_eps:
      eps = cv.eps_from_x0(x, x0, al_t, si_t)
  _, _, var, var_tilde = step_posterior(al_t, si_t, al_s, si_s)
  if v is not None and eta > 0 and si_s > 0:
    c2 = (eta ** 2 * _learned_var(v, var, var_tilde)).clamp(max=si_s ** 2)
    return al_s * x0 + torch.sqrt(si_s ** 2 - c2) * eps + torch.sqrt(c2) * noise
  c = eta * (si_s / si_t) * math.sqrt(max(var, 0.0))
  out = al_s * x0 + math.sqrt(max(si_s ** 2 - c ** 2, 0.0)) * eps
  return out + c * noise if c > 0 else out


def ddpm_step(x: torch.Tensor, eps: torch.Tensor, k_t: tuple, k_s: tuple, variance: str,
              noise: torch.Tensor | None, v: torch.Tensor | None = None, x0_fn=None) -> torch.Tensor:
  """One ancestral step from the posterior q(x_s | x_t, x0) (Ho et al. 2020, Eq. 6-7) for kernels
  k = (alpha, sigma): mean = (alpha_s v / sigma_t^2) x0 + (a sigma_s^2 / sigma_t^2) x_t; variance
  v sigma_s^2 / sigma_t^2 ("small", beta tilde), v ("large", beta) or the learned interpolation
  between them from the network's v `[B, ...]` ("learned", IDDPM). No noise when sigma_s = 0.
  `x0_fn`: clipping / thresholding of x0 (`thresholding.x0_limit`)."""
  (al_t, si_t), (al_s, si_s) = k_t, k_s
  c0, ct, var, var_tilde = step_posterior(al_t, si_t, al_s, si_s)
  x0 = cv.x0_from_eps(x, eps, al_t, si_t)
  if x0_fn is not None:
    x0 = x0_fn(x0)
  mean = c0 * x0 + ct * x
  if si_s <= 0.0:
    return mean
  if variance == 'learned':
    return mean + torch.sqrt(_learned_var(v, var, var_tilde)) * noise
  if variance == 'small':
    var = var_tilde
  elif variance != 'large':
    raise ValueError(f"unknown DDPM variance '{variance}'; choose {', '.join(VARIANCES)}")
  return mean + math.sqrt(var) * noise


def chain_indices(sde: SDE, ts) -> list[int]:
  """The increasing table indices the samplers visit: those of the decreasing times `ts`
  (`grids.chain_grid` or explicit; `sde.index_of_time` of all but the last, which marks the
  end at the data), which must be distinct."""
  if not isinstance(ts, Times):  # resolved times are checked (and VE's chain grid ends 0, 0)
    ts = check_times(sde, ts, allow_zero_end=True)
  idx = sde.index_of_time(torch.tensor(ts[:-1], dtype=torch.float64)).tolist()
  if any(b >= a for a, b in zip(idx, idx[1:])):
    raise ValueError(f'ts map to chain indices {idx[:8]}...: they must be strictly decreasing '
                     '(at most one time per table index)')
  return idx[::-1]


def spaced_indices(n: int, steps: int, spacing: str = 'leading', offset: int = 0) -> list[int]:
  """The increasing table indices (of 0..n-1) that `steps` chain steps visit, as diffusers'
  `set_timesteps` for its `timestep_spacing`: 'leading' k (n // steps) + offset (offset:
  diffusers' `steps_offset`, which it uses for leading only), 'trailing'
  round(n - k n / steps) - 1, 'linspace' round(linspace(0, n - 1, steps)). A one-line
  ValueError for an unknown spacing or indices outside the table."""
  if spacing not in SPACINGS:
    raise ValueError(f"unknown timestep_spacing '{spacing}'; choose one of: {', '.join(SPACINGS)}")
  if isinstance(offset, bool) or not isinstance(offset, int) or offset < 0:
    raise ValueError(f'steps_offset = {offset!r}: must be an integer >= 0')
  if spacing == 'leading':
    idx = [i + offset for i in leading_indices(n, steps)]
  elif not 1 <= steps <= n:
    raise ValueError(f'steps must be in [1, {n}], got {steps}')
  elif spacing == 'trailing':
    idx = (np.round(np.arange(n, 0, -n / steps)).astype(np.int64) - 1)[::-1].tolist()
  else:
    idx = np.linspace(0, n - 1, steps).round().astype(np.int64).tolist()
  if len(idx) != steps or idx[0] < 0 or idx[-1] > n - 1 or any(b <= a for a, b in zip(idx, idx[1:])):
    raise ValueError(f"timestep_spacing '{spacing}' with steps_offset {offset} gives table indices "
                     f'{idx[:3]}...{idx[-2:]} for {steps} of N = {n} steps: they must be {steps} distinct '
                     f'indices in [0, {n - 1}] (use fewer steps or a smaller steps_offset)')
  return idx


def chain_times(sde: SDE, steps: int, spacing: str = 'leading', offset: int = 0) -> list[float]:
  """The grid of the chain solvers: the times `sde.time_of_index` of `spaced_indices`, from the
  last down, then 0 (the data): steps + 1 (`grids.chain_grid` for the default leading)."""
  return [sde.time_of_index(i) for i in spaced_indices(sde.N, steps, spacing, offset)[::-1]] + [0.0]


def _ddim_targets(sde: SDE, ts, tau: list[int], spacing: str, offset: int) -> list[int] | None:
  """The table index each DDIM step goes to (aligned with tau), as diffusers' DDIMScheduler,
  i - N // steps, when `ts` is the chain grid of the spacing (None otherwise: the next
  visited index)."""
  steps = len(ts) - 1
  if list(ts) != chain_times(sde, steps, spacing, offset):
    return None
  return [i - sde.N // steps for i in tau]


def _run(sde: SDE, score_fn, x, tau, progress, update, callback=None, learned=False, x0_fn=None,
         targets=None, end: int = -1):
  """Shared loop over the table indices tau (increasing) from the last down to the end;
  `update(x, eps, v, k_t, k_s)`; callback(Step(i, t, x, x0 prediction)) after step i
  (1..steps). targets: the table index each step (aligned with tau) goes to, < 0 for the
  end (default: the next lower index of tau, the end after the first); end: the table index
  whose kernel the end has (-1: the data, alpha = 1, sigma = 0; 0: index 0's)."""
  alphas, sigmas = sde.chain.kernel(torch.tensor(tau + [-1]))
  kern = {i: (float(a), float(s)) for i, a, s in zip(tau + [-1], alphas, sigmas)}
  extra = sorted({i for i in (targets or []) if i >= 0} - set(tau)) + ([end] if end >= 0 else [])
  if extra:
    alphas, sigmas = sde.chain.kernel(torch.tensor(extra))
    kern.update({i: (float(a), float(s)) for i, a, s in zip(extra, alphas, sigmas)})
  kern[-1] = kern[end]
  down = tau[::-1][1:] + [-1] if targets is None else [max(i, -1) for i in targets[::-1]]
  pairs = list(zip(tau[::-1], down))
  for n, (i, s) in enumerate(progress(pairs) if progress else pairs):
    if learned:
      eps, v = predict_eps_and_v(sde, score_fn, x, i, kern[i][1])
    else:
      eps, v = predict_eps(sde, score_fn, x, i, kern[i][1]), None
    x_new = update(x, eps, v, kern[i], kern[s])
    if callback is not None:
      t_s = sde.time_of_index(s if s >= 0 else end) if max(s, end) >= 0 else 0.0
      x0 = cv.x0_from_eps(x, eps, *kern[i])
      callback(Step(n + 1, t_s, x_new, x0 if x0_fn is None else x0_fn(x0)))
    x = x_new
  return x


def ddpm_sample(sde: SDE, score_fn, x: torch.Tensor, *, steps: int | None = None, generator=None,
                variance: str = 'auto', timestep_spacing: str = 'leading', steps_offset: int = 0,
                clip_x0=False, threshold: float = 0.0, threshold_max: float = 0.0, ts=None,
                callback=None, progress=None) -> torch.Tensor:
  """DDPM ancestral sampling (Ho et al. 2020, Alg. 2) from x_T `[B, ...]`; returns x_0 `[B, ...]`.

  `steps` (default N) table steps on the indices of `timestep_spacing` / `steps_offset`
  (`spaced_indices`), or the table times `ts` (`chain_indices`); `variance` one of VARIANCES:
  "small" (beta_tilde), "large" (beta), "learned" (the model's, IDDPM) or "auto" (learned if
  the model has it, else small). clip_x0 / threshold / threshold_max: x0 clipping or dynamic
  thresholding (`sampling.thresholding`; diffusers' clip_sample / thresholding; off by default).
  """
  _check_chain(sde, 'ddpm')
  if variance not in VARIANCES:
    raise ValueError(f"unknown DDPM variance '{variance}'; choose one of: {', '.join(VARIANCES)}")
  has_v = cv.variance_fn(score_fn) is not None
  if variance == 'learned' and not has_v:
    raise ValueError("variance='learned' needs a model with a learned variance (model.learn_sigma)")
  variance = ('learned' if has_v else 'small') if variance == 'auto' else variance
  x0_fn = x0_limit(clip_x0, threshold, threshold_max)
  update = lambda x, e, v, k_t, k_s: ddpm_step(x, e, k_t, k_s, variance,
                                               randn_like(x, generator) if k_s[1] > 0 else None, v, x0_fn)
  opts = DDPM_SPEC.options(timestep_spacing=timestep_spacing, steps_offset=steps_offset)
  tau = chain_indices(sde, DDPM_SPEC.times(sde, steps, 0.0, ts, opts))
  return _run(sde, score_fn, x, tau, progress, update, callback, variance == 'learned', x0_fn)


def ddim_sample(sde: SDE, score_fn, x: torch.Tensor, *, steps: int | None = None, generator=None,
                eta: float = 0.0, timestep_spacing: str = 'leading', steps_offset: int = 0,
                set_alpha_to_one: bool = True, clip_x0=False, threshold: float = 0.0,
                threshold_max: float = 0.0, clipped_eps: bool = True, ts=None, callback=None,
                progress=None) -> torch.Tensor:
  """DDIM (Song, Meng & Ermon 2021, Eq. 12) from x_T `[B, ...]`; returns x_0 `[B, ...]`.

  `steps` (default N) table steps on the indices of `timestep_spacing` / `steps_offset`
  (`spaced_indices`; each step to i - N // steps as diffusers, module docstring), or the table
  times `ts` (`chain_indices`). eta = 0 is deterministic (Euler on the PF-ODE in (x/alpha,
  sigma/alpha), i.e. DPM-Solver-1); eta = 1 on the full grid has DDPM's marginals.
  set_alpha_to_one False: the last step ends at table index 0's kernel (diffusers' option).
  clip_x0 / threshold / threshold_max: x0 clipping or dynamic thresholding
  (`sampling.thresholding`; diffusers' clip_sample / thresholding; off by default).
  clipped_eps: with them, the step's eps is re-derived from the clipped x0 (diffusers'
  use_clipped_model_output; a consistent step in data prediction, as DPM-Solver++(1)); False
  keeps the network's eps (diffusers' default), which under strong guidance, where x0 is
  clipped hard, drives the samples to the edge of the range.
  """
  _check_chain(sde, 'ddim')
  if eta < 0:
    raise ValueError(f'eta must be >= 0, got {eta}')
  if not isinstance(set_alpha_to_one, bool):
    raise ValueError(f'set_alpha_to_one = {set_alpha_to_one!r}: must be True or False')
  learned = eta > 0 and cv.variance_fn(score_fn) is not None
  x0_fn = x0_limit(clip_x0, threshold, threshold_max)
  update = lambda x, e, v, k_t, k_s: ddim_step(x, e, k_t, k_s, eta, randn_like(x, generator)
                                               if eta > 0 and k_s[1] > 0 else None, v, x0_fn, clipped_eps)
  opts = DDIM_SPEC.options(timestep_spacing=timestep_spacing, steps_offset=steps_offset)
  ts = DDIM_SPEC.times(sde, steps, 0.0, ts, opts)
  tau = chain_indices(sde, ts)
  targets = _ddim_targets(sde, ts, tau, timestep_spacing, steps_offset)
  return _run(sde, score_fn, x, tau, progress, update, callback, learned, x0_fn, targets,
              end=-1 if set_alpha_to_one else 0)


_CHAIN = dict(grid=lambda sde, steps, eps, o: chain_times(sde, steps, o.timestep_spacing, o.steps_offset),
              zero_end=True, uses=('generator',),
              grid_doc='the times of `steps` table indices (`timestep_spacing`: leading, trailing or '
                       'linspace of N, as diffusers), then 0',
              nfe=lambda steps, o, denoise: steps, denoised="x0 prediction of the step's eps, at its start")
DDPM_SPEC = SolverSpec('ddpm', ddpm_sample, choices={'variance': VARIANCES, 'timestep_spacing': SPACINGS},
                       **_CHAIN)
DDIM_SPEC = SolverSpec('ddim', ddim_sample, stochastic=lambda o: o.eta > 0,
                       choices={'timestep_spacing': SPACINGS}, **_CHAIN)


__all__ = ['ddpm_sample', 'ddim_sample', 'ddim_step', 'ddpm_step', 'leading_indices', 'chain_indices',
           'spaced_indices', 'chain_times', 'VARIANCES', 'SPACINGS', 'DDPM_SPEC', 'DDIM_SPEC']
