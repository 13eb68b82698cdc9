"""Probability-flow ODE sampling, dx/dt = f - g^2 s / 2 (Song et al. 2021, Eq. 13), from T to eps.

Integrated by torchdiffeq on the tensor's own device (adaptive `dopri5` by default, or any
other torchdiffeq method; fixed-step methods take `steps` steps), or with `method='rk45'` by
scipy's RK45 on the CPU, for parity with score_sde_pytorch (which does the latter).
"""
from __future__ import annotations

import torch

from score_sde.sampling.common import tweedie_denoise
from score_sde.sdes import SDE
from score_sde.utils import full_t

FIXED_STEP_METHODS = ('euler', 'midpoint', 'heun2', 'heun3', 'rk4', 'explicit_adams', 'implicit_adams')
ADAPTIVE_METHODS = ('dopri5', 'dopri8', 'bosh3', 'fehlberg2', 'adaptive_heun', 'tsit5')


def probability_flow_drift(sde: SDE, score_fn):
  """`drift(x [B, ...], t [B]) -> [B, ...]`: the PF-ODE vector field."""
  rsde = sde.reverse(score_fn, probability_flow=True)
  return lambda x, t: rsde.sde(x, t)[0]


def _solve_scipy(drift, x, t0, t1, rtol, atol):
  shape, device, dtype = x.shape, x.device, x.dtype

  def fun(t, y):
    xt = torch.as_tensor(y, dtype=dtype, device=device).reshape(shape)
    return drift(xt, full_t(t, shape[0], xt)).reshape(-1).cpu().double().numpy()

  from scipy import integrate
  sol = integrate.solve_ivp(fun, (t0, t1), x.reshape(-1).cpu().double().numpy(),
                            rtol=rtol, atol=atol, method='RK45')
  if not sol.success:
    raise RuntimeError(f'scipy RK45 failed: {sol.message}')
  return torch.as_tensor(sol.y[:, -1], dtype=dtype, device=device).reshape(shape)


def ode_integrate(drift, x: torch.Tensor, t0: float, t1: float, *, method='dopri5',
                  rtol=1e-5, atol=1e-5, steps: int | None = None) -> torch.Tensor:
  """Integrate dx/dt = drift(x, t) from t0 to t1 and return x(t1) (same shape as x)."""
  method = method.lower()
  if method == 'rk45':
    return _solve_scipy(drift, x, t0, t1, rtol, atol)
  if method not in FIXED_STEP_METHODS + ADAPTIVE_METHODS:
    raise ValueError(f"unknown ODE method '{method}'; choose one of: rk45, "
                     f"{', '.join(ADAPTIVE_METHODS + FIXED_STEP_METHODS)}")
  import torchdiffeq
  func = lambda t, y: drift(y, full_t(t, y.shape[0], y))
  if method in FIXED_STEP_METHODS:
    ts = torch.linspace(t0, t1, (steps or 100) + 1, device=x.device, dtype=x.dtype)
    return torchdiffeq.odeint(func, x, ts, method=method)[-1]
  ts = torch.tensor([t0, t1], device=x.device, dtype=x.dtype)
  return torchdiffeq.odeint(func, x, ts, rtol=rtol, atol=atol, method=method,
                            options=no_overshoot(ts))[-1]


def no_overshoot(ts: torch.Tensor) -> dict:
  """torchdiffeq options that make adaptive solvers step exactly onto the end time instead
  of evaluating past it (the SDE coefficients are undefined for t < 0)."""
  return {'step_t': ts}


def ode_sample(sde: SDE, score_fn, x: torch.Tensor, *, steps: int | None = None, eps: float = 1e-3,
               denoise: bool = True, generator=None, method: str = 'dopri5', rtol: float = 1e-5,
               atol: float = 1e-5, progress=None) -> torch.Tensor:
  """Sample by integrating the PF-ODE from x ~ p_T `[B, ...]` at T to eps, then (if
  `denoise`) one Tweedie step. `steps` applies to fixed-step methods only."""
  x = ode_integrate(probability_flow_drift(sde, score_fn), x, sde.T, eps, method=method,
                    rtol=rtol, atol=atol, steps=steps)
  return tweedie_denoise(sde, score_fn, x, eps) if denoise else x


__all__ = ['ode_sample', 'ode_integrate', 'probability_flow_drift']
