"""Guidance, inpainting, colorization and noisy classifiers against closed forms
(Ho & Salimans 2022; Dhariwal & Nichol 2021; Song et al. 2021, App. I)."""
import math

import pytest
import torch

from conftest import assert_moments
from score_sde.maths.analytic import GaussianMixture, gaussian
from score_sde.models.classifier import MLPClassifier
from score_sde.training.classifier import accuracy_by_noise_level, classifier_log_prob_fn, classifier_loss
from score_sde.guidance import bind, classifier_free, classifier_guidance
from score_sde.sampling.inverse import COLOR_MATRIX, colorize, couple, decouple, inpaint, inpaint_score
from score_sde.likelihood import log_likelihood
from score_sde.sampling import SOLVERS, sample
from score_sde.sdes import VPSDE

SDE_ = VPSDE()
MIX = GaussianMixture([[-2.0, 0.0], [2.0, 0.0], [0.0, 2.5]], [[0.25, 0.5], [0.5, 0.25], [0.3, 0.3]])
K = MIX.num_components
N = 3000
STEPS = {'pc': 200, 'ode': None, 'ddpm': 200, 'ddim': 100, 'heun': 40, 'dpm_solver': 20, 'sde': 200}
OPTIONS = {'pc': dict(snr=0.01)}


def exact_cond_score(mix, sde):
  """`s(x, t, y)`: component y's noisy score; y = None or the null label K -> the mixture's."""
  parts = [mix.component(k).score_fn(sde) for k in range(mix.num_components)] + [mix.score_fn(sde)]

  def score(x, t, y):
    if y is None:
      return parts[-1](x, t)
    out = torch.empty_like(x)
    for k in y.unique().tolist():  # evaluate only the labels present
      sel = y == k
      out[sel] = parts[k](x[sel], t[sel])
    return out

  return score


def _sample(score_fn, solver, seed=0, n=N, shape=None):
  gen = torch.Generator().manual_seed(seed)
  return sample(SDE_, score_fn, shape or (n, 2), solver, steps=STEPS.get(solver, 100),
                generator=gen, **OPTIONS.get(solver, {})).x


@pytest.mark.parametrize('solver', list(SOLVERS))
def test_cfg_w1_samples_the_component(solver):
  k = 1 if solver != 'ode' else 2
  x = _sample(bind(classifier_free(exact_cond_score(MIX, SDE_), 1.0, null_label=K), k), solver)
  assert_moments(x, MIX.means[k], MIX.variances[k], bias=0.03)


def test_cfg_w0_gives_the_mixture_and_batched_equals_two_calls():
  exact = exact_cond_score(MIX, SDE_)
  x = _sample(bind(classifier_free(exact, 0.0), 0), 'pc')
  mean, cov = MIX.moments()
  assert_moments(x, mean, torch.diag(cov), bias=0.05)
  xs, t = torch.randn(16, 2), torch.rand(16) * 0.9 + 0.05
  y = torch.randint(0, K, (16,))
  batched = classifier_free(exact, 3.0, null_label=K)(xs, t, y)
  twice = classifier_free(exact, 3.0)(xs, t, y)
  torch.testing.assert_close(batched, twice)
  torch.testing.assert_close(twice, exact(xs, t, None) + 3.0 * (exact(xs, t, y) - exact(xs, t, None)))


def test_larger_w_concentrates_mass():
  """Monotonicity only: the CFG sample law is not the tilted p^(1-w) p(.|y)^w in general."""
  mix = GaussianMixture([[-1.0, 0.0], [1.0, 0.0]], [[1.0, 1.0], [1.0, 1.0]])
  exact = exact_cond_score(mix, SDE_)
  fractions, spreads = [], []
  for w in (1.0, 2.0, 4.0):
    x = _sample(bind(classifier_free(exact, w, null_label=2), 1), 'ode', n=2000)
    fractions.append((x[:, 0] > 0).double().mean().item())
    spreads.append(x[:, 0].var().item())
  assert fractions[0] < fractions[1] < fractions[2], fractions
  assert spreads[0] > spreads[1] > spreads[2], spreads
  assert abs(fractions[0] - 0.5 * (1 + math.erf(1 / math.sqrt(2)))) < 0.04  # w = 1: N(1, 1)


@pytest.mark.parametrize('solver', ['pc', 'ode'])
@pytest.mark.parametrize('w', [2.0, 4.0])
def test_cfg_matches_the_tilted_density_where_it_is_exact(solver, w):
  """Equal-variance Gaussians p = N(0, s^2), p(.|y) = N(m, s^2): the guided noisy score is
  exactly the score of the diffused tilt p^(1-w) p(.|y)^w = N(w m, s^2), so CFG samples it.
  (For mixtures the tilt is not a diffusion's endpoint and only monotonicity is checked.)"""
  uncond, cond = gaussian([0.0], [0.25]).score_fn(SDE_), gaussian([1.0], [0.25]).score_fn(SDE_)
  score = lambda x, t, y: uncond(x, t) if y is None else cond(x, t)
  x = _sample(bind(classifier_free(score, w), 0), solver, shape=(N, 1))
  u = x[:, 0].double()
  assert abs(u.mean() - w) < 4 * math.sqrt(0.25 / N) + 0.02, u.mean() - w
  assert abs(u.var() - 0.25) < 4 * 0.25 * math.sqrt(2 / N) + 0.02, u.var()


