"""Fast samplers (ddpm, ddim, heun, dpm_solver, unipc, sde) against exact scores of Gaussian data:
moments, the DDIM/Euler and ancestral/DDPM identities, convergence orders and reproducibility."""
import math

import pytest
import torch

from conftest import assert_moments
from score_sde.maths.analytic import GaussianMixture, gaussian
from score_sde.sampling import SOLVERS, sample, solver_options
from score_sde.sampling.ddim import ddim_step, ddpm_step, leading_indices, predict_eps
from score_sde.sampling.ode import ode_integrate, probability_flow_drift
from score_sde.sampling.pc import AncestralPredictor
from score_sde.sdes import SubVPSDE, VESDE, VPSDE
from score_sde.maths.utils import full_t

MEAN, VAR = torch.tensor([1.0, -2.0]), torch.tensor([0.25, 4.0])
DATA = gaussian(MEAN, VAR)
SDES = {'vp': VPSDE, 'subvp': SubVPSDE, 've': VESDE}


pytestmark = pytest.mark.usefixtures('one_thread')


def _draw(sde, solver, steps, seed=0, n=4000, data=DATA, **options):
  gen = torch.Generator().manual_seed(seed)
  return sample(sde, data.score_fn(sde), (n, 2), solver, steps=steps, generator=gen, **options)


def test_registered_with_options():
  assert {'ddpm', 'ddim', 'heun', 'dpm_solver', 'sde', 'unipc'} <= set(SOLVERS)
  assert set(solver_options('unipc')) >= {'order', 'variant', 'grid'}
  assert solver_options('ddim')[0] == 'eta' and {'ts', 'callback'} <= set(solver_options('ddim'))
  assert set(solver_options('heun')) >= {'s_churn', 's_tmin', 's_tmax', 's_noise'}
  assert set(solver_options('dpm_solver')) >= {'order', 'multistep', 'grid'}


@pytest.mark.parametrize('solver,steps,options,nfe', [
    ('ddpm', 1000, {}, 1000),
    ('ddpm', 100, {'variance': 'large'}, 100),
    ('ddim', 100, {}, 100),
    ('ddim', 1000, {'eta': 1.0}, 1000),
    ('heun', 60, {}, 120),
    ('heun', 100, {'s_churn': 50.0}, 200),
    ('dpm_solver', 20, {'order': 2}, 21),
    ('dpm_solver', 20, {'order': 3, 'grid': 'karras'}, 21),
    ('dpm_solver', 10, {'order': 3, 'multistep': False, 'grid': 'time_uniform'}, 31),
    ('sde', 400, {}, 401),
    ('unipc', 10, {'order': 3}, 11),
    ('unipc', 40, {'order': 2, 'variant': 'bh1', 'grid': 'karras'}, 41),  # bh1 needs more steps
])
def test_vp_moments(solver, steps, options, nfe):
  """Samples of N(mu, diag(s^2)) reproduce its mean and variance within 4 standard errors."""
  result = _draw(VPSDE(), solver, steps, **options)
  assert result.nfe == nfe
  assert_moments(result.x, MEAN, VAR)


@pytest.mark.parametrize('sde_name', ['subvp', 've'])
@pytest.mark.parametrize('solver,steps,options', [
    ('heun', 60, {}), ('dpm_solver', 20, {'order': 3}), ('sde', 400, {'method': 'euler'}),
    ('unipc', 15, {'order': 3})])
def test_subvp_ve_moments(sde_name, solver, steps, options):
  assert_moments(_draw(SDES[sde_name](), solver, steps, **options).x, MEAN, VAR)


@pytest.mark.parametrize('solver', ['ddpm', 'ddim'])
def test_ddpm_ddim_reject_subvp(solver):
  with pytest.raises(ValueError, match='SubVPSDE has none'):
    _draw(SubVPSDE(), solver, 10, n=4)


@pytest.mark.parametrize('solver,steps,options', [('ddpm', 1000, {}), ('ddim', 200, {}),
                                                  ('ddim', 1000, {'eta': 1.0})])
