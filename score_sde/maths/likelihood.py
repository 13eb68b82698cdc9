"""Exact likelihood through the probability-flow ODE (Song et al. 2021, App. D.2; FFJORD,
Grathwohl et al. 2019):

    log p_eps(x) = log p_T(x_T) + int_eps^T div f_tilde(x_t, t) dt,   f_tilde = f - g^2 s / 2,

integrating the state and the divergence jointly forward from eps to T with torchdiffeq, on
x's device. The divergence is the Hutchinson-Skilling estimate E[v^T J v] (one
vector-Jacobian product per evaluation, the probe v drawn once per integration) or the
exact trace of the Jacobian (D vector-Jacobian products; for small D).

Low precision (`amp`): only the score network runs under autocast (its forward and the
vector-Jacobian product through it); the state, the drift's linear part, the divergence sum
and the solver stay in x's dtype, whatever autocast context the caller is in. 'fp16' is the
format to use: on the digits demo's model (100 test digits, CPU autocast) it moved bits/dim by
+0.0003 and dopri5's NFE by +8%, while 'bf16' (7-bit mantissa) moved bits/dim by -0.021 and the
NFE by +59% (its rounding noise is far above rtol 1e-5). A result that is not finite (an fp16
overflow) or a solve that stalls is recomputed in full precision, with a warning.
"""
from __future__ import annotations

import contextlib
import dataclasses
import logging
import math

import torch

from score_sde.maths.pf_ode import ADAPTIVE_METHODS, FIXED_STEP_METHODS, no_overshoot, probability_flow_drift
from score_sde.maths.conventions import ScoreFn
from score_sde.maths.sdes import SDE
from score_sde.maths.utils import batch_sum, full_t, randn

DIVERGENCES = ('hutchinson', 'exact')
NOISES = ('rademacher', 'gaussian')
AMP_DTYPES = {'none': None, 'fp16': torch.float16, 'bf16': torch.bfloat16}


class SolverStalled(ValueError):
  """The adaptive solver's step size underflowed; `nfe`: the evaluations spent before."""

  def __init__(self, message: str, nfe: int):
    super().__init__(message)
    self.nfe = nfe


@dataclasses.dataclass
class LikelihoodResult:
  """logp: `[B]` log-density of x in nats; z: the latent x_T `[B, ...]`; nfe: drift evaluations;
  prior_logp / delta_logp: `[B]`, the two terms of the change of variables."""
  logp: torch.Tensor
  z: torch.Tensor
  nfe: int
  prior_logp: torch.Tensor
  delta_logp: torch.Tensor


def _probe(x: torch.Tensor, noise: str, generator) -> torch.Tensor:
  v = randn(x.shape, generator, x.device, x.dtype).to(x.device)
  if noise == 'rademacher':
    v = torch.sign(v)
    v[v == 0] = 1.0
  return v


def _divergence(drift, x, t, probe):
  """(drift(x, t), div_x drift(x, t)) with div estimated by v^T J v or computed exactly."""
  with torch.enable_grad():
    x = x.detach().requires_grad_(True)
    f = drift(x, t)
    if probe is not None:
      (vjp,) = torch.autograd.grad(f, x, probe)
      return f.detach(), batch_sum(vjp * probe)
    flat_f = f.reshape(f.shape[0], -1)
    div = torch.zeros(f.shape[0], device=x.device, dtype=x.dtype)
    for i in range(flat_f.shape[1]):
      (g,) = torch.autograd.grad(flat_f[:, i].sum(), x, retain_graph=i + 1 < flat_f.shape[1])
      div = div + g.reshape(g.shape[0], -1)[:, i]
  return f.detach(), div


