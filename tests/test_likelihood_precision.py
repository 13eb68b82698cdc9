"""The likelihood's low-precision path (`log_likelihood(amp=...)`, config eval.bpd_amp): only the
score runs under autocast; fp16 stays close to full precision on a Gaussian with a full
covariance (whose exact score is two matrix products, which autocast does run in fp16); an outer
autocast context does not leak into the solver; an overflow is recomputed in full precision."""
from __future__ import annotations

import logging
import math

import pytest
import torch

from score_sde.likelihood import log_likelihood
from score_sde.sdes import VPSDE

pytestmark = pytest.mark.usefixtures('one_thread')
D = 16


def _rotated_gaussian():
  """N(mu, Q diag(lam) Q^T) in D dims: (mu, Q, lam, score_fn of the VP marginals, log p_0)."""
  g = torch.Generator().manual_seed(0)
  q, _ = torch.linalg.qr(torch.randn(D, D, generator=g))
  lam = torch.linspace(0.05, 1.5, D)
  mu = torch.randn(D, generator=g) * 0.5
  sde = VPSDE()

  def score_fn(x, t):
    a, s = sde.mean_coeff(t)[:, None], sde.marginal_std(t)[:, None]
    y = (x - a * mu) @ q                       # eigen-coordinates (an fp16 matmul under autocast)
    return -(y / (a ** 2 * lam + s ** 2)) @ q.T

  def logp0(x):
    y = (x - mu) @ q
    return -0.5 * (y ** 2 / lam).sum(1) - 0.5 * torch.log(lam).sum() - 0.5 * D * math.log(2 * math.pi)
  return sde, mu, q, lam, score_fn, logp0


def _data(n=48):
  _, mu, q, lam, _, _ = _rotated_gaussian()
  z = torch.randn(n, D, generator=torch.Generator().manual_seed(1))
  return mu + (z * lam.sqrt()) @ q.T


def test_fp16_close_to_full_precision_and_to_the_analytic_density():
  """Both precisions with the same probe and the same fixed steps (rk4, 40), so that the gap is
  the rounding's alone."""
  sde, _, _, _, score_fn, logp0 = _rotated_gaussian()
  x = _data()
  exact = log_likelihood(sde, score_fn, x[:8], divergence='exact', rtol=1e-6, atol=1e-6)
  assert ((exact.logp - logp0(x[:8])).abs() / D).max() < 0.01   # the score and solver are right
  kw = dict(method='rk4', steps=40)
  full = log_likelihood(sde, score_fn, x, generator=torch.Generator().manual_seed(2), **kw)
  half = log_likelihood(sde, score_fn, x, generator=torch.Generator().manual_seed(2), amp='fp16', **kw)
  gap = (half.logp - full.logp) / D
  assert gap.abs().max() > 0   # fp16 did run
  assert gap.mean().abs() < 2e-3 and gap.abs().max() < 1e-2, gap
  assert half.z.dtype == x.dtype and half.logp.dtype == x.dtype


def test_outer_autocast_does_not_reach_the_solver():
  """amp='none' inside a caller's bf16 autocast gives the full-precision numbers exactly."""
  sde, _, _, _, score_fn, _ = _rotated_gaussian()
  x = _data(8)
  plain = log_likelihood(sde, score_fn, x, generator=torch.Generator().manual_seed(3))
  with torch.autocast('cpu', dtype=torch.bfloat16):
    inside = log_likelihood(sde, score_fn, x, generator=torch.Generator().manual_seed(3))
  torch.testing.assert_close(inside.logp, plain.logp, rtol=0, atol=0)


def test_overflow_is_recomputed_in_full_precision(caplog):
  sde, _, _, _, score_fn, _ = _rotated_gaussian()
  x = _data(8)
  big = torch.eye(D) * 1e5   # 1e5 overflows fp16 (max 65504)

  def overflowing(xt, t):
    return ((score_fn(xt, t) @ big) / 1e5).to(xt.dtype)
  plain = log_likelihood(sde, overflowing, x, generator=torch.Generator().manual_seed(4))
  with caplog.at_level(logging.WARNING):
    half = log_likelihood(sde, overflowing, x, generator=torch.Generator().manual_seed(4), amp='fp16')
  assert 'recomputing' in caplog.text
  torch.testing.assert_close(half.logp, plain.logp)
  assert half.nfe > plain.nfe


def test_stalled_low_precision_solve_is_recomputed(monkeypatch, caplog):
  """dopri5 can stall (step size underflow) when rounding noise sits above rtol / atol: the
  low-precision try is then redone in full precision; a full-precision stall is a one-line
  ValueError, not torchdiffeq's bare AssertionError."""
  import torchdiffeq
  sde, _, _, _, score_fn, _ = _rotated_gaussian()
  x = _data(8)
  real = torchdiffeq.odeint

  seen, always = [], []

  def stalls_under_fp16(func, y0, t, **kw):
    seen.clear()
    with torch.no_grad():
      func(t[0], y0)
    if any(seen) or always:
      raise AssertionError('underflow in dt 0.0')
    return real(func, y0, t, **kw)

  def spy(xt, tt):
    seen.append(torch.is_autocast_enabled('cpu'))
    return score_fn(xt, tt)
  monkeypatch.setattr(torchdiffeq, 'odeint', stalls_under_fp16)
  with caplog.at_level(logging.WARNING):
    res = log_likelihood(sde, spy, x, amp='fp16')
  assert 'recomputing' in caplog.text and torch.isfinite(res.logp).all()
  always.append(True)
  with pytest.raises(ValueError, match='solver stalled'):
    log_likelihood(sde, score_fn, x)


def test_unknown_precision_is_one_line():
  sde, _, _, _, score_fn, _ = _rotated_gaussian()
  with pytest.raises(ValueError, match="unknown likelihood precision 'fp8'"):
    log_likelihood(sde, score_fn, _data(2), amp='fp8')