def test_ve_ddpm_ddim_on_the_smld_chain(solver, steps, options):
  """DDPM/DDIM written for any chain kernel (alpha_i, sigma_i) also sample VE's SMLD chain."""
  assert_moments(_draw(VESDE(), solver, steps, **options).x, MEAN, VAR)


class _IndexNet(torch.nn.Module):
  """A discrete-time 'network' that records the labels it is given."""

  def __init__(self):
    super().__init__()
    self.seen = []

  def forward(self, x, labels):
    self.seen.append(labels.clone())
    return torch.zeros_like(x)


@pytest.mark.parametrize('solver', ['ddpm', 'ddim'])
@pytest.mark.parametrize('steps', [10, 4])
def test_discrete_model_gets_integer_table_indices(solver, steps):
  """An 'index'-labelled VP model sampled with DDPM/DDIM sees exactly the table indices
  (N-1, ..., 0 on the full grid; the strided ones otherwise), not t (N - 1) = 8.991, ..."""
  from score_sde.models import ScoreModel
  sde, net = VPSDE(N=10), _IndexNet()
  model = ScoreModel(net, sde, 'eps', 'index')
  sample(sde, model, (3, 2), solver, steps=steps, generator=torch.Generator().manual_seed(0))
  want = [float(i) for i in reversed(leading_indices(10, steps))]
  assert [lab.tolist() for lab in net.seen] == [[w] * 3 for w in want]


