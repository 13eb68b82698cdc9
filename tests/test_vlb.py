"""The discrete-time variational bound (score_sde.vlb) against closed forms: the decoder is a
distribution over the bins, each KL term matches its Gaussian closed form under the exact
score of Gaussian data, the bound is never below the entropy of discretised data and tightens
with N, and learned-variance DDPM sampling reproduces Gaussian moments."""
import math

import numpy as np
import pytest
import torch

from score_sde.maths.chain_posterior import ChainTable
from score_sde.sampling import sample
from score_sde.sdes import SubVPSDE, VPSDE
from score_sde.vlb import discretized_gaussian_log_likelihood, variational_bound



@pytest.fixture(autouse=True)
def float64():
  """These closed-form checks run in float64 (restored afterwards for the other test files)."""
  old = torch.get_default_dtype()
  torch.set_default_dtype(torch.float64)
  yield
  torch.set_default_dtype(old)


def _kernel(sde, t):
  alpha, sigma = sde.discrete_kernel(sde.index_of_time(t).cpu())
  return alpha.to(t), sigma.to(t)


def gaussian_chain_score(sde, m, s):
  """Exact score of x_i = alpha_i x0 + sigma_i z for x0 ~ N(m, diag s^2), on the chain's kernel."""
  def score(x, t):
    alpha, sigma = (v[:, None] for v in _kernel(sde, t))
    return -(x - alpha * m) / (alpha ** 2 * s ** 2 + sigma ** 2)
  return score


def discrete_chain_score(sde, values, probs):
  """Exact score of the chain marginals of 1-D data on `values` with probabilities `probs`."""
  def score(x, t):
    alpha, sigma = (v[:, None] for v in _kernel(sde, t))
    diff = x - alpha * values[None, :]                      # [B, n]
    logw = torch.log(probs)[None, :] - diff ** 2 / (2 * sigma ** 2)
    w = torch.softmax(logw, dim=1)
    return (-(w * diff).sum(1, keepdim=True)) / sigma ** 2
  return score


def grid(n_bits):
  return torch.linspace(-1, 1, 2 ** n_bits)


@pytest.mark.parametrize('n_bits', [3, 8])
def test_decoder_sums_to_one_over_the_bins(n_bits):
  x = grid(n_bits)[:, None].expand(-1, 7)
  mean = torch.tensor([-1.3, -1.0, -0.2, 0.0, 0.5, 0.999, 2.0])
  log_scale = torch.log(torch.tensor([0.002, 0.05, 0.3, 1.0, 3.0, 1e-3, 0.5]))
  logp = discretized_gaussian_log_likelihood(x, mean, log_scale, n_bits=n_bits)
  torch.testing.assert_close(torch.logsumexp(logp, 0), torch.zeros(7), atol=1e-9, rtol=0)
  assert torch.isfinite(logp).all()
  # data range (0, 1): the same masses
  logp01 = discretized_gaussian_log_likelihood((x + 1) / 2, (mean + 1) / 2, log_scale - math.log(2),
                                               data_range=(0.0, 1.0), n_bits=n_bits)
  torch.testing.assert_close(logp01, logp)


def _closed_form_terms(table, x0, m, s, variance):
  """E over x_k ~ q(x_k | x0) of every L_k (k >= 1) for 1-D Gaussian data N(m, s^2)."""
  out = []
  for k in range(1, table.K):
    alpha, sigma = table.alphas[k].item(), table.sigmas[k].item()
    gain = alpha * s ** 2 / (alpha ** 2 * s ** 2 + sigma ** 2)   # x0_hat = m + gain (x_k - alpha m)
    err2 = (x0 - m) ** 2 * (1 - gain * alpha) ** 2 + gain ** 2 * sigma ** 2
    lq = table.log_beta_tilde_clipped[k].item()
    lp = lq if variance == 'small' else table.log_beta[k].item()
    c0 = table.coef_x0[k].item()
    out.append(0.5 * (lp - lq + math.exp(lq - lp) - 1) + 0.5 * c0 ** 2 * err2 / math.exp(lp))
  return torch.tensor(out)


