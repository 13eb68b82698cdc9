"""DPM-Solver++ (Lu et al. 2022, "DPM-Solver++: Fast Solver for Guided Sampling...").

Exponential integrators of the PF-ODE in the half log-SNR lambda(t) = log(alpha/sigma), in
data prediction x0(x, t) = (x + sigma^2 s(x, t))/alpha, for any SDE (VP, sub-VP, VE) through
alpha(t), sigma(t), lambda(t). With h = lambda_t - lambda_s and phi_1 = expm1(-h):
  order 1 (DDIM):  x_t = (sigma_t/sigma_s) x_s - alpha_t phi_1 x0_s            (Eq. 9/Alg. 1)
  multistep 2:     x0 term -> (1 + 1/(2r)) x0_{i-1} - 1/(2r) x0_{i-2}         (Alg. 2)
  multistep 3 and single-step 2/3: as in the authors' reference code (`dpm_solver_pytorch.py`).
Multistep warms up with lower orders and, for steps < 10, uses lower orders on the final
steps ("lower_order_final", as the paper's code). Single-step costs `order` NFE per interval.
"""
from __future__ import annotations

import math

import torch

from score_sde.sampling.common import Step, tweedie_denoise
from score_sde.sampling.grids import GRIDS, KernelAt, time_grid
from score_sde.sampling.spec import SolverSpec
from score_sde.sampling.thresholding import x0_limit
from score_sde.maths.sdes import SDE

ORDERS = (1, 2, 3)


def _data_pred(sde, score_fn, x, t, x0_fn=None):
  return tweedie_denoise(sde, score_fn, x, t, x0_fn)


def multistep_update(x, ms, lams, t_sched, order):
  """One DPM-Solver++ multistep update of `order` from the latest state x `[B, ...]`.

  ms: previous x0 predictions, newest last; lams: their lambdas (same order); t_sched:
  (alpha_t, sigma_t, lambda_t) of the target and sigma_s of the current state as 4-tuple.
  """
  alpha_t, sigma_t, lam_t, sigma_s = t_sched
  h = lam_t - lams[-1]
  phi_1 = math.expm1(-h)
  out = (sigma_t / sigma_s) * x - alpha_t * phi_1 * ms[-1]
  if order == 1:
    return out
  r0 = (lams[-1] - lams[-2]) / h
  d1_0 = (ms[-1] - ms[-2]) / r0
  if order == 2:  # Alg. 2: D = (1 + 1/(2r)) m0 - 1/(2r) m1
    return out - 0.5 * alpha_t * phi_1 * d1_0
  r1 = (lams[-2] - lams[-3]) / h
  d1_1 = (ms[-2] - ms[-3]) / r1
  d1 = d1_0 + r0 / (r0 + r1) * (d1_0 - d1_1)
  d2 = (d1_0 - d1_1) / (r0 + r1)
  phi_2 = phi_1 / h + 1.0
  phi_3 = phi_2 / h - 0.5
  return out + alpha_t * phi_2 * d1 - alpha_t * phi_3 * d2


def singlestep_update(sde, score_fn, x, m0, s: float, t: float, order: int, x0_fn=None):
  """One single-step DPM-Solver++(2S)/(3S) update s -> t with intermediate points at
  lambda_s + r h, r = 1/2 (order 2) or 1/3, 2/3 (order 3); `order - 1` extra NFE, whose x0
  predictions go through `x0_fn` (see `dpm_solver_sample`)."""
  sched = KernelAt(sde)
  _, sigma_s, lam_s = sched(s)
  alpha_t, sigma_t, lam_t = sched(t)
  h = lam_t - lam_s
  phi_1 = math.expm1(-h)
  rs = (0.5,) if order == 2 else (1 / 3, 2 / 3)
  t1 = sched.t_of_lam(lam_s + rs[0] * h)
  a1, s1, _ = sched(t1)
  x1 = (s1 / sigma_s) * x - a1 * math.expm1(-rs[0] * h) * m0
  m1 = _data_pred(sde, score_fn, x1, t1, x0_fn)
  base = (sigma_t / sigma_s) * x - alpha_t * phi_1 * m0
  if order == 2:
    return base - (0.5 / rs[0]) * alpha_t * phi_1 * (m1 - m0)
  r1, r2 = rs
  t2 = sched.t_of_lam(lam_s + r2 * h)
  a2, s2, _ = sched(t2)
  phi_22 = math.expm1(-r2 * h) / (r2 * h) + 1.0
  x2 = (s2 / sigma_s) * x - a2 * math.expm1(-r2 * h) * m0 + (r2 / r1) * a2 * phi_22 * (m1 - m0)
  m2 = _data_pred(sde, score_fn, x2, t2, x0_fn)
  return base + (1.0 / r2) * alpha_t * (phi_1 / h + 1.0) * (m2 - m0)


