"""The probability-flow ODE dx/dt = f(x, t) - g(t)^2 s(x, t) / 2 (Song et al. 2021, Eq. 13) and
its numerical integration: torchdiffeq on the tensor's own device (adaptive methods step exactly
onto every requested time, never past the end), or scipy's RK45 on the CPU (`method='rk45'`,
as score_sde_pytorch). The ODE sampler and the likelihood both integrate through here.
"""
from __future__ import annotations

import torch

from score_sde.maths.sdes import SDE
from score_sde.maths.utils import full_t

FIXED_STEP_METHODS = ('euler', 'midpoint', 'heun2', 'heun3', 'rk4', 'explicit_adams', 'implicit_adams')
ADAPTIVE_METHODS = ('dopri5', 'dopri8', 'bosh3', 'fehlberg2', 'adaptive_heun', 'tsit5')


def probability_flow_drift(sde: SDE, score_fn):
  """`drift(x [B, ...], t [B]) -> [B, ...]`: the PF-ODE vector field."""
  rsde = sde.reverse(score_fn, probability_flow=True)
  return lambda x, t: rsde.sde(x, t)[0]


def _solve_scipy(drift, x, ts, rtol, atol):
  """scipy RK45 from ts[0] through the times ts; the states at ts[1:], each shaped as x."""
  shape, device, dtype = x.shape, x.device, x.dtype

  def fun(t, y):
    xt = torch.as_tensor(y, dtype=dtype, device=device).reshape(shape)
    return drift(xt, full_t(t, shape[0], xt)).reshape(-1).cpu().double().numpy()

  from scipy import integrate
  sol = integrate.solve_ivp(fun, (ts[0], ts[-1]), x.reshape(-1).cpu().double().numpy(),
                            rtol=rtol, atol=atol, method='RK45', t_eval=ts[1:] if len(ts) > 2 else None)
  if not sol.success:
    raise RuntimeError(f'scipy RK45 failed: {sol.message}')
  cols = range(sol.y.shape[1]) if len(ts) > 2 else [-1]
  return [torch.as_tensor(sol.y[:, k], dtype=dtype, device=device).reshape(shape) for k in cols]


def ode_trajectory(drift, x: torch.Tensor, ts, *, method='dopri5', rtol=1e-5, atol=1e-5) -> list:
  """Integrate dx/dt = drift(x, t) from ts[0] through the times ts (floats, monotone): the
  states `[B, ...]` at ts[1:]. Fixed-step methods take one step per interval of ts; adaptive
  ones step exactly onto every time of ts (no evaluation past the end)."""
  method = method.lower()
  ts = [float(t) for t in ts]
  if method == 'rk45':
    return _solve_scipy(drift, x, ts, rtol, atol)
  if method not in FIXED_STEP_METHODS + ADAPTIVE_METHODS:
    raise ValueError(f"unknown ODE method '{method}'; choose one of: rk45, "
                     f"{', '.join(ADAPTIVE_METHODS + FIXED_STEP_METHODS)}")
  import torchdiffeq
  func = lambda t, y: drift(y, full_t(t, y.shape[0], y))
  tt = torch.tensor(ts, device=x.device, dtype=x.dtype)
  if method in FIXED_STEP_METHODS:
    return list(torchdiffeq.odeint(func, x, tt, method=method)[1:])
  return list(torchdiffeq.odeint(func, x, tt, rtol=rtol, atol=atol, method=method,
                                 options=no_overshoot(tt))[1:])


def ode_integrate(drift, x: torch.Tensor, t0: float, t1: float, *, method='dopri5',
                  rtol=1e-5, atol=1e-5, steps: int | None = None) -> torch.Tensor:
  """Integrate dx/dt = drift(x, t) from t0 to t1 and return x(t1) (same shape as x); fixed-step
  methods take `steps` (default 100) uniform steps."""
  ts = [t0, t1]
  if method.lower() in FIXED_STEP_METHODS:
    ts = torch.linspace(t0, t1, (steps or 100) + 1, dtype=x.dtype).tolist()
  return ode_trajectory(drift, x, ts, method=method, rtol=rtol, atol=atol)[-1]


def no_overshoot(ts: torch.Tensor) -> dict:
  """torchdiffeq options that make adaptive solvers step exactly onto the end time instead
  of evaluating past it (the SDE coefficients are undefined for t < 0)."""
  return {'step_t': ts}