def _closed_form_decoder(table, x0, m, s, n_bits=8, n_nodes=80):
  """E over x_1 of the decoder NLL by Gauss-Hermite quadrature (x0_hat is linear in z)."""
  alpha, sigma = table.alphas[0].item(), table.sigmas[0].item()
  gain = alpha * s ** 2 / (alpha ** 2 * s ** 2 + sigma ** 2)
  z, w = np.polynomial.hermite_e.hermegauss(n_nodes)
  x0_hat = m + gain * (alpha * x0 + sigma * torch.from_numpy(z) - alpha * m)
  half_log_var = 0.5 * table.log_beta_tilde_clipped[0]
  nll = -discretized_gaussian_log_likelihood(torch.full_like(x0_hat, x0), x0_hat, half_log_var, n_bits=n_bits)
  return float((nll * torch.from_numpy(w)).sum() / math.sqrt(2 * math.pi))


@pytest.mark.parametrize('variance', ['small', 'large'])
def test_each_term_matches_its_closed_form(variance):
  sde, m, s, copies = VPSDE(N=50), 0.2, 0.3, 20000
  x0 = float(grid(8)[150])
  x = torch.full((copies, 1), x0)
  res = variational_bound(sde, gaussian_chain_score(sde, m, s), x, variance=variance,
                          generator=torch.Generator().manual_seed(0))
  assert res.terms.shape == (copies, 51) and res.nfe == 50
  table = ChainTable(sde)
  mc, se = res.terms.mean(0), res.terms.std(0) / math.sqrt(copies)
  prior = 0.5 * (table.sigmas[-1] ** 2 + (table.alphas[-1] * x0) ** 2 - 1 - 2 * torch.log(table.sigmas[-1]))
  torch.testing.assert_close(res.terms[:, 0], torch.full((copies,), prior.item()), rtol=1e-12, atol=1e-12)
  want = _closed_form_terms(table, x0, m, s, variance).flip(0)   # L_{K-1} ... L_1
  assert ((mc[1:-1] - want).abs() <= 4.5 * se[1:-1] + 1e-9).all(), (mc[1:-1], want)
  if variance == 'small':
    dec = _closed_form_decoder(table, x0, m, s)
    assert abs(mc[-1].item() - dec) < 4.5 * se[-1].item() + 1e-9, (mc[-1], dec)
  torch.testing.assert_close(res.bpd, res.terms.sum(1) / math.log(2))


def _discrete_data(n_bits=4):
  values = grid(n_bits)
  logits = -(values - 0.1) ** 2 / (2 * 0.35 ** 2)
  probs = torch.softmax(logits, 0)
  return values, probs, float(-(probs * probs.log()).sum())


def _expected_bound(sde, n_bits, copies=200, **kw):
  values, probs, entropy = _discrete_data(n_bits)
  x = values.repeat_interleave(copies)[:, None]
  res = variational_bound(sde, discrete_chain_score(sde, values, probs), x, n_bits=n_bits,
                          generator=torch.Generator().manual_seed(1), **kw)
  per_value = res.nats.reshape(len(values), copies)
  mean = (per_value.mean(1) * probs).sum().item()
  se = math.sqrt(((per_value.var(1) / copies) * probs ** 2).sum().item())
  return mean, se, entropy


def test_bound_is_above_the_entropy_and_tightens_with_N():
  gaps = []
  for n in (50, 200, 1000):
    mean, se, entropy = _expected_bound(VPSDE(N=n), 4)
    assert mean > entropy - 3 * se, (n, mean, entropy)
    gaps.append(mean - entropy)
  assert gaps[0] > gaps[1] > gaps[2] > 0, gaps
  assert gaps[2] < 0.1 * gaps[0], gaps


def test_strided_bound_is_a_valid_looser_bound():
  full, se_f, entropy = _expected_bound(VPSDE(N=1000), 4, copies=100)
  strided, se_s, _ = _expected_bound(VPSDE(N=1000), 4, copies=100, steps=50)
  assert strided > entropy and strided > full - 3 * (se_f + se_s)


