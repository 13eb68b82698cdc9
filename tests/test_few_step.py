"""Few-step sampling (issue 26): the analytical first step is exact at t = T for Gaussian data,
iPNDM converges at its order on a smooth problem and goes through sample() (NFE, ts, callback,
grid='optimized'), and the optimized grid's distribution guard keeps the tuned grid's sliced W2
no worse than the log-SNR grid's, on a mixture it was not tuned on."""
from __future__ import annotations

import math

import pytest
import torch

from score_sde.maths.analytic import GaussianMixture, gaussian
from score_sde.sampling import grid_guard, optimized_grid as og
from score_sde.sampling import sample
from score_sde.sampling.common import tweedie_denoise
from score_sde.sampling.grid_guard import guard_grid, sliced_gap
from score_sde.sampling.grids import KernelAt, logsnr_grid
from score_sde.sampling.ipndm import ab_coefficients, gaussian_x0
from score_sde.sampling.ode import ode_integrate, probability_flow_drift
from score_sde.sdes import SubVPSDE, VESDE, VPSDE

pytestmark = pytest.mark.usefixtures('one_thread')
DATA = gaussian(torch.tensor([1.0, -2.0, 0.5]), torch.tensor([0.25, 4.0, 1.0]))


@pytest.fixture(autouse=True)
def empty_memory_cache():
  og._MEMORY.clear()
  grid_guard._REFERENCES.clear()
  yield
  og._MEMORY.clear()
  grid_guard._REFERENCES.clear()


@pytest.mark.parametrize('sde', [VPSDE(), SubVPSDE(), VESDE(), VPSDE(schedule='cosine')],
                         ids=['vp', 'subvp', 've', 'vpcos'])
def test_analytic_first_step_is_exact_for_gaussian_data(sde):
  x = sde.prior_sampling((64, 3), torch.Generator().manual_seed(0)).double()
  exact = tweedie_denoise(sde, DATA.score_fn(sde), x, sde.T)  # the x0 prediction of the exact score
  got = gaussian_x0(sde, x, sde.T, DATA.means[0], DATA.variances[0])
  torch.testing.assert_close(got, exact, rtol=1e-12, atol=1e-12)
  full = gaussian_x0(sde, x, sde.T, DATA.means[0], torch.diag(DATA.variances[0]))  # [D, D] covariance
  torch.testing.assert_close(full, exact, rtol=1e-12, atol=1e-12)
  wrong = gaussian_x0(sde, x, sde.T, 0.0, 1.0)  # other moments: another prediction
  assert (wrong - exact).abs().max() > 1e-3