def dpm_solver_sample(sde: SDE, score_fn, x: torch.Tensor, *, steps: int | None = None,
                      eps: float = 1e-3, denoise: bool = True, order: int = 2,
                      multistep: bool = True, grid: str = 'logsnr', lower_order_final: bool = True,
                      clip_x0=False, threshold: float = 0.0, threshold_max: float = 0.0,
                      ts=None, callback=None, progress=None) -> torch.Tensor:
  """DPM-Solver++ from x_T `[B, ...]` at ts[0] over the decreasing times `ts` (default the
  named `grid` of `steps`, default 20, intervals to eps); then Tweedie at ts[-1] if `denoise`
  (1 NFE). NFE = steps (multistep) or order * steps. `callback(Step)` after step i
  (1..steps) at t = ts[i] (see SPEC.denoised). Returns `[B, ...]`. Deterministic: it takes no
  generator. clip_x0 / threshold / threshold_max: x0 clipping or dynamic thresholding of every
  data prediction, the final Tweedie step's included (`sampling.thresholding`; off by default),
  as DPM-Solver++ does for guided sampling."""
  if order not in ORDERS:
    raise ValueError(f'order must be 1, 2 or 3, got {order}')
  x0_fn = x0_limit(clip_x0, threshold, threshold_max)
  ts = SPEC.times(sde, steps, eps, ts, SPEC.options(grid=grid))
  steps = len(ts) - 1
  sched = KernelAt(sde)
  m = _data_pred(sde, score_fn, x, ts[0], x0_fn)
  ms, lams = [m], [sched(ts[0])[2]]
  idx = range(1, steps + 1)
  for i in (progress(idx) if progress else idx):
    if multistep:
      k = min(order, i)
      if lower_order_final and steps < 10:
        k = min(k, steps + 1 - i)
      alpha_t, sigma_t, lam_t = sched(ts[i])
      x = multistep_update(x, ms, lams, (alpha_t, sigma_t, lam_t, sched(ts[i - 1])[1]), k)
      lams = (lams + [lam_t])[-3:]
    else:
      x = singlestep_update(sde, score_fn, x, ms[-1], ts[i - 1], ts[i], order, x0_fn) if order > 1 else \
          multistep_update(x, ms, lams, (*sched(ts[i]), sched(ts[i - 1])[1]), 1)
      lams = [sched(ts[i])[2]]
    if i < steps:
      ms = (ms + [_data_pred(sde, score_fn, x, ts[i], x0_fn)])[-3:]
    if callback is not None:
      callback(Step(i, ts[i], x, ms[-1] if i < steps else None))
  return tweedie_denoise(sde, score_fn, x, ts[-1], x0_fn) if denoise else x


SPEC = SolverSpec(
    'dpm_solver', dpm_solver_sample, grid=lambda sde, steps, eps, o: time_grid(sde, steps, eps, o.grid),
    default_steps=20, grid_doc='the named `grid` (logsnr, time_uniform, karras) from T to eps, or optimized',
    nfe=lambda steps, o, denoise: (steps if o.multistep or o.order == 1 else o.order * steps) + denoise,
    denoised='x0 prediction at the step\'s end t_i (None at the last step)', uses=('denoise',),
    tunable=True, stochastic=lambda o: False, choices={'order': ORDERS, 'grid': GRIDS + ('optimized',)})


__all__ = ['dpm_solver_sample', 'multistep_update', 'singlestep_update', 'SPEC']