class LearnedGaussian:
  """The exact chain score of N(m, diag s^2) data and, as IDDPM's v, the interpolation that
  makes each reverse step's variance the exact one: beta_tilde + c0^2 Var[x0 | x_t]."""

  def __init__(self, sde, m, s, steps):
    self.sde, self.m, self.s = sde, m, s
    self.score = gaussian_chain_score(sde, m, s)
    self.steps = steps

  def __call__(self, x, t):
    return self.score(x, t)

  def score_and_variance(self, x, t):
    table = ChainTable(self.sde, self.steps)
    idx = self.sde.index_of_time(t).cpu()
    k = torch.tensor([table.tau.index(int(i)) for i in idx])
    alpha, sigma = table.alphas[k][:, None], table.sigmas[k][:, None]
    post_var = self.s ** 2 * sigma ** 2 / (alpha ** 2 * self.s ** 2 + sigma ** 2)
    c0 = table.coef_x0[k][:, None]
    beta_tilde = torch.exp(table.log_beta_tilde_clipped[k])[:, None]
    log_beta = table.log_beta[k][:, None]
    target = torch.log(beta_tilde + c0 ** 2 * post_var)
    frac = (target - torch.log(beta_tilde)) / (log_beta - torch.log(beta_tilde))
    return self.score(x, t), (2 * frac - 1).expand_as(x)


def test_learned_variance_ddpm_reproduces_gaussian_moments():
  sde, steps, n = VPSDE(N=1000), 10, 40000
  m, s = torch.tensor([0.5, -0.3]), torch.tensor([0.2, 0.6])
  model = LearnedGaussian(sde, m, s, steps)
  gen = torch.Generator().manual_seed(3)
  learned = sample(sde, model, (n, 2), 'ddpm', steps=steps, generator=gen).x
  small = sample(sde, model, (n, 2), 'ddpm', steps=steps, variance='small',
                 generator=torch.Generator().manual_seed(3)).x
  assert (learned.mean(0) - m).abs().max() < 4 * s.max() / math.sqrt(n)
  var_se = s ** 2 * math.sqrt(2 / n)
  assert ((learned.var(0) - s ** 2).abs() < 4 * var_se).all(), learned.var(0)
  assert ((small.var(0) - s ** 2).abs() > 10 * var_se).any(), small.var(0)   # fixed variance is off


def test_learned_variance_endpoints_match_fixed_variances():
  sde, x = VPSDE(N=30), grid(8)[torch.randint(0, 256, (64, 3), generator=torch.Generator().manual_seed(0))]
  m, s = 0.0, 0.5
  base = gaussian_chain_score(sde, m, s)

  class Const:
    def __init__(self, v):
      self.v = v

    def __call__(self, x, t):
      return base(x, t)

    def score_and_variance(self, x, t):
      return base(x, t), torch.full_like(x, self.v)

  run = lambda f, var: variational_bound(sde, f, x, variance=var, generator=torch.Generator().manual_seed(5))
  torch.testing.assert_close(run(Const(-1.0), 'learned').terms, run(base, 'small').terms)
  lo, hi = run(Const(1.0), 'learned').terms, run(base, 'large').terms
  torch.testing.assert_close(lo[:, :-1], hi[:, :-1])   # all but the decoder (IDDPM's clipped large)


def test_bad_inputs_are_refused():
  sde = VPSDE(N=50)
  score = gaussian_chain_score(sde, 0.0, 0.5)
  with pytest.raises(ValueError, match='grid'):
    variational_bound(sde, score, torch.full((2, 1), 0.1234))
  with pytest.raises(ValueError, match='learned'):
    variational_bound(sde, score, torch.zeros(2, 1) - 1, variance='learned')
  with pytest.raises(ValueError, match='degenerate'):
    variational_bound(VPSDE(N=10), score, torch.zeros(2, 1) - 1)
  with pytest.raises(ValueError, match='no discrete chain'):
    variational_bound(SubVPSDE(N=50), score, torch.zeros(2, 1) - 1)
