"""Explicit times `ts=` and `callback(i, t, x, denoised)` for the step solvers heun, pc, sde
and ode (dpm_solver / unipc: tests/test_fast_samplers.py): an explicit `ts` equal to the
solver's named grid gives the same samples, the callback runs once per step with the right
index and time, and the trajectory holds steps + 1 states."""
import pytest
import torch

from score_sde.maths.analytic import gaussian
from score_sde.sampling import SOLVERS, sample
from score_sde.sampling.common import tweedie_denoise
from score_sde.sampling.heun import heun_grid
from score_sde.sampling.pc import pc_grid
from score_sde.sdes import VESDE, VPSDE

DATA = gaussian(torch.tensor([1.0, -2.0]), torch.tensor([0.25, 4.0]))


pytestmark = pytest.mark.usefixtures('one_thread')


def _uniform(sde, steps, eps=1e-3):
  return torch.linspace(sde.T, eps, steps + 1, dtype=torch.float64).tolist()


# solver, steps, options, the named grid's times as a function of the SDE
CASES = {
    'heun': ('heun', 6, {}, lambda sde: heun_grid(sde, 6, 1e-3)),
    'heun churn': ('heun', 6, {'s_churn': 5.0}, lambda sde: heun_grid(sde, 6, 1e-3)),
    'pc': ('pc', 6, {}, lambda sde: pc_grid(sde, 6, 1e-3)),
    'pc ald pf': ('pc', 6, {'corrector': 'ald', 'probability_flow': True}, lambda sde: pc_grid(sde, 6, 1e-3)),
    'sde euler': ('sde', 6, {}, lambda sde: _uniform(sde, 6)),
    'sde srk': ('sde', 6, {'method': 'srk'}, lambda sde: _uniform(sde, 6)),
    'ode rk4': ('ode', 6, {'method': 'rk4'}, lambda sde: _uniform(sde, 6)),
    'ode dopri5': ('ode', None, {}, lambda sde: [sde.T, 1e-3]),
}


def _run(sde, solver, x_T, **kw):
  return sample(sde, DATA.score_fn(sde), None, solver, x_init=x_T,
                generator=torch.Generator().manual_seed(3), **kw)


def test_every_step_solver_is_registered():  # each takes ts and a callback (test_solver_spec)
  assert {'dpm_solver', 'unipc', 'heun', 'pc', 'sde', 'ode', 'ddpm', 'ddim'} <= set(SOLVERS)


@pytest.mark.parametrize('solver', ['ddpm', 'ddim'])
def test_chain_solvers_call_back_per_table_step(solver):
  sde = VPSDE(N=100)
  x_T = sde.prior_sampling((16, 2), torch.Generator().manual_seed(0))
  seen = []
  res = sample(sde, DATA.score_fn(sde), None, solver, x_init=x_T, steps=10, return_trajectory=True,
               generator=torch.Generator().manual_seed(3),
               callback=lambda i, t, x, d: seen.append((i, t, d.shape)))
  assert [s[0] for s in seen] == list(range(1, 11)) and res.nfe == 10
  assert seen[0][1] == pytest.approx(sde.time_of_index(80)) and seen[-1][1] == 0.0
  assert len(res.trajectory) == 11 and torch.equal(res.trajectory[-1], res.x)
  # explicit times of the same table indices (then the end) give the same samples
  ts = [sde.time_of_index(i) for i in range(90, -1, -10)] + [0.0]
  again = sample(sde, DATA.score_fn(sde), None, solver, x_init=x_T, ts=ts,
                 generator=torch.Generator().manual_seed(3))
  torch.testing.assert_close(again.x, res.x, rtol=0, atol=0)
  assert again.nfe == 10


@pytest.mark.parametrize('case', list(CASES))
@pytest.mark.parametrize('sde_cls', [VPSDE, VESDE])
def test_explicit_ts_equals_the_named_grid(case, sde_cls):
  solver, steps, options, grid = CASES[case]
  sde = sde_cls()
  x_T = sde.prior_sampling((16, 2), torch.Generator().manual_seed(0))
  named = _run(sde, solver, x_T, steps=steps, **options)
  explicit = _run(sde, solver, x_T, ts=torch.tensor(grid(sde), dtype=torch.float64), **options)
  scale = named.x.abs().max().item() + 1.0
  assert (named.x - explicit.x).abs().max().item() <= 1e-6 * scale
  assert named.nfe == explicit.nfe


