"""Schedules are exact and finite at their end points t = 0 and t = T, for every SDE and
schedule, in float32 and float64, on every CPU (issue #22, cause 0: a `math.cos` constant that
rounds differently from torch's `cos` left log alpha(0) = +1e-20 on one CPU, so sigma(0) and
everything computed from t = 0 were NaN)."""
import math

import pytest
import torch

from score_sde.sdes import SubVPSDE, VESDE, VPSDE

SDES = {'vp': VPSDE(), 'subvp': SubVPSDE(), 'vp_cosine': VPSDE(schedule='cosine'),
        'subvp_cosine': SubVPSDE(schedule='cosine'), 've': VESDE()}
DTYPES = [torch.float32, torch.float64]


@pytest.mark.parametrize('dtype', DTYPES)
@pytest.mark.parametrize('name', sorted(SDES))
def test_end_points_are_finite(name, dtype):
  sde = SDES[name]
  t = torch.tensor([0.0, sde.T], dtype=dtype)
  x = torch.ones(2, 3, dtype=dtype)
  mean, std = sde.marginal_prob(x, t)
  drift, diffusion = sde.sde(x, t)
  for v in (mean, std, drift, diffusion, sde.mean_coeff(t), sde.marginal_std(t)):
    assert torch.isfinite(v).all(), (name, dtype, v)
  assert torch.isfinite(sde.log_snr(t[1:])).all()
  a, g2, r = sde.chain_step(t[1:], dt=sde.T)      # one exact step from s = 0 to T
  assert torch.isfinite(a).all() and torch.isfinite(g2).all() and torch.isfinite(r).all()


@pytest.mark.parametrize('dtype', DTYPES)
@pytest.mark.parametrize('name', ['vp', 'subvp', 'vp_cosine', 'subvp_cosine'])
def test_vp_family_is_exact_at_zero(name, dtype):
  """alpha(0) = 1 and sigma(0) = 0 exactly (not ~1e-4 from float32 rounding of a constant)."""
  sde = SDES[name]
  t = torch.zeros(3, dtype=dtype)
  assert (sde.log_mean_coeff(t) == 0).all()
  assert (sde.mean_coeff(t) == 1).all()
  assert (sde.marginal_std(t) == 0).all()


@pytest.mark.parametrize('dtype', DTYPES)
@pytest.mark.parametrize('name', ['vp', 'subvp', 'vp_cosine', 'subvp_cosine'])
def test_log_mean_coeff_never_positive_near_zero(name, dtype):
  """log alpha(t) <= 0 everywhere (clamped where rounding could push it above), so that
  sigma(t) = sqrt(-expm1(2 log alpha)) is never NaN, down to t = 1e-12."""
  sde = SDES[name]
  t = torch.cat([torch.zeros(1), torch.logspace(-12, 0, 400)]).to(dtype)
  assert (sde.log_mean_coeff(t) <= 0).all()
  assert torch.isfinite(sde.marginal_std(t)).all()


@pytest.mark.parametrize('name', ['vp', 'vp_cosine', 've'])
def test_chain_step_from_zero(name):
  """The exact step from s = 0 (the failing case on the other CPU) is finite, with a = alpha(t)."""
  sde = SDES[name]
  for dtype in DTYPES:
    t = torch.tensor([0.02], dtype=dtype)
    a, g2, r = sde.chain_step(t, 0.02)
    assert torch.isfinite(a).all() and torch.isfinite(g2).all() and torch.isfinite(r).all()
    assert math.isclose(float(a), float(sde.mean_coeff(t.double())), rel_tol=1e-6)