def test_ddim_is_euler_on_scaled_pf_ode():
  """DDIM(eta=0): x_s/sqrt(a_s) = x_t/sqrt(a_t) + (sb_s - sb_t) eps with sb = sqrt((1-a)/a)."""
  sde = VPSDE()
  abar = sde.alphas_cumprod.tolist()
  x = torch.randn(16, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
  kern = lambda a: (math.sqrt(a), math.sqrt(1 - a))
  for i, s in [(999, 949), (500, 480), (40, 0)]:
    a_t, a_s = abar[i], abar[s]
    eps = predict_eps(sde, DATA.score_fn(sde), x, i, math.sqrt(1 - a_t))
    sb = lambda a: math.sqrt((1 - a) / a)
    euler = x / math.sqrt(a_t) + (sb(a_s) - sb(a_t)) * eps
    torch.testing.assert_close(ddim_step(x, eps, kern(a_t), kern(a_s), 0.0, None) / math.sqrt(a_s),
                               euler, rtol=1e-12, atol=1e-12)


def test_ancestral_predictor_is_ddpm():
  """One AncestralPredictor step on VP = Ho et al. Alg. 2 with the same noise, and so is the
  'ddpm' solver's full-grid posterior step (small variance = beta_tilde)."""
  sde, score_fn = VPSDE(), DATA.score_fn(VPSDE())
  x = torch.randn(32, 2, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
  for i in (999, 500, 3):
    t = full_t(i / (sde.N - 1), 32, x)
    beta, abar = sde.discrete_betas[i].item(), sde.alphas_cumprod[i].item()
    eps = -math.sqrt(1 - abar) * score_fn(x, t)
    z = torch.randn(32, 2, generator=torch.Generator().manual_seed(i), dtype=torch.float64)
    ho = (x - beta / math.sqrt(1 - abar) * eps) / math.sqrt(1 - beta) + math.sqrt(beta) * z
    got, _ = AncestralPredictor(sde, score_fn)(x, t, -1.0 / sde.N, torch.Generator().manual_seed(i))
    torch.testing.assert_close(got, ho, rtol=1e-10, atol=1e-10)
    abar_prev = sde.alphas_cumprod[i - 1].item()
    beta_tilde = (1 - abar_prev) / (1 - abar) * beta
    ho_small = (x - beta / math.sqrt(1 - abar) * eps) / math.sqrt(1 - beta) + math.sqrt(beta_tilde) * z
    kern = lambda a: (math.sqrt(a), math.sqrt(1 - a))
    torch.testing.assert_close(ddpm_step(x, eps, kern(abar), kern(abar_prev), 'small', z), ho_small,
                               rtol=1e-10, atol=1e-10)


def test_ddim_eta1_matches_ddpm_moments():
  """DDIM(eta=1) on the full grid has DDPM's marginals: same moments as 'ddpm' (and the data)."""
  a = _draw(VPSDE(), 'ddim', 1000, seed=3, eta=1.0).x.double()
  b = _draw(VPSDE(), 'ddpm', 1000, seed=4).x.double()
  se_mean, se_var = (VAR / 4000).sqrt().double(), (VAR * math.sqrt(2 / 3999)).double()
  assert torch.all((a.mean(0) - b.mean(0)).abs() < 4 * math.sqrt(2) * se_mean)
  assert torch.all((a.var(0) - b.var(0)).abs() < 4 * math.sqrt(2) * se_var)


MIXTURE = GaussianMixture([[1.0, -1.0], [-1.0, 0.5]], [[0.3, 0.5], [0.6, 0.2]], [0.3, 0.7])


@pytest.fixture(scope='module')
def pf_ode_reference():
  """x_T `[64, 2]` (float64) and the exact PF-ODE endpoint at eps (dopri5, rtol=atol=1e-9)."""
  sde = VPSDE()
  x_T = sde.prior_sampling((64, 2), torch.Generator().manual_seed(1)).double()
  ref = ode_integrate(probability_flow_drift(sde, MIXTURE.score_fn(sde)), x_T, sde.T, 1e-3,
                      rtol=1e-9, atol=1e-9)
  return sde, x_T, ref


@pytest.mark.parametrize('solver,options,steps,min_ratio', [
    ('heun', {}, (20, 40), 3.0),
    ('dpm_solver', {'order': 2}, (20, 40), 3.0),
    ('dpm_solver', {'order': 2, 'multistep': False}, (20, 40), 3.0),
    ('dpm_solver', {'order': 3}, (10, 20), 5.5),
    ('dpm_solver', {'order': 3, 'multistep': False}, (20, 40), 5.5),
    ('unipc', {'order': 1}, (20, 40), 3.0),               # the corrector adds one order:
    ('unipc', {'order': 2}, (20, 40), 6.5),               # order p + 1 (ratio ~2^(p+1))
    ('unipc', {'order': 2, 'variant': 'bh1'}, (20, 40), 6.5),
    ('unipc', {'order': 3}, (20, 40), 10.0),
])
def test_convergence_order(pf_ode_reference, solver, options, steps, min_ratio):
  """Doubling the steps cuts the RMS distance to the exact PF-ODE endpoint by ~2^order.
  (Multistep order 3 starts with order-1/2 steps, so its asymptotic rate is 2; its
  third-order regime is at 10 -> 20 steps.)"""
  sde, x_T, ref = pf_ode_reference
  errs = []
  for n in steps:
    x = sample(sde, MIXTURE.score_fn(sde), None, solver, steps=n, x_init=x_T, denoise=False,
               **options).x
    errs.append((x - ref).pow(2).sum(1).mean().sqrt().item())
  assert errs[1] > 1e-9
  assert errs[0] / errs[1] > min_ratio, errs


@pytest.mark.parametrize('solver,options', [
    ('ddpm', {}), ('ddim', {'eta': 1.0}), ('heun', {'s_churn': 10.0}), ('sde', {}),
    ('sde', {'method': 'srk'})])
def test_reproducible(solver, options):
  a = _draw(VPSDE(), solver, 20, seed=7, n=64, **options).x
  b = _draw(VPSDE(), solver, 20, seed=7, n=64, **options).x
  c = _draw(VPSDE(), solver, 20, seed=8, n=64, **options).x
  assert torch.equal(a, b)
  assert not torch.allclose(a, c)


def test_rank_agnostic_images():
  """x of shape [B, C, H, W] keeps its shape through every solver."""
  data = gaussian(torch.zeros(12), torch.ones(12))
  sde = VPSDE()
  for solver in ('ddpm', 'ddim', 'heun', 'dpm_solver', 'sde'):
    x = sample(sde, lambda x, t: data.score(x, t, sde), (3, 3, 2, 2), solver, steps=5,
               generator=torch.Generator().manual_seed(0)).x
    assert x.shape == (3, 3, 2, 2) and torch.isfinite(x).all()


@pytest.mark.parametrize('steps', [8, 33, 35, 99])
@pytest.mark.parametrize('method', ['euler', 'milstein'])
def test_sde_solver_nfe_is_the_step_count(steps, method):
  """No extra evaluation for torchsde's shape check, no extra step from float round-off."""
  sde = VPSDE()
  res = _draw(sde, 'sde', steps, n=8, method=method, denoise=False)
  assert res.nfe == steps and torch.isfinite(res.x).all()


def test_unipc_beats_dpm_solver_at_equal_nfe(pf_ode_reference):
  """At 20 NFE UniPC-3 (bh2) lands closer to the exact PF-ODE endpoint than DPM-Solver++(3M)."""
  sde, x_T, ref = pf_ode_reference
  err = {}
  for solver in ('unipc', 'dpm_solver'):
    res = sample(sde, MIXTURE.score_fn(sde), None, solver, steps=20, x_init=x_T, denoise=False, order=3)
    assert res.nfe == 20
    err[solver] = (res.x - ref).pow(2).sum(1).mean().sqrt().item()
  assert err['unipc'] < 0.7 * err['dpm_solver'], err


def test_unipc_rejects_bad_options():
  with pytest.raises(ValueError, match="unknown UniPC variant 'bh3'"):
    _draw(VPSDE(), 'unipc', 5, n=4, variant='bh3')
  with pytest.raises(ValueError, match='order must be 1, 2 or 3'):
    _draw(VPSDE(), 'unipc', 5, n=4, order=4)


@pytest.mark.parametrize('solver', ['dpm_solver', 'unipc'])
@pytest.mark.parametrize('grid', ['logsnr', 'karras', 'time_uniform'])
def test_explicit_ts_equals_the_named_grid(solver, grid):
  from score_sde.sampling.grids import time_grid
  sde = VPSDE()
  x_T = sde.prior_sampling((16, 2), torch.Generator().manual_seed(0))
  named = sample(sde, DATA.score_fn(sde), None, solver, steps=12, x_init=x_T, grid=grid, order=3)
  ts = time_grid(sde, 12, 1e-3, grid)
  explicit = sample(sde, DATA.score_fn(sde), None, solver, x_init=x_T, order=3,
                    ts=torch.tensor(ts, dtype=torch.float64))  # float32 times would round
  assert torch.equal(named.x, explicit.x) and named.nfe == explicit.nfe == 13


@pytest.mark.parametrize('solver', ['dpm_solver', 'unipc'])
def test_callback_and_trajectory(solver):
  sde, calls = VPSDE(), []
  res = sample(sde, DATA.score_fn(sde), (8, 2), solver, steps=6, generator=torch.Generator().manual_seed(0),
               return_trajectory=True, callback=lambda i, t, x, d: calls.append((i, t, d is None)))
  assert [c[0] for c in calls] == [1, 2, 3, 4, 5, 6] and calls[-1][2] and not any(c[2] for c in calls[:-1])
  assert all(a[1] > b[1] for a, b in zip(calls, calls[1:])) and abs(calls[-1][1] - 1e-3) < 1e-12
  assert len(res.trajectory) == 7 and res.trajectory[0].shape == (8, 2)
  with pytest.raises(ValueError, match='ts must be at least 2 strictly decreasing times'):
    sample(sde, DATA.score_fn(sde), (8, 2), solver, ts=[0.5, 0.7])
  with pytest.raises(ValueError, match='at most one time per table index'):
    sample(sde, DATA.score_fn(sde), (8, 2), 'ddim', ts=[0.9, 0.8999999, 0.0])
