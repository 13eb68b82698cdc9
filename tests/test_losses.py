"""Denoising score matching at the exact score equals its analytic minimum (Vincent 2011; Song et al. 2021, Eq. 7),
and a small MLP trained with it learns a 2-D mixture."""
import math

import numpy as np
import pytest
import torch

from score_sde.training import losses
from score_sde.sdes import SubVPSDE, VESDE, VPSDE
from score_sde.maths.utils import bcast

MU, S2 = torch.tensor([1.0, -0.5], dtype=torch.float64), torch.tensor([0.25, 2.0], dtype=torch.float64)
SDES = {'vp': VPSDE(), 'subvp': SubVPSDE(), 've': VESDE()}
EPS = 1e-5


def exact_score(sde, discrete=False):
  """Score of N(alpha mu, alpha^2 S + std^2) with the loss's own perturbation kernel."""
  def coeffs(t):
    if discrete:
      alpha, sigma = sde.discrete_kernel(sde.index_of_time(t))
      return alpha.to(t), sigma.to(t)
    return sde.mean_coeff(t), sde.marginal_std(t)

  def score(x, t):
    a, s = coeffs(t.double())
    a, s = bcast(a, x), bcast(s, x)
    return (-(x - a * MU) / (a ** 2 * S2 + s ** 2)).to(x.dtype)
  return score


def analytic_min(sde, weighting='score'):
  """E_t sum_d alpha^2 S_d / (alpha^2 S_d + std^2) (x g^2/std^2 for likelihood weighting), t ~ U(eps, T)."""
  t = torch.from_numpy(np.linspace(EPS, 1.0, 200001))
  a, s = sde.mean_coeff(t), sde.marginal_std(t)
  per_t = (a[:, None] ** 2 * S2 / (a[:, None] ** 2 * S2 + s[:, None] ** 2)).sum(1)
  if weighting == 'likelihood':
    per_t = per_t * sde.sde(torch.zeros(len(t), 1, dtype=torch.float64), t)[1] ** 2 / s ** 2
  return float(np.trapezoid(per_t.numpy(), t.numpy()) / (1.0 - EPS))


def _draw(n, seed):
  g = torch.Generator().manual_seed(seed)
  return MU + S2.sqrt() * torch.randn(n, 2, generator=g, dtype=torch.float64), g


@pytest.mark.parametrize('name', list(SDES))
def test_dsm_minimum_score_weighting(name):
  sde = SDES[name]
  x0, g = _draw(200000, 0)
  out = losses.get_loss_fn(sde, eps=EPS)(exact_score(sde), x0, generator=g)
  expected = analytic_min(sde)
  se = out.per_sample.std().item() / math.sqrt(len(x0))
  assert abs(out.loss.item() - expected) < 4 * se, (out.loss.item(), expected, se)
  assert expected > 0.1  # the minimum is not zero


@pytest.mark.parametrize('name', ['vp', 'subvp'])
def test_dsm_minimum_likelihood_weighting_and_importance_sampling(name):
  sde = SDES[name]
  x0, g = _draw(100000, 1)
  expected = analytic_min(sde, 'likelihood')
  plain = losses.get_loss_fn(sde, weighting='likelihood', eps=EPS)(exact_score(sde), x0, generator=g)
  imp = losses.get_loss_fn(sde, weighting='likelihood', importance_sampling=True, eps=EPS)(
      exact_score(sde), x0, generator=g)
  for out in (plain, imp):
    se = out.per_sample.std().item() / math.sqrt(len(x0))
    assert abs(out.loss.item() - expected) < 4 * se + 1e-3 * expected, (out.loss.item(), expected)
  assert imp.per_sample.std() < 0.2 * plain.per_sample.std()  # the point of importance sampling


def test_discrete_ddpm_loss_minimum():
  sde = VPSDE()
  x0, g = _draw(200000, 2)
  out = losses.get_loss_fn(sde, continuous=False)(exact_score(sde, discrete=True), x0, generator=g)
  ab = sde.alphas_cumprod
  expected = (ab[:, None] * S2 / (ab[:, None] * S2 + 1 - ab[:, None])).sum(1).mean().item()
  se = out.per_sample.std().item() / math.sqrt(len(x0))
  assert abs(out.loss.item() - expected) < 4 * se
  i = sde.index_of_time(out.t)
  assert torch.allclose(out.t, sde.time_of_index(i.double()).float())  # t on the chain's grid


