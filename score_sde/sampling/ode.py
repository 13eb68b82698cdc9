"""Probability-flow ODE sampling, dx/dt = f - g^2 s / 2 (Song et al. 2021, Eq. 13), from T to eps.

Integrated by torchdiffeq on the tensor's own device (adaptive `dopri5` by default, or any
other torchdiffeq method; fixed-step methods take `steps` steps), or with `method='rk45'` by
scipy's RK45 on the CPU, for parity with score_sde_pytorch (which does the latter); the
integration itself is `score_sde.maths.pf_ode`'s, shared with the likelihood.
"""
from __future__ import annotations

import torch

from score_sde.maths.pf_ode import (ADAPTIVE_METHODS, FIXED_STEP_METHODS, ode_integrate, ode_trajectory,
                                    probability_flow_drift)
from score_sde.maths.sdes import SDE
from score_sde.sampling.common import Step, tweedie_denoise
from score_sde.sampling.grids import uniform_grid
from score_sde.sampling.spec import SolverSpec


def ode_sample(sde: SDE, score_fn, x: torch.Tensor, *, steps: int | None = None, eps: float = 1e-3,
               denoise: bool = True, method: str = 'dopri5', rtol: float = 1e-5,
               atol: float = 1e-5, ts=None, callback=None, progress=None) -> torch.Tensor:
  """Sample by integrating the PF-ODE from x ~ p_T `[B, ...]` at T to ts[-1], then (if
  `denoise`) one Tweedie step there. `ts`: decreasing times (x is at ts[0]; default the SPEC's
  grid of `steps`, eps): the step times of a fixed-step method; for adaptive methods (and
  rk45) the times at which the trajectory is recorded. `callback(Step)` is called after the
  solve (the solvers have no step hook) for every recorded time ts[i], i >= 1, with denoised
  None. Deterministic: it takes no generator."""
  ts = SPEC.times(sde, steps, eps, ts, SPEC.options(method=method))
  states = ode_trajectory(probability_flow_drift(sde, score_fn), x, ts, method=method, rtol=rtol, atol=atol)
  for i, state in enumerate(states if callback is not None else ()):
    callback(Step(i + 1, ts[i + 1], state, None))
  return tweedie_denoise(sde, score_fn, states[-1], ts[-1]) if denoise else states[-1]


METHODS = ('rk45',) + ADAPTIVE_METHODS + FIXED_STEP_METHODS
EVALS_PER_STEP = {'euler': 1, 'midpoint': 2, 'heun2': 2, 'heun3': 3, 'rk4': 4}  # fixed-step methods


def _grid(sde: SDE, steps: int, eps: float, o) -> list[float]:
  """Fixed-step methods: `steps` uniform steps; adaptive ones: [T, eps] (their own steps)."""
  return uniform_grid(sde, steps, eps) if o.method.lower() in FIXED_STEP_METHODS else [sde.T, eps]


def _nfe(steps: int, o, denoise: bool):
  per_step = EVALS_PER_STEP.get(o.method.lower())  # adaptive and Adams methods: not known in advance
  return None if per_step is None else steps * per_step + denoise


SPEC = SolverSpec(
    'ode', ode_sample, grid=_grid, default_steps=100, nfe=_nfe, uses=('denoise',),
    grid_doc='fixed-step methods: steps uniform steps in t from T to eps; adaptive: [T, eps]',
    denoised='None (reported after the solve, which has no step hook)', stochastic=lambda o: False,
    choices={'method': METHODS})


__all__ = ['ode_sample', 'ode_integrate', 'ode_trajectory', 'probability_flow_drift', 'SPEC']