def test_classifier_guidance_with_exact_posterior_is_the_conditional_score():
  log_prob_fn = lambda x, t, y: MIX.posterior(x, t, SDE_).gather(1, y[:, None]).squeeze(1)
  guided = classifier_guidance(MIX.score_fn(SDE_), log_prob_fn, 1.0)
  x = torch.randn(64, 2, dtype=torch.float64) * 2
  t = torch.rand(64, dtype=torch.float64) * 0.99 + 0.01
  y = torch.randint(0, K, (64,))
  with torch.no_grad():
    torch.testing.assert_close(guided(x, t, y), exact_cond_score(MIX, SDE_)(x, t, y), rtol=1e-6, atol=1e-6)
  xs = _sample(bind(guided, 0), 'pc')
  assert_moments(xs, MIX.means[0], MIX.variances[0], bias=0.03)


def test_guided_likelihood_is_the_component_density():
  k = 2
  x = MIX.component(k).sample(64, torch.Generator().manual_seed(3)).double()
  score = bind(classifier_free(exact_cond_score(MIX, SDE_), 1.0, null_label=K), k)
  res = log_likelihood(SDE_, score, x, divergence='exact', eps=1e-5, rtol=1e-6, atol=1e-6)
  per_dim = (res.logp - MIX.component(k).logp(x)).abs() / 2
  assert per_dim.mean() < 0.01 and per_dim.max() < 0.03, per_dim  # incl. prior mismatch at T
  comp_T = MIX.component(k).logp(res.z, torch.full((64,), SDE_.T, dtype=torch.float64), SDE_)
  assert ((comp_T + res.delta_logp - MIX.component(k).logp(x)).abs() / 2).max() < 1e-3


RHO, Y_OBS = 0.9, 1.5
COV = torch.tensor([[1.0, RHO], [RHO, 1.0]], dtype=torch.float64)


def correlated_score(x, t):
  alpha, v = SDE_.mean_coeff(t.double()), SDE_.marginal_std(t.double()) ** 2
  cov = alpha[:, None, None] ** 2 * COV + v[:, None, None] * torch.eye(2, dtype=torch.float64)
  return -torch.linalg.solve(cov, x.double().unsqueeze(-1)).squeeze(-1).to(x.dtype)


def test_paper_inpainting_follows_the_schur_conditional():
  """Song et al. App. I.2 projection + Langevin (snr 0.3): bias <= ~0.015 measured (see
  `inpaint`'s docstring; without the corrector the bias is -0.42)."""
  n = 4000
  y, mask = torch.tensor([[Y_OBS, 0.0]]).expand(n, 2), torch.tensor([[1.0, 0.0]])
  x = inpaint(SDE_, correlated_score, y, mask, 'pc', steps=500, snr=0.3,
              generator=torch.Generator().manual_seed(0))
  assert torch.all(x[:, 0] == Y_OBS)
  cond_mean = COV[1, 0] / COV[0, 0] * Y_OBS
  cond_var = COV[1, 1] - COV[1, 0] ** 2 / COV[0, 0]
  u = x[:, 1].double()
  assert abs(u.mean() - cond_mean) < 4 * math.sqrt(cond_var / n) + 0.02, u.mean() - cond_mean
  assert abs(u.var() - cond_var) < 4 * cond_var * math.sqrt(2 / n) + 0.02, u.var() - cond_var


# Solvers that end on a discrete-chain step of variance beta_0 / N > sigma(eps)^2 overshoot the
# point mass y by O(sigma(eps)); PC's final reverse-diffusion step (plus Langevin) by ~0.35.
KNOWN_TOL = {'pc': 0.5, 'ddpm': 5e-3, 'ddim': 5e-3}


@pytest.mark.parametrize('solver', list(SOLVERS))
def test_inpaint_score_drives_known_coordinates_onto_y(solver):
  y, mask = torch.tensor([[Y_OBS, 0.0]]), torch.tensor([[1.0, 0.0]])
  x = _sample(inpaint_score(SDE_, correlated_score, y, mask), solver, n=200)
  err = (x[:, 0] - Y_OBS).abs().max()
  assert err < KNOWN_TOL.get(solver, 1e-3), err
  gen = torch.Generator().manual_seed(0)
  pasted = inpaint(SDE_, correlated_score, y.expand(8, 2), mask, solver, method='score',
                   steps=STEPS.get(solver, 100), generator=gen, **OPTIONS.get(solver, {}))
  assert torch.all(pasted[:, 0] == Y_OBS)
  assert (x[:, 1].mean() - RHO * Y_OBS).abs() < 1.0  # biased: see `inpaint`'s docstring


