"""UniPC (Zhao et al. 2023, "UniPC: A Unified Predictor-Corrector Framework for Fast Sampling
of Diffusion Models"), multistep, in data prediction, for any SDE (VP, sub-VP, VE) through
alpha(t), sigma(t) and the half log-SNR lambda(t), as `dpm_solver`.

With h = lambda_t - lambda_s, hh = -h, phi_1 = expm1(hh) and B(h) = hh ('bh1') or expm1(hh)
('bh2'), one update of order p from the newest x0 prediction m_0 at s and the earlier ones
m_k at r_k = (lambda_k - lambda_s) / h (paper Alg. 1-2, Eq. 8-10):
  x_t^pred = (sigma_t / sigma_s) x_s - alpha_t phi_1 m_0 - alpha_t B(h) sum_k a_k D_k,
  D_k = (m_k - m_0) / r_k, with a solving R a = b: R_ik = r_k^(i-1), b_i = h phi_{i+1} i! / B(h)
  (order 2 uses a = 1/2, Eq. 11). The corrector (UniC) evaluates the model at x_t^pred, which
  the next step reuses, and adds D_t = m_t - m_0 with r = 1: it raises the order by one at no
  extra NFE. The last step has no corrector (it would cost an evaluation).
NFE = steps (+1 for the final Tweedie step if `denoise`).
"""
from __future__ import annotations

import math

import torch

from score_sde.sampling.common import Step, tweedie_denoise
from score_sde.sampling.dpm_solver import ORDERS
from score_sde.sampling.grids import GRIDS, KernelAt, time_grid
from score_sde.sampling.spec import SolverSpec
from score_sde.sampling.thresholding import x0_limit
from score_sde.maths.sdes import SDE

VARIANTS = ('bh1', 'bh2')


def _coefficients(h: float, rks: list[float], variant: str):
  """(R `[p, p]`, b `[p]`, B(h), phi_1) of UniPC's linear system for hh = -h (data prediction)."""
  hh = -h
  phi_1 = math.expm1(hh)
  b_h = hh if variant == 'bh1' else math.expm1(hh)
  h_phi_k = phi_1 / hh - 1.0
  factorial, rows, b = 1, [], []
  for i in range(1, len(rks) + 1):
    rows.append([r ** (i - 1) for r in rks])
    b.append(h_phi_k * factorial / b_h)
    factorial *= i + 1
    h_phi_k = h_phi_k / hh - 1.0 / factorial
  return (torch.tensor(rows, dtype=torch.float64), torch.tensor(b, dtype=torch.float64), b_h, phi_1)


def _combine(coeffs, diffs):
  out = 0.0
  for c, d in zip(coeffs.tolist(), diffs):
    out = out + c * d
  return out


def unipc_update(x, ms, lams, sched_t, sigma_s, order: int, variant: str, model_fn=None):
  """One UniPC step of `order` to time t from x `[B, ...]` at s.

  ms / lams: earlier x0 predictions and their lambdas, newest last (x's own is ms[-1]);
  sched_t: (alpha_t, sigma_t, lambda_t); model_fn(x) -> x0 prediction at t, for the corrector
  (None: no corrector). Returns (x_t, m_t) with m_t None without a corrector."""
  alpha_t, sigma_t, lam_t = sched_t
  h = lam_t - lams[-1]
  rks = [(lams[-(k + 1)] - lams[-1]) / h for k in range(1, order)] + [1.0]
  diffs = [(ms[-(k + 1)] - ms[-1]) / rks[k - 1] for k in range(1, order)]
  R, b, b_h, phi_1 = _coefficients(h, rks, variant)
  base = (sigma_t / sigma_s) * x - alpha_t * phi_1 * ms[-1]
  if diffs:
    rhos_p = torch.tensor([0.5], dtype=torch.float64) if order == 2 else torch.linalg.solve(R[:-1, :-1], b[:-1])
    x_t = base - alpha_t * b_h * _combine(rhos_p, diffs)
  else:
    x_t = base
  if model_fn is None:
    return x_t, None
  m_t = model_fn(x_t)
  rhos_c = torch.tensor([0.5], dtype=torch.float64) if order == 1 else torch.linalg.solve(R, b)
  corr = _combine(rhos_c[:-1], diffs) + float(rhos_c[-1]) * (m_t - ms[-1])
  return base - alpha_t * b_h * corr, m_t


def unipc_sample(sde: SDE, score_fn, x: torch.Tensor, *, steps: int | None = None, eps: float = 1e-3,
                 denoise: bool = True, order: int = 2, variant: str = 'bh2',
                 grid: str = 'logsnr', lower_order_final: bool = True, clip_x0=False,
                 threshold: float = 0.0, threshold_max: float = 0.0, ts=None, callback=None,
                 progress=None) -> torch.Tensor:
  """UniPC from x_T `[B, ...]` at ts[0] over the decreasing times `ts` (default the named
  `grid`, logsnr, time_uniform or karras, of `steps`, default 20, intervals to eps), orders 1-3
  (the corrector makes the update one order higher), `variant` bh1 or bh2; then Tweedie at
  ts[-1] if `denoise`. `callback(Step)` after each step (see SPEC.denoised). Deterministic:
  it takes no generator. clip_x0 / threshold / threshold_max: x0 clipping or dynamic
  thresholding of every data prediction, the final Tweedie step's included
  (`sampling.thresholding`; off by default)."""
  if order not in ORDERS:
    raise ValueError(f'order must be 1, 2 or 3, got {order}')
  if variant not in VARIANTS:
    raise ValueError(f"unknown UniPC variant '{variant}'; choose one of: {', '.join(VARIANTS)}")
  x0_fn = x0_limit(clip_x0, threshold, threshold_max)
  ts = SPEC.times(sde, steps, eps, ts, SPEC.options(grid=grid))
  steps = len(ts) - 1
  sched = KernelAt(sde)
  ms, lams = [tweedie_denoise(sde, score_fn, x, ts[0], x0_fn)], [sched(ts[0])[2]]
  idx = range(1, steps + 1)
  for i in (progress(idx) if progress else idx):
    k = min(order, i)
    if lower_order_final and steps < 10:
      k = min(k, steps + 1 - i)
    alpha_t, sigma_t, lam_t = sched(ts[i])
    model_fn = (lambda y, t=ts[i]: tweedie_denoise(sde, score_fn, y, t, x0_fn)) if i < steps else None
    x, m_t = unipc_update(x, ms, lams, (alpha_t, sigma_t, lam_t), sched(ts[i - 1])[1], k, variant, model_fn)
    if m_t is not None:
      ms, lams = (ms + [m_t])[-3:], (lams + [lam_t])[-3:]
    if callback is not None:
      callback(Step(i, ts[i], x, m_t))
  return tweedie_denoise(sde, score_fn, x, ts[-1], x0_fn) if denoise else x


SPEC = SolverSpec(
    'unipc', unipc_sample, grid=lambda sde, steps, eps, o: time_grid(sde, steps, eps, o.grid),
    default_steps=20, grid_doc='the named `grid` (logsnr, time_uniform, karras) from T to eps, or optimized',
    nfe=lambda steps, o, denoise: steps + denoise, uses=('denoise',), tunable=True,
    denoised="x0 prediction at the step's end (the corrector's model call; None at the last step)",
    stochastic=lambda o: False, choices={'order': ORDERS, 'variant': VARIANTS, 'grid': GRIDS + ('optimized',)})


__all__ = ['unipc_sample', 'unipc_update', 'VARIANTS', 'SPEC']
