"""SDEs against closed forms (Song et al. 2021, App. B)."""
import math

import pytest
import torch

from score_sde.sdes import SubVPSDE, VESDE, VPSDE

SDES = {'vp': VPSDE(), 'subvp': SubVPSDE(), 'vp_cosine': VPSDE(schedule='cosine'),
        've': VESDE()}


def lmc(t, b0=0.1, b1=20.0):
  return -0.25 * t ** 2 * (b1 - b0) - 0.5 * t * b0


@pytest.mark.parametrize('shape', [(5, 2), (5, 3, 4, 4)])
def test_marginal_prob_closed_form(shape):
  x = torch.randn(shape, dtype=torch.float64)
  t = torch.linspace(0.01, 1.0, 5, dtype=torch.float64)
  a = torch.exp(lmc(t)).reshape(-1, *[1] * (len(shape) - 1))
  mean, std = VPSDE().marginal_prob(x, t)
  assert torch.allclose(mean, a * x) and torch.allclose(std, torch.sqrt(1 - torch.exp(2 * lmc(t))))
  mean, std = SubVPSDE().marginal_prob(x, t)
  assert torch.allclose(mean, a * x) and torch.allclose(std, 1 - torch.exp(2 * lmc(t)))
  mean, std = VESDE().marginal_prob(x, t)
  assert torch.allclose(mean, x) and torch.allclose(std, 0.01 * 5000.0 ** t)
  assert std.shape == (5,)


def test_cosine_schedule_closed_form():
  sde, s = VPSDE(schedule='cosine'), 0.008
  t = torch.linspace(0.0, 1.0, 11, dtype=torch.float64)
  u = t * sde.COSINE_T_MAX
  abar = torch.cos((u + s) / (1 + s) * math.pi / 2) ** 2 / math.cos(s / (1 + s) * math.pi / 2) ** 2
  assert torch.allclose(sde.mean_coeff(t) ** 2, abar)
  assert sde.mean_coeff(t[-1:]) ** 2 < 1e-4  # the prior is reached


@pytest.mark.parametrize('name', list(SDES))
def test_moment_odes(name):
  """d alpha/dt = f alpha and d var/dt = 2 f var + g^2 for the linear SDE dx = f x dt + g dw."""
  sde = SDES[name]
  t = torch.linspace(0.05, 0.95, 19, dtype=torch.float64)
  h = 1e-6
  f, g = sde.sde(torch.ones(len(t), 1, dtype=torch.float64), t)
  f = f[:, 0]
  dalpha = (sde.mean_coeff(t + h) - sde.mean_coeff(t - h)) / (2 * h)
  var = lambda tt: sde.marginal_std(tt) ** 2
  dvar = (var(t + h) - var(t - h)) / (2 * h)
  assert torch.allclose(dalpha, f * sde.mean_coeff(t), rtol=1e-6, atol=1e-8)
  assert torch.allclose(dvar, 2 * f * var(t) + g ** 2, rtol=1e-5, atol=1e-8)


@pytest.mark.parametrize('name', list(SDES))
def test_prior_logp_integrates_to_one(name):
  sde = SDES[name]
  lim = 8 * sde.prior_std
  grid = torch.linspace(-lim, lim, 801, dtype=torch.float64)
  xx, yy = torch.meshgrid(grid, grid, indexing='ij')
  z = torch.stack([xx.reshape(-1), yy.reshape(-1)], 1)
  mass = sde.prior_logp(z).exp().sum() * (grid[1] - grid[0]) ** 2
  assert abs(mass.item() - 1.0) < 1e-4
  draws = sde.prior_sampling((20000, 2), torch.Generator().manual_seed(0))
  assert abs(draws.std().item() / sde.prior_std - 1) < 0.02
  ref = -0.5 * (z ** 2).sum(1) / sde.prior_std ** 2 - math.log(2 * math.pi * sde.prior_std ** 2)
  assert torch.allclose(sde.prior_logp(z), ref)


def test_vp_discretize_is_ddpm():
  sde, n = VPSDE(), 1000
  i = torch.arange(n)
  betas = 0.1 / n + i / (n - 1) * (20.0 - 0.1) / n
  assert torch.allclose(sde.discrete_betas, betas.double(), atol=1e-12)
  x = torch.randn(n, 2, dtype=torch.float64)
  f, G = sde.discretize(x, i.double() / (n - 1))
  assert torch.allclose(G, torch.sqrt(betas.double()))
  assert torch.allclose(f, (torch.sqrt(1 - betas.double())[:, None] - 1) * x)
  # The table matches the continuous marginal at t_i = (i + 1) / N (Ho et al. 2020's table vs Song et al. 2021, Eq. 11).
  std_cont = sde.marginal_std((i.double() + 1) / n)
  assert (sde.sqrt_1m_alphas_cumprod - std_cont).abs().max() < 1.4e-3
  off_grid = sde.marginal_std(i.double() / (n - 1))
  assert (sde.sqrt_1m_alphas_cumprod - off_grid).abs().max() > 5e-3