@pytest.mark.parametrize('name', ['vp', 've'])
def test_discrete_loss_perturbs_with_the_chain_kernel(name):
  """Discrete training draws chain indices i and uses the chain's own kernel (alpha_i, sigma_i)."""
  sde = SDES[name]
  x0 = torch.ones(5000, 1, dtype=torch.float64)
  seen = {}
  def record(x, t):
    seen['x'], seen['t'] = x, t
    return torch.zeros_like(x)
  losses.get_loss_fn(sde, continuous=False)(record, x0, generator=torch.Generator().manual_seed(0))
  i = sde.index_of_time(seen['t'])
  alpha, sigma = sde.discrete_kernel(i)
  z = (seen['x'][:, 0] - alpha) / sigma   # x_i = alpha_i x0 + sigma_i z with x0 = 1
  assert abs(z.mean().item()) < 0.06 and abs(z.std().item() - 1) < 0.04
  assert i.min() == 0 and i.max() == sde.N - 1


def test_discrete_subvp_training_is_refused():
  """Sub-VP has no discrete chain: score_sde_pytorch refuses discrete sub-VP training, and so
  do we (it used to perturb with VP's DDPM table, sigma(0.5) = 0.9599 instead of 0.9209)."""
  with pytest.raises(ValueError, match='SubVPSDE has none; set training.continuous=True'):
    losses.get_loss_fn(SubVPSDE(), continuous=False)


def test_reduce_mean_and_errors():
  sde = VPSDE()
  x0, g = _draw(1000, 3)
  s = losses.get_loss_fn(sde)(exact_score(sde), x0, generator=torch.Generator().manual_seed(0))
  m = losses.get_loss_fn(sde, reduce_mean=True)(exact_score(sde), x0, generator=torch.Generator().manual_seed(0))
  assert torch.allclose(s.loss, 2 * m.loss)
  with pytest.raises(ValueError, match='unknown loss weighting'):
    losses.get_loss_fn(sde, weighting='bogus')
  with pytest.raises(ValueError, match='likelihood weighting only'):
    losses.get_loss_fn(sde, importance_sampling=True)


def test_training_mlp_on_mixture_learns_it():
  """1000 Adam steps on 8 Gaussians: the loss falls and the EMA model's ODE samples have the
  data's moments (to within the accuracy such a short run reaches) and sit on the ring."""
  from score_sde.data import toy_data
  from score_sde.models import MLP, ExponentialMovingAverage, ScoreModel
  from score_sde.sampling import sample
  torch.manual_seed(0)
  data, _ = toy_data.sample_toy('gmm', 20000, seed=0)
  sde = VPSDE()
  model = ScoreModel(MLP(2, hidden=128, depth=2), sde, 'eps', 't999')
  ema = ExponentialMovingAverage(model.parameters(), decay=0.99)
  opt = torch.optim.Adam(model.parameters(), lr=2e-3)
  loss_fn = losses.get_loss_fn(sde)
  history = []
  for _ in range(1000):
    out = loss_fn(model, data[torch.randint(0, len(data), (256,))])
    opt.zero_grad()
    out.loss.backward()
    opt.step()
    ema.update(model.parameters())
    history.append(out.loss.item())
  assert np.mean(history[-100:]) < 0.8 * np.mean(history[:20])
  ema.copy_to(model.parameters())
  with torch.no_grad():
    x = sample(sde, model, (2000, 2), 'ode', generator=torch.Generator().manual_seed(1),
               rtol=1e-3, atol=1e-3).x
  assert (x.mean(0) - data.mean(0)).abs().max() < 0.15
  assert torch.allclose(x.var(0), data.var(0), rtol=0.25)
  radius = x.norm(dim=1)  # the 8 modes sit on a ring of radius 2 sqrt(2)
  assert ((radius - 2 * math.sqrt(2)).abs() < 1.0).float().mean() > 0.85