def log_likelihood(sde: SDE, score_fn: ScoreFn, x: torch.Tensor, *, divergence: str = 'hutchinson',
                   noise: str = 'rademacher', rtol: float = 1e-5, atol: float = 1e-5,
                   eps: float = 1e-5, generator: torch.Generator | None = None,
                   method: str = 'dopri5', steps: int = 100, amp: str = 'none') -> LikelihoodResult:
  """log p(x) of data `x` `[B, ...]` under the PF-ODE model of `score_fn`.

  Args:
    divergence: 'hutchinson' (unbiased estimate) or 'exact' (full trace; D backward passes).
    noise: probe distribution for Hutchinson, 'rademacher' or 'gaussian'.
    rtol, atol: tolerances of the adaptive solver.
    eps: the start time (the density returned is that of p_eps, ~ p_0 for small eps).
    method: a torchdiffeq method ('dopri5' default); fixed-step methods take `steps` steps.
    amp: 'none', 'fp16' or 'bf16': autocast around the score network only (module docstring).
  """
  if divergence not in DIVERGENCES:
    raise ValueError(f"unknown divergence '{divergence}'; choose one of: {', '.join(DIVERGENCES)}")
  if noise not in NOISES:
    raise ValueError(f"unknown probe noise '{noise}'; choose one of: {', '.join(NOISES)}")
  if method not in ADAPTIVE_METHODS + FIXED_STEP_METHODS:
    raise ValueError(f"unknown ODE method '{method}' for the likelihood")
  if amp not in AMP_DTYPES:
    raise ValueError(f"unknown likelihood precision '{amp}'; choose one of: {', '.join(AMP_DTYPES)}")
  kwargs = dict(divergence=divergence, noise=noise, rtol=rtol, atol=atol, eps=eps, method=method, steps=steps)
  if amp == 'none':
    return _integrate(sde, score_fn, x, generator=generator, **kwargs)
  state = generator.get_state() if generator is not None else None
  try:
    res = _integrate(sde, _autocast_score(score_fn, x, AMP_DTYPES[amp]), x, generator=generator, **kwargs)
    if bool(torch.isfinite(res.logp).all()):
      return res
    why, spent = 'is not finite (an overflow)', res.nfe
  except SolverStalled as e:  # rounding noise above the tolerances
    why, spent = f'failed ({e})', e.nfe
  logging.warning('likelihood: the %s result %s; recomputing in %s', amp, why, x.dtype)
  if state is not None:
    generator.set_state(state)  # the same probe as the low-precision try
  again = _integrate(sde, score_fn, x, generator=generator, **kwargs)
  return dataclasses.replace(again, nfe=spent + again.nfe)


def _autocast_score(score_fn, x: torch.Tensor, dtype):
  """`score_fn` run under autocast to `dtype`, returning x's dtype (`score_fn` itself if None)."""
  if dtype is None:
    return score_fn

  def cast(xt, t):
    with torch.autocast(x.device.type, dtype=dtype):
      return score_fn(xt, t).to(x.dtype)
  return cast


def _integrate(sde: SDE, score_fn, x: torch.Tensor, *, divergence, noise, rtol, atol, eps,
               generator, method, steps) -> LikelihoodResult:
  """The joint ODE of (x_t, int div) from eps to T (see `log_likelihood`), outside any autocast."""
  import torchdiffeq
  drift = probability_flow_drift(sde, score_fn)
  probe = _probe(x, noise, generator) if divergence == 'hutchinson' else None
  nfe = 0

  def func(t, state):
    nonlocal nfe
    nfe += 1
    xt = state[0]
    f, div = _divergence(drift, xt, full_t(t, xt.shape[0], xt), probe)
    return f, div

  state0 = (x.detach(), torch.zeros(x.shape[0], device=x.device, dtype=x.dtype))
  ts = torch.tensor([eps, sde.T], device=x.device, dtype=x.dtype)
  fixed = method in FIXED_STEP_METHODS
  kw = {'options': {'step_size': (sde.T - eps) / steps} if fixed else no_overshoot(ts)}
  no_autocast = torch.autocast(x.device.type, enabled=False) if x.device.type in ('cpu', 'cuda') \
      else contextlib.nullcontext()
  with torch.no_grad(), no_autocast:
    try:
      zs, deltas = torchdiffeq.odeint(func, state0, ts, rtol=rtol, atol=atol, method=method, **kw)
    except AssertionError as e:  # torchdiffeq's 'underflow in dt': the step size reached 0
      raise SolverStalled(f'the likelihood ODE solver stalled ({e}) after {nfe} evaluations; '
                          'raise rtol / atol or use a fixed-step method', nfe) from None
  z, delta = zs[-1], deltas[-1]
  prior = sde.prior_logp(z)
  return LikelihoodResult(prior + delta, z, nfe, prior, delta)


def bits_per_dim(logp: torch.Tensor, x_shape, *, data_range=(-1.0, 1.0), n_bits: int = 8) -> torch.Tensor:
  """Dequantised bits/dim of 2^n_bits-level data from continuous log-densities `logp` `[B]`.

  Pixel k in {0..2^n - 1} with uniform dequantisation u is mapped to
  x = lo + (hi - lo)(k + u) / 2^n, a bin of width w = (hi - lo) / 2^n per dimension, so
  -log2 P(k) <= -(log p(x) + D log w) / ln 2 (Theis et al. 2016). For 8 bits
  this is -log p/(D ln 2) + 8 on [0, 1] and + 7 on [-1, 1]. `x_shape` is the batch's shape
  `[B, ...]` (D = prod of the non-batch dims).
  """
  lo, hi = float(data_range[0]), float(data_range[1])
  if hi <= lo:
    raise ValueError(f'data_range must be (lo, hi) with lo < hi, got {data_range}')
  d = math.prod(tuple(x_shape)[1:])
  log_width = math.log((hi - lo) / 2 ** n_bits)
  return -(logp + d * log_width) / (d * math.log(2.0))
