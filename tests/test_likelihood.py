"""Exact likelihood through the PF-ODE against analytic log-densities of Gaussian data
(Song et al. 2021, App. D.2)."""
import math

import pytest
import torch

from score_sde.maths.analytic import GaussianMixture, gaussian
from score_sde.likelihood import bits_per_dim, log_likelihood
from score_sde.sdes import SubVPSDE, VESDE, VPSDE

SDES = {'vp': VPSDE(), 'subvp': SubVPSDE(), 've': VESDE()}


@pytest.mark.parametrize('name', list(SDES))
def test_exact_divergence_matches_analytic_density(name):
  sde = SDES[name]
  # VE's prior N(0, 50^2) ignores the data mean; a centred mean keeps that prior error small.
  data = gaussian([0.0, 0.0] if name == 've' else [1.0, -0.5], [0.25, 1.0])
  x = data.sample(200, torch.Generator().manual_seed(0)).double()
  res = log_likelihood(sde, data.score_fn(sde), x, divergence='exact', rtol=1e-6, atol=1e-6)
  per_dim = (res.logp - data.logp(x)).abs() / 2
  assert per_dim.mean() < 0.005 and per_dim.max() < 0.02, per_dim
  # That error is the prior's (p_T is not exactly N(0, I)); with log p_T(z) exact, the solver
  # error alone is ~1e-6 nats/dim.
  exact_T = data.logp(res.z, torch.full((200,), sde.T, dtype=torch.float64), sde)
  assert ((exact_T + res.delta_logp - data.logp(x)).abs() / 2).max() < 5e-5
  assert res.nfe > 0 and res.z.shape == x.shape


def test_mixture_and_images_rank_agnostic():
  """A 2-component mixture in 4-D, laid out as [B, 1, 2, 2] images."""
  sde = VPSDE()
  data = GaussianMixture([[1.0, 0, 0, -1], [-1.0, 0.5, 0, 1]], [[0.3, 0.5, 0.2, 0.4]] * 2)
  x = data.sample(64, torch.Generator().manual_seed(1)).double()
  res = log_likelihood(sde, data.score_fn(sde), x.reshape(64, 1, 2, 2), divergence='exact',
                       rtol=1e-6, atol=1e-6)
  assert ((res.logp - data.logp(x)).abs() / 4).mean() < 0.005


@pytest.mark.parametrize('noise', ['rademacher', 'gaussian'])
def test_hutchinson_is_unbiased(noise):
  """Mixture data (non-diagonal Jacobian): the mean Hutchinson estimate equals the exact trace."""
  sde = VPSDE()
  data = GaussianMixture([[1.0, 1.0, 0.0], [-1.0, -1.0, 0.5]], [[0.3, 0.3, 0.5]] * 2)
  x = data.sample(1, torch.Generator().manual_seed(2)).double().repeat(400, 1)
  exact = log_likelihood(sde, data.score_fn(sde), x[:1], divergence='exact').logp[0]
  res = log_likelihood(sde, data.score_fn(sde), x, noise=noise,
                       generator=torch.Generator().manual_seed(3))
  se = res.logp.std() / math.sqrt(len(x))
  assert res.logp.std() > 1e-3  # each row used its own probe
  assert abs(res.logp.mean() - exact) < 4 * se + 1e-3, (res.logp.mean() - exact, se)


def test_bits_per_dim_by_hand():
  logp = torch.tensor([-3000.0, -1234.5])
  d = 3 * 8 * 8
  centred = bits_per_dim(logp, (2, 3, 8, 8), data_range=(-1.0, 1.0))
  unit = bits_per_dim(logp, (2, 3, 8, 8), data_range=(0.0, 1.0))
  assert torch.allclose(centred, -logp / (d * math.log(2)) + 7)
  assert torch.allclose(unit, -logp / (d * math.log(2)) + 8)
  # Uniform density on [0,1]^D of dequantised 8-bit data is exactly 8 bits/dim.
  assert torch.allclose(bits_per_dim(torch.zeros(1), (1, 5), data_range=(0, 1)), torch.tensor([8.0]))
  # ... and on [-1, 1]^D the uniform density 2^-D is also 8 bits/dim.
  assert torch.allclose(bits_per_dim(torch.tensor([-5 * math.log(2)]), (1, 5)), torch.tensor([8.0]))


def test_bits_per_dim_of_a_known_discrete_distribution():
  """Dequantised bits/dim of data uniform over 4 of the 256 levels per dim, modelled by the
  matching piecewise-uniform density: exactly log2(4) = 2 bits/dim."""
  d = 3
  density = 256.0 / 4  # on [0, 1], the mass 1/4 of each level spread over a bin of width 1/256
  logp = torch.full((5,), d * math.log(density))
  assert torch.allclose(bits_per_dim(logp, (5, d), data_range=(0, 1)), torch.full((5,), 2.0))


def test_bad_arguments():
  sde = VPSDE()
  with pytest.raises(ValueError, match='unknown divergence'):
    log_likelihood(sde, lambda x, t: -x, torch.zeros(2, 2), divergence='bogus')
  with pytest.raises(ValueError, match='unknown probe noise'):
    log_likelihood(sde, lambda x, t: -x, torch.zeros(2, 2), noise='bogus')