@pytest.mark.parametrize('case', list(CASES))
def test_callback_once_per_step_and_trajectory(case):
  solver, steps, options, grid = CASES[case]
  sde, calls = VPSDE(), []
  ts = grid(sde)
  x_T = sde.prior_sampling((8, 2), torch.Generator().manual_seed(1))
  res = _run(sde, solver, x_T, steps=steps, denoise=False, return_trajectory=True,
             callback=lambda i, t, x, d: calls.append((i, t, x.clone(), d)), **options)
  k = len(ts) - 1
  assert [c[0] for c in calls] == list(range(1, k + 1))
  assert [c[1] for c in calls] == pytest.approx(ts[1:], abs=1e-7)
  assert len(res.trajectory) == k + 1 and torch.equal(res.trajectory[0], x_T)
  assert torch.equal(res.trajectory[-1], calls[-1][2]) and torch.equal(res.x, calls[-1][2])
  if solver in ('heun', 'pc') or (solver, options.get('method')) == ('sde', None):
    assert all(c[3] is not None and c[3].shape == (8, 2) for c in calls)  # x0 predictions, free


def test_the_pc_chain_is_kept_for_explicit_named_times():
  """With steps = N the predictor uses the SDE's own chain; the same times given as ts too."""
  sde = VESDE(N=8)
  x_T = sde.prior_sampling((16, 2), torch.Generator().manual_seed(0))
  named = _run(sde, 'pc', x_T, steps=8, predictor='ancestral')
  explicit = _run(sde, 'pc', x_T, ts=pc_grid(sde, 8, 1e-3), predictor='ancestral')
  off_chain = _run(sde, 'pc', x_T, ts=pc_grid(sde, 8, 1e-3)[:-1] + [1e-4], predictor='ancestral')
  assert torch.isfinite(named.x).all() and torch.equal(named.x, explicit.x)
  assert not torch.equal(named.x, off_chain.x)


def test_ode_adaptive_records_the_trajectory_at_ts():
  sde, ts = VPSDE(), [1.0, 0.5, 0.2, 0.05, 1e-3]
  x_T = sde.prior_sampling((16, 2), torch.Generator().manual_seed(2))
  res = _run(sde, 'ode', x_T, ts=ts, denoise=False, rtol=1e-7, atol=1e-7, return_trajectory=True)
  plain = _run(sde, 'ode', x_T, denoise=False, rtol=1e-7, atol=1e-7)
  assert len(res.trajectory) == len(ts)
  assert (res.x - plain.x).abs().max().item() < 1e-4
  assert all(x.shape == (16, 2) and torch.isfinite(x).all() for x in res.trajectory)


def test_sde_adaptive_calls_back_per_output_time():
  sde, ts, calls = VPSDE(), [1.0, 0.5, 1e-3], []
  x_T = sde.prior_sampling((8, 2), torch.Generator().manual_seed(2))
  res = _run(sde, 'sde', x_T, steps=20, ts=ts, adaptive=True, return_trajectory=True,
             callback=lambda i, t, x, d: calls.append((i, t, d)))
  assert [(i, t) for i, t, _ in calls] == [(1, 0.5), (2, 1e-3)] and calls[0][2] is None
  assert len(res.trajectory) == 3 and torch.isfinite(res.x).all()


@pytest.mark.parametrize('solver', ['dpm_solver', 'unipc', 'heun', 'sde', 'ode'])
def test_denoise_acts_at_the_last_explicit_time(solver):
  """Tweedie's step is taken at ts[-1], not at the default eps."""
  sde, ts = VPSDE(), [1.0, 0.6, 0.3, 0.1, 0.05]
  x_T = sde.prior_sampling((8, 2), torch.Generator().manual_seed(4))
  options = {'method': 'rk4'} if solver == 'ode' else {}
  raw = _run(sde, solver, x_T, ts=ts, denoise=False, **options).x
  den = _run(sde, solver, x_T, ts=ts, **options).x
  assert torch.allclose(den, tweedie_denoise(sde, DATA.score_fn(sde), raw, 0.05), atol=1e-6)


@pytest.mark.parametrize('solver', ['heun', 'sde', 'ode', 'pc'])
def test_bad_times_are_rejected(solver):
  sde = VPSDE()
  with pytest.raises(ValueError, match='ts must be at least 2 strictly decreasing times'):
    sample(sde, DATA.score_fn(sde), (4, 2), solver, ts=[0.5, 0.7])
  with pytest.raises(ValueError, match='ts must be'):
    sample(sde, DATA.score_fn(sde), (4, 2), solver, ts=[2.0, 0.5])
  if solver != 'pc':  # pc may end at 0 (its last predictor step), the others may not
    with pytest.raises(ValueError, match='ts must be'):
      sample(sde, DATA.score_fn(sde), (4, 2), solver, ts=[1.0, 0.0])