def test_full_covariance_closed_form_is_the_exact_x0_of_correlated_data():
  """E[x0 | x_t] of N(m, S) with a full S: m + alpha S (alpha^2 S + v_k I)^-1 (x - alpha m)."""
  sde, t = VPSDE(), 0.4
  a = torch.tensor([[1.0, 0.6], [0.0, 0.5]], dtype=torch.float64)
  cov, m = a @ a.T, torch.tensor([0.3, -1.0], dtype=torch.float64)
  x = torch.randn(16, 2, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
  k = KernelAt(sde)
  alpha, var = k.alpha(t), k.sigma(t) ** 2
  want = m + (alpha * cov @ torch.linalg.inv(alpha ** 2 * cov + var * torch.eye(2, dtype=torch.float64))
              @ (x - alpha * m).T).T
  torch.testing.assert_close(gaussian_x0(sde, x, t, m, cov), want, rtol=1e-10, atol=1e-10)


def test_ipndm_with_the_analytical_first_step_saves_one_evaluation_and_nothing_else():
  """For Gaussian data with its moments the analytic first step equals the model's: same
  samples and callbacks, one NFE fewer."""
  sde = VPSDE()
  x_T = sde.prior_sampling((32, 3), torch.Generator().manual_seed(2)).double()
  runs = {}
  for first in ('model', 'analytic'):
    calls = []
    runs[first] = sample(sde, DATA.score_fn(sde), None, 'ipndm', steps=6, x_init=x_T, first_step=first,
                         data_mean=DATA.means[0], data_var=DATA.variances[0],
                         callback=lambda step: calls.append(step)), calls
  (model, calls_m), (analytic, calls_a) = runs['model'], runs['analytic']
  assert model.nfe == 7 and analytic.nfe == 6  # 6 steps + Tweedie, less the first evaluation
  torch.testing.assert_close(analytic.x, model.x, rtol=1e-10, atol=1e-10)
  assert [s.i for s in calls_a] == list(range(1, 7)) and calls_a[-1].denoised is None
  assert [s.t for s in calls_a] == [s.t for s in calls_m]


def test_ab_coefficients_integrate_polynomials_exactly():
  nodes, target = [0.7, 1.0, 1.6, 2.5], 0.2  # newest first, uneven steps, integrating downwards
  for k in range(1, 5):
    c = ab_coefficients(nodes[:k], target)
    for deg in range(k):  # (1/h) * integral of s^deg over [nodes[0], target]
      want = (target ** (deg + 1) - nodes[0] ** (deg + 1)) / (deg + 1) / (target - nodes[0])
      assert math.isclose(sum(cj * n ** deg for cj, n in zip(c, nodes)), want, rel_tol=1e-12)
  assert ab_coefficients([2.0, 1.0, 0.0], 3.0) == pytest.approx([23 / 12, -16 / 12, 5 / 12])  # iPNDM's


def _orders(steps, **options):
  """log2 of the error ratios when the steps double, on the Gaussian data's exact PF-ODE."""
  sde = VPSDE()
  score_fn = DATA.score_fn(sde)
  x_T = sde.prior_sampling((8, 3), torch.Generator().manual_seed(3)).double()
  ref = ode_integrate(probability_flow_drift(sde, score_fn), x_T, sde.T, 1e-2, rtol=1e-11, atol=1e-11)
  errs = [float((sample(sde, score_fn, None, 'ipndm', steps=k, x_init=x_T, eps=1e-2, denoise=False,
                        **options).x - ref).norm()) for k in steps]
  return [math.log2(a / b) for a, b in zip(errs, errs[1:])]


def test_ipndm_converges_at_its_order_on_a_smooth_problem():
  """Variable coefficients: the order of max_order on any grid (from t = T, where x~ is nearly
  linear in sigma_e, the lower-order warm-up costs little); the fixed iPNDM weights on the
  log-SNR grid (not uniform in sigma_e): second order; max_order 1: Euler."""
  assert all(0.9 < p < 1.1 for p in _orders([20, 40, 80], max_order=1))
  assert all(1.8 < p < 2.3 for p in _orders([40, 80, 160], max_order=3))
  p3 = _orders([40, 80, 160], max_order=3, coefficients='variable')
  assert p3[-1] > 2.6 and p3[-1] > p3[0] - 0.1, p3
  p4 = _orders([40, 80, 160], max_order=4, coefficients='variable')
  assert p4[-1] > 3.3, p4


def mixture(dim: int, k: int, seed: int) -> GaussianMixture:
  g = torch.Generator().manual_seed(seed)
  means = torch.randn(k, dim, generator=g, dtype=torch.float64)
  means = 2.5 * means / means.norm(dim=1, keepdim=True)
  stds = 0.15 + 0.3 * torch.rand(k, dim, generator=g, dtype=torch.float64)
  return GaussianMixture(means, stds ** 2, torch.rand(k, generator=g, dtype=torch.float64) + 0.5)


def _gap(sde, score_fn, solver, ts, x_T, ref, **options):
  return sliced_gap(sample(sde, score_fn, None, solver, x_init=x_T, ts=ts, denoise=False, **options).x, ref, seed=5)


@pytest.mark.parametrize('solver,options', [('unipc', {'order': 2}), ('ipndm', {'max_order': 3})])
def test_tuned_grid_is_no_worse_in_distribution_on_a_mixture_it_was_not_tuned_on(solver, options):
  """Tuned (with the guard) on one mixture, the grid's sliced W2 to the exact PF-ODE samples of
  fresh draws of another mixture is no worse than the log-SNR grid's, and its median error
  is lower; an optimized grid of ipndm is reachable from sample()."""
  sde, dim, nfe = VPSDE(), 4, 6
  tuning = og.GridTuning(key=None, pilot_batch=32, passes=1, iters=5, max_knots=4, guard=128)
  ts = og.optimized_grid(sde, mixture(dim, 5, seed=2024).score_fn(sde), solver, nfe, 1e-3, (dim,),
                         options=options, tuning=tuning, dtype=torch.float64)
  other = mixture(dim, 3, seed=77).score_fn(sde)
  x_T = sde.prior_sampling((1000, dim), torch.Generator().manual_seed(11)).double()
  ref = ode_integrate(probability_flow_drift(sde, other), x_T, sde.T, 1e-3, rtol=1e-8, atol=1e-8)
  base = logsnr_grid(sde, nfe, 1e-3)
  assert _gap(sde, other, solver, ts, x_T, ref, **options) <= _gap(sde, other, solver, base, x_T, ref, **options)
  res = sample(sde, other, None, solver, steps=nfe, x_init=x_T, denoise=False, grid='optimized',
               grid_tuning=og.GridTuning(key='other', pilot_batch=16, passes=1, iters=4, max_knots=4, guard=64),
               **options)
  assert res.nfe == nfe and torch.isfinite(res.x).all()


def test_guard_pulls_a_grid_that_moves_the_distribution_back_to_log_snr():
  """A 'tuned' grid that crowds every step near T (a bad grid) is rejected: the guard keeps a
  grid whose distribution gap on the guard batch is at most the log-SNR grid's."""
  sde, dim, nfe = VPSDE(), 3, 5
  score_fn = mixture(dim, 4, seed=9).score_fn(sde)
  bad = [1.0, 0.98, 0.96, 0.94, 0.92, 1e-3]
  tuning = og.GridTuning(guard=128)
  ts, report = guard_grid(sde, score_fn, 'unipc', bad, 1e-3, (dim,), {'order': 2}, tuning, dtype=torch.float64)
  assert report['gap'][1.0] > report['gap'][0.0]
  assert report['pull'] < 1.0 and report['gap'][report['pull']] <= report['gap'][0.0]
  assert ts != bad and ts[0] == sde.T and ts[-1] == 1e-3 and all(a > b for a, b in zip(ts, ts[1:]))
  if report['pull'] == 0.0:
    assert ts == logsnr_grid(sde, nfe, 1e-3)


def test_the_guard_is_on_by_default_and_part_of_the_cache_key():
  t = og.GridTuning()
  assert t.loss == 'log' and t.guard == 256
  err2 = torch.tensor([1e-4, 1e-4, 1.0], dtype=torch.float64)
  assert og.endpoint_loss(err2, 'log') < og.endpoint_loss(err2, 'balanced') < math.log(err2.mean())
  keys = {og.cache_key('m', VPSDE(), 'unipc', {}, 5, 1e-3, (2,), og.GridTuning(guard=g)) for g in (0, 64)}
  assert len(keys) == 2
  with pytest.raises(ValueError, match='guard'):
    og.GridTuning(guard=-1)
  key = og.cache_key('m', VPSDE(), 'ipndm', {'data_mean': torch.zeros(3), 'first_step': 'analytic'}, 5,
                     1e-3, (3,), t)  # tensor options (data moments) hash into the key
  assert 'tensor[3]:' in key


def test_moments_that_do_not_fit_the_samples_are_a_one_line_error():
  sde = VPSDE()
  with pytest.raises(ValueError, match='do not fit samples of shape') as e:
    sample(sde, DATA.score_fn(sde), (4, 3), 'ipndm', steps=3, first_step='analytic', data_mean=torch.zeros(5))
  assert '\n' not in str(e.value)


def test_an_nfe_budget_buys_one_more_step_with_the_analytical_first_step():
  from score_sde.sampling import solver_spec
  spec = solver_spec('ipndm')
  afs = spec.parse({'first_step': 'analytic'})
  assert spec.steps_for_nfe(4, afs, denoise=False) == 5 and spec.steps_for_nfe(4, denoise=False) == 4
  assert spec.steps_for_nfe(5, afs, denoise=True) == 5
