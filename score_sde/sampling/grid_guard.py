"""The distribution guard of the optimized grid (`GridTuning.guard`, issue 26).

The tuning objective of `optimized_grid` is a per-sample endpoint error: it can buy the typical
trajectory at the expense of the few that pass near a boundary between modes, which moves mass
between modes and makes the sample distribution worse than the log-SNR grid's while the median
error improves. The guard checks the tuned grid against the log-SNR grid on a guard batch of G
fresh prior draws (seed + 1, not the pilot): the distribution proxy of a grid is the sliced W2
between the solver's endpoints and the exact PF-ODE endpoints of the same draws (a dopri5
solve at `ref_tol`). The exact endpoints are samples of the model's own distribution, so the
proxy is 0 for an exact solver and measures the solver's distribution error, not sampling
noise (W2 <= the RMS endpoint error, the pairing being one coupling). Candidates: the tuned
grid pulled towards the log-SNR grid in lambda, lambda_a = lambda_logsnr + a (lambda_tuned -
lambda_logsnr), a = 1, 3/4, 1/2, 1/4; the first whose proxy is at most the log-SNR grid's is
kept, else the log-SNR grid. Cost: one reference solve of G draws and at most 5 solver runs.
"""
from __future__ import annotations

import logging

import torch

from score_sde.sampling.grids import KernelAt, logsnr_grid, times_of_lambdas
from score_sde.maths.pf_ode import ode_integrate, probability_flow_drift
from score_sde.sampling.spec import REGISTRY
from score_sde.maths.sdes import SDE

PULLS = (1.0, 0.75, 0.5, 0.25)
DIRECTIONS = 256


_REFERENCES: dict[str, torch.Tensor] = {}  # reference PF-ODE endpoints of pilot / guard draws


def reference_endpoints(sde: SDE, score_fn, x_T: torch.Tensor, eps: float, tol: float,
                        memo_key: str | None = None) -> torch.Tensor:
  """The PF-ODE endpoints at eps `[P, ...]` of x_T (dopri5 at rtol = atol = tol); kept in
  memory under `memo_key` (the model's cache key and the draws; None: not kept), so that the
  grids of several NFE of one model share their pilot and guard solves."""
  if memo_key is not None and memo_key in _REFERENCES:
    return _REFERENCES[memo_key]
  with torch.no_grad():
    ref = ode_integrate(probability_flow_drift(sde, score_fn), x_T, sde.T, eps, rtol=tol, atol=tol)
  if memo_key is not None:
    while len(_REFERENCES) >= 8:
      _REFERENCES.pop(next(iter(_REFERENCES)))
    _REFERENCES[memo_key] = ref
  return ref


def sliced_gap(x: torch.Tensor, ref: torch.Tensor, directions: int = DIRECTIONS, seed: int = 0) -> float:
  """Sliced W2 between the point sets x and ref `[G, ...]` (flattened) over `directions` unit
  directions drawn from `seed`: sqrt(mean over directions of the 1-D W2^2 of the sorted
  projections)."""
  x, ref = x.reshape(x.shape[0], -1).double().cpu(), ref.reshape(ref.shape[0], -1).double().cpu()
  proj = torch.randn(directions, x.shape[1], generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
  proj = proj / proj.norm(dim=1, keepdim=True)
  px, pr = torch.sort(x @ proj.T, dim=0).values, torch.sort(ref @ proj.T, dim=0).values
  return float((px - pr).pow(2).mean().sqrt())


def guard_grid(sde: SDE, score_fn, solver: str, tuned: list[float], eps: float, shape, options: dict,
               tuning, device=None, dtype=torch.float32, memo: str | None = None) -> tuple[list[float], dict]:
  """The grid the guard keeps (see the module docstring) and a report {'pull': the kept a (0:
  the log-SNR grid), 'gap': {a: proxy}}, for the tuned times `tuned` `[K + 1]` of `solver`
  with `options` (those that shape its error), on `tuning.guard` draws of per-sample `shape`;
  memo: the model's key for keeping the guard batch's reference solve in memory (None: not kept)."""
  steps, run = len(tuned) - 1, REGISTRY[solver].fn
  gen = torch.Generator(device=device or 'cpu').manual_seed(tuning.seed + 1)
  x_T = sde.prior_sampling((tuning.guard,) + tuple(shape), gen, device or 'cpu').to(dtype)
  key = memo and f'{memo}|guard|{list(x_T.shape)}|{eps!r}|{tuning.ref_tol!r}|{tuning.seed}|{dtype}'
  ref = reference_endpoints(sde, score_fn, x_T, eps, tuning.ref_tol, key)
  kernel = KernelAt(sde)
  base = logsnr_grid(sde, steps, eps)
  lam_b, lam_t = kernel.lam(base), kernel.lam(list(tuned))

  def gap(ts):
    return sliced_gap(run(sde, score_fn, x_T, ts=ts, denoise=False, **options), ref, seed=tuning.seed)
  report = {'pull': 0.0, 'gap': {0.0: gap(base)}}
  for a in PULLS:
    ts = list(tuned) if a == 1.0 else times_of_lambdas(sde, [b + a * (t - b) for b, t in zip(lam_b, lam_t)], eps)
    report['gap'][a] = gap(ts)
    if report['gap'][a] <= report['gap'][0.0]:
      report['pull'] = a
      return ts, report
  logging.info('optimized grid (%s, %d steps): the tuned grid moves the distribution more than the '
               'log-SNR grid on the guard batch (sliced W2 %.3g vs %.3g); using the log-SNR grid',
               solver, steps, report['gap'][1.0], report['gap'][0.0])
  return base, report


__all__ = ['guard_grid', 'sliced_gap', 'PULLS']