def test_colour_transform_is_orthogonal_and_grey_maps_to_channel_0():
  torch.testing.assert_close(COLOR_MATRIX @ COLOR_MATRIX.T, torch.eye(3))
  torch.testing.assert_close(COLOR_MATRIX[0], torch.full((3,), 1 / math.sqrt(3)))
  grey = torch.rand(2, 1, 4, 4).expand(2, 3, 4, 4)
  u = decouple(grey)
  torch.testing.assert_close(u[:, 1:], torch.zeros(2, 2, 4, 4), atol=1e-6, rtol=0)
  torch.testing.assert_close(u[:, 0], grey[:, 0] * math.sqrt(3))
  x = torch.randn(2, 3, 5, 5)
  torch.testing.assert_close(couple(decouple(x)), x)


def test_colorize_keeps_the_grey_channel():
  grey = torch.rand(2, 1, 4, 4) * 2 - 1
  score = lambda x, t: -x  # N(0, I) data: the VP noisy marginal stays N(0, I)
  out = colorize(SDE_, score, grey, 'pc', steps=50, generator=torch.Generator().manual_seed(0))
  assert out.shape == (2, 3, 4, 4)
  torch.testing.assert_close(out.mean(1, keepdim=True), grey, atol=1e-5, rtol=0)


def test_tiny_noisy_classifier_learns_and_degrades_with_noise():
  torch.manual_seed(0)
  gen = torch.Generator().manual_seed(0)
  clf = MLPClassifier(dim=2, num_classes=K, hidden=64, depth=2)
  opt = torch.optim.Adam(clf.parameters(), lr=3e-3)
  for _ in range(200):
    x0, y = MIX.sample_with_labels(256, gen)
    loss = classifier_loss(clf, SDE_, x0, y, generator=gen)
    opt.zero_grad()
    loss.backward()
    opt.step()
  x0, y = MIX.sample_with_labels(3000, gen)
  acc = accuracy_by_noise_level(clf, SDE_, x0, y, bins=5, generator=gen)
  assert acc[0] > 0.9, acc
  assert torch.all(acc[1:] <= acc[:-1] + 0.03) and acc[-1] < acc[0] - 0.2, acc
  lp = classifier_log_prob_fn(clf)(x0[:8], torch.full((8,), 0.01), y[:8])
  assert lp.shape == (8,) and torch.all(lp <= 0)
  guided = classifier_guidance(MIX.score_fn(SDE_), classifier_log_prob_fn(clf), 2.0)
  with torch.no_grad():
    assert guided(x0[:8], torch.full((8,), 0.5), y[:8]).shape == (8, 2)


class _LearnedVarianceModel:
  """A conditional score with a learned variance: s = -x + y (0 for None / the null label 10),
  v = +0.5 for a class and -0.5 unconditional."""

  def _cls(self, y, x):
    if y is None:
      return torch.zeros(x.shape[0])
    return torch.where(y == 10, 0.0, y.float())

  def __call__(self, x, t, y=None):
    return -x + self._cls(y, x)[:, None]

  def score_and_variance(self, x, t, y=None):
    v = torch.where(self._cls(y, x) != 0, 0.5, -0.5)[:, None].expand_as(x)
    return self(x, t, y), v


@pytest.mark.parametrize('null_label', [None, 10])
def test_guidance_keeps_a_learned_variance(null_label):
  """CFG: the guided score with the conditional branch's variance (GLIDE); classifier guidance:
  the base model's variance; `bind` forwards both. (Before, the wrappers dropped the variance
  and `ddpm` / `ddim` fell back to a fixed one.)"""
  from score_sde.maths.conventions import variance_fn
  model = _LearnedVarianceModel()
  x, t, y = torch.randn(6, 2), torch.full((6,), 0.5), torch.tensor([1, 2, 3, 1, 2, 3])
  cfg = classifier_free(model, 3.0, null_label=null_label)
  s, v = cfg.score_and_variance(x, t, y)
  torch.testing.assert_close(s, cfg(x, t, y))
  torch.testing.assert_close(s, -x + 3.0 * y.float()[:, None])
  torch.testing.assert_close(v, torch.full_like(x, 0.5))
  bound = bind(cfg, 2)
  s2, v2 = variance_fn(bound)(x, t)
  torch.testing.assert_close(s2, bound(x, t))
  torch.testing.assert_close(v2, torch.full_like(x, 0.5))
  log_prob = lambda xx, tt, yy: -(xx ** 2).sum(1) * yy.float()
  cg = classifier_guidance(bind(model, None), log_prob, 2.0)
  s3, v3 = cg.score_and_variance(x, t, y)
  torch.testing.assert_close(s3, cg(x, t, y))
  torch.testing.assert_close(s3, -x - 4.0 * x * y.float()[:, None])
  torch.testing.assert_close(v3, torch.full_like(x, -0.5))
  assert variance_fn(bind(classifier_free(lambda a, b, c=None: a, 2.0), 1)) is None