def test_ve_discretize_is_smld():
  sde = VESDE(N=10)
  sig = torch.exp(torch.linspace(math.log(0.01), math.log(50.0), 10, dtype=torch.float64))
  assert torch.allclose(sde.discrete_sigmas, sig)
  i = torch.arange(10)
  f, G = sde.discretize(torch.zeros(10, 3), i.double() / 9)
  prev = torch.cat([torch.zeros(1, dtype=torch.float64), sig[:-1]])
  assert torch.allclose(G.double(), torch.sqrt(sig ** 2 - prev ** 2)) and f.abs().max() == 0


@pytest.mark.parametrize('name', list(SDES))
@pytest.mark.parametrize('shape', [(4, 2), (4, 1, 3, 3)])
def test_reverse_drift(name, shape):
  sde = SDES[name]
  x, t = torch.randn(shape, dtype=torch.float64), torch.rand(shape[0], dtype=torch.float64) * 0.9 + 0.05
  score_fn = lambda x, t: -x * (1 + t.reshape(-1, *[1] * (x.ndim - 1)))
  f, g = sde.sde(x, t)
  g2 = (g ** 2).reshape(-1, *[1] * (x.ndim - 1))
  drift, diff = sde.reverse(score_fn).sde(x, t)
  assert torch.allclose(drift, f - g2 * score_fn(x, t)) and torch.allclose(diff, g)
  drift, diff = sde.reverse(score_fn, probability_flow=True).sde(x, t)
  assert torch.allclose(drift, f - 0.5 * g2 * score_fn(x, t)) and diff.abs().max() == 0
  rf, rG = sde.reverse(score_fn).discretize(x, t)
  df, dG = sde.discretize(x, t)
  assert torch.allclose(rf, df - (dG ** 2).reshape(g2.shape) * score_fn(x, t))


@pytest.mark.parametrize('name', list(SDES))
def test_log_snr_inverse(name):
  sde = SDES[name]
  t = torch.linspace(0.01, 0.99, 50, dtype=torch.float64)
  lam = sde.log_snr(t)
  assert torch.all(lam[1:] < lam[:-1])
  assert torch.allclose(sde.t_from_log_snr(lam), t, atol=1e-7)
  assert torch.allclose(lam, torch.log(sde.mean_coeff(t) / sde.marginal_std(t)))


def test_with_steps_rebuilds_tables():
  sde = VPSDE(N=1000).with_steps(10)
  assert sde.N == 10 and len(sde.discrete_betas) == 10
  assert abs(sde.discrete_betas[-1].item() - 2.0) < 1e-12
  assert VESDE().with_steps(1000).N == 1000


@pytest.mark.parametrize('name', list(SDES))
def test_exact_chain_step_is_the_transition_kernel(name):
  """chain_step(t, dt) = (a, G^2, r) of x_t = a x_s + G z, s = t - dt, against quadrature of the
  linear SDE: a = exp(int_s^t f'), G^2 = int_s^t exp(2 int_u^t f') g(u)^2 du (f = f' x)."""
  sde = SDES[name]
  for t, dt in [(0.9, 0.3), (0.5, 0.05), (0.02, 0.02)]:
    a, g2, r = sde.chain_step(torch.tensor([t], dtype=torch.float64), dt)
    u = torch.linspace(t - dt, t, 20001, dtype=torch.float64)
    one = torch.ones(len(u), 1, dtype=torch.float64)
    f, g = sde.sde(one, u)
    log_a = torch.cumulative_trapezoid(f[:, 0], u)            # int_s^u f'
    log_a = torch.cat([torch.zeros(1, dtype=torch.float64), log_a])
    decay = torch.exp(2 * (log_a[-1] - log_a))                 # exp(2 int_u^t f')
    torch.testing.assert_close(a, torch.exp(log_a[-1:]), rtol=1e-7, atol=1e-9)
    torch.testing.assert_close(g2, torch.trapezoid(decay * g ** 2, u).reshape(1), rtol=1e-5, atol=1e-9)
    std = sde.marginal_std
    tt, ss = torch.tensor([t], dtype=torch.float64), torch.tensor([t - dt], dtype=torch.float64)
    torch.testing.assert_close(r, std(ss) ** 2 / std(tt) ** 2)


def test_own_chain_step_is_the_table():
  """dt=None: DDPM's (sqrt(1 - beta_i), beta_i) and SMLD's (1, sigma_i^2 - sigma_{i-1}^2)."""
  vp, ve = VPSDE(N=20), VESDE(N=20)
  i = torch.arange(20)
  a, g2, _ = vp.chain_step(vp.time_of_index(i.double()))
  torch.testing.assert_close(g2, vp.discrete_betas)
  torch.testing.assert_close(a, torch.sqrt(1 - vp.discrete_betas))
  a, g2, r = ve.chain_step(ve.time_of_index(i.double()))
  prev = torch.cat([torch.zeros(1, dtype=torch.float64), ve.discrete_sigmas[:-1]])
  torch.testing.assert_close(g2, ve.discrete_sigmas ** 2 - prev ** 2)
  torch.testing.assert_close(r, prev ** 2 / ve.discrete_sigmas ** 2)
  assert a.eq(1).all()
  assert not SubVPSDE().has_discrete_chain and SubVPSDE().discrete_kernel(i) is None
