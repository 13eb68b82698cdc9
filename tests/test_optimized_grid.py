"""grid='optimized' (score_sde.sampling.optimized_grid): tuned on the model's own PF-ODE, it
beats the logSNR grid at equal NFE on prior draws it was not tuned on, and is no worse on a
different mixture; deterministic; cached in memory and in a JSON file; not counted in the NFE;
reachable from the config."""
import json
import os

import pytest
import torch

from score_sde.maths.analytic import GaussianMixture
from score_sde.sampling import sample
from score_sde.sampling import optimized_grid as og
from score_sde.sampling.ode import ode_integrate, probability_flow_drift
from score_sde.sdes import VPSDE


pytestmark = pytest.mark.usefixtures('one_thread')


@pytest.fixture(autouse=True)
def empty_memory_cache():
  og._MEMORY.clear()
  yield
  og._MEMORY.clear()


def mixture(dim: int, k: int, seed: int) -> GaussianMixture:
  """k components at radius 2.5 with stds 0.15-0.45 (seeds other than the benchmark's 0)."""
  g = torch.Generator().manual_seed(seed)
  means = torch.randn(k, dim, generator=g, dtype=torch.float64)
  means = 2.5 * means / means.norm(dim=1, keepdim=True)
  stds = 0.15 + 0.3 * torch.rand(k, dim, generator=g, dtype=torch.float64)
  return GaussianMixture(means, stds ** 2, torch.rand(k, generator=g, dtype=torch.float64) + 0.5)


def endpoint_errors(sde, score_fn, solver, ts, x_T, ref, **options):
  x = sample(sde, score_fn, None, solver, x_init=x_T, ts=ts, denoise=False, **options).x
  return (x - ref).norm(dim=1)


def fresh_draws(sde, score_fn, dim, n=256, seed=11):
  x_T = sde.prior_sampling((n, dim), torch.Generator().manual_seed(seed)).double()
  return x_T, ode_integrate(probability_flow_drift(sde, score_fn), x_T, sde.T, 1e-3, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize('solver,options', [('unipc', {'order': 3}), ('dpm_solver', {'order': 3})])
def test_beats_logsnr_on_draws_and_a_mixture_it_was_not_tuned_on(solver, options):
  from score_sde.sampling.grids import time_grid
  sde, dim, nfe = VPSDE(), 4, 10
  tuned_on = mixture(dim, 5, seed=2024).score_fn(sde)
  tuning = og.GridTuning(key=None, pilot_batch=48, max_knots=8, iters=8)
  ts = og.optimized_grid(sde, tuned_on, solver, nfe, 1e-3, (dim,), options=options, tuning=tuning,
                         dtype=torch.float64)
  logsnr = time_grid(sde, nfe, 1e-3, 'logsnr')
  assert len(ts) == nfe + 1 and ts[0] == sde.T and ts[-1] == 1e-3
  assert all(a > b for a, b in zip(ts, ts[1:])) and ts != logsnr
  for score_fn, margin in ((tuned_on, 0.9), (mixture(dim, 3, seed=77).score_fn(sde), 1.0)):
    x_T, ref = fresh_draws(sde, score_fn, dim)
    opt = endpoint_errors(sde, score_fn, solver, ts, x_T, ref, **options)
    base = endpoint_errors(sde, score_fn, solver, logsnr, x_T, ref, **options)
    assert opt.median() < margin * base.median(), (solver, opt.median(), base.median())
    assert opt.log().mean() < base.log().mean()  # the geometric mean, the tuned loss


def test_deterministic_and_cached_in_memory_and_json(tmp_path, monkeypatch):
  sde, score_fn = VPSDE(), mixture(2, 3, seed=5).score_fn(VPSDE())
  tuning = og.GridTuning(key='toy', cache_dir=str(tmp_path), pilot_batch=16, max_knots=4, iters=4, passes=1)
  a = og.optimized_grid(sde, score_fn, 'unipc', 6, 1e-3, (2,), options={'order': 2}, tuning=tuning)
  b = og.tune_grid(sde, score_fn, 'unipc', 6, 1e-3, sde.prior_sampling((16, 2), torch.Generator().manual_seed(0)),
                   {'order': 2}, tuning)[0]
  assert a == b  # deterministic given the seed
  with open(os.path.join(tmp_path, og.CACHE_FILE)) as f:
    table = json.load(f)
  assert list(table.values()) == [a] and next(iter(table)).startswith('toy|VPSDE')

  def no_tuning(*args, **kwargs):
    raise AssertionError('tuned again instead of using the cache')
  monkeypatch.setattr(og, 'tune_grid', no_tuning)
  assert og.optimized_grid(sde, score_fn, 'unipc', 6, 1e-3, (2,), options={'order': 2}, tuning=tuning) == a
  og._MEMORY.clear()  # from the JSON file now
  assert og.optimized_grid(sde, score_fn, 'unipc', 6, 1e-3, (2,), options={'order': 2}, tuning=tuning) == a
  with pytest.raises(AssertionError, match='tuned again'):  # another order is another grid
    og.optimized_grid(sde, score_fn, 'unipc', 6, 1e-3, (2,), options={'order': 3}, tuning=tuning)


def test_sample_with_the_optimized_grid_counts_only_the_solver_nfe():
  sde, score_fn = VPSDE(), mixture(2, 3, seed=5).score_fn(VPSDE())
  tuning = og.GridTuning(key='toy', pilot_batch=16, max_knots=4, iters=4, passes=1)
  x_T = sde.prior_sampling((32, 2), torch.Generator().manual_seed(1))
  res = sample(sde, score_fn, None, 'dpm_solver', steps=8, x_init=x_T, grid='optimized', order=3,
               grid_tuning=tuning, return_trajectory=True)
  ts = og.optimized_grid(sde, score_fn, 'dpm_solver', 8, 1e-3, (2,), options={'order': 3}, tuning=tuning)
  same = sample(sde, score_fn, None, 'dpm_solver', x_init=x_T, ts=ts, order=3)
  assert res.nfe == 9 and torch.equal(res.x, same.x) and len(res.trajectory) == 9


def test_bad_uses_are_one_line_errors():
  from score_sde.sampling.dpm_solver import dpm_solver_sample
  sde = VPSDE()
  score_fn = mixture(2, 3, seed=5).score_fn(sde)
  with pytest.raises(ValueError, match="grid='optimized' needs the model"):
    dpm_solver_sample(sde, score_fn, torch.zeros(4, 2), steps=5, grid='optimized')
  with pytest.raises(ValueError, match="grid='optimized' is for the solvers"):
    og.optimized_grid(sde, score_fn, 'heun', 5, 1e-3, (2,))
  with pytest.raises(ValueError, match="unknown grid loss 'l1'"):
    og.GridTuning(loss='l1')


def test_search_finds_the_minimum_of_a_separable_bowl():
  target = [0.0, 0.1, 0.3, 0.65, 1.0]
  knots, best = og.search_knots(lambda k: sum((a - b) ** 2 for a, b in zip(k, target)),
                                [0.0, 0.25, 0.5, 0.75, 1.0], passes=3, iters=12)
  assert best < 1e-4 and all(abs(a - b) < 1e-2 for a, b in zip(knots, target))
  assert og.knot_levels(10, 16) == [2, 4, 8, 10] and og.knot_levels(100, 16) == [2, 4, 8, 16]


def test_config_reaches_the_optimized_grid(tmp_path):
  """sampling.grid = 'optimized' is valid config and `generate` tunes (once, into
  sampling.grid_cache_dir) and samples with it."""
  from configs.toy_gmm import get_config
  from score_sde.app import config_check
  from score_sde.errors import ConfigError
  from score_sde.app.generate import generate
  from score_sde.app.build import create_model
  from score_sde.app.build import build_sde
  config = get_config()
  config.sampling.grid, config.sampling.grid_cache_dir = 'optimized', str(tmp_path / 'grids')
  config.sampling.grid_pilot_batch, config.sampling.grid_max_knots = 8, 2
  config.sampling.steps, config.sampling.batch_size, config.model.hidden = 4, 16, 16
  config_check.validate(config)
  config.sampling.grid_pilot_batch = 0
  with pytest.raises(ConfigError, match='grid_pilot_batch'):
    config_check.validate(config)
  config.sampling.grid_pilot_batch = 8
  torch.manual_seed(0)
  model = create_model(config, build_sde(config)).eval()
  x, nfe = generate(config, model, 32, solver='unipc')
  assert x.shape == (32, 2) and torch.isfinite(x).all() and nfe == 2 * 5
  with open(tmp_path / 'grids' / og.CACHE_FILE) as f:
    assert len(json.load(f)) == 1


@pytest.mark.slow
def test_cli_samples_with_the_optimized_grid(tmp_path):
  """python main.py --mode sample --config.sampling.grid=optimized, cached in the given folder."""
  from test_cli import TINY, run
  wd = str(tmp_path / 'run')
  cfg = ['--config', 'configs/toy_gmm.py', '--workdir', wd] + TINY
  run(*cfg, '--mode', 'train', '--config.training.n_iters=5')
  opts = ['--mode', 'sample', '--solver', 'unipc', '--config.sampling.steps=6',
          '--config.sampling.grid=optimized', '--config.sampling.grid_pilot_batch=16',
          '--config.sampling.grid_max_knots=4', f'--config.sampling.grid_cache_dir={wd}/grids']
  run(*cfg, *opts)
  with open(os.path.join(wd, 'grids', og.CACHE_FILE)) as f:
    (ts,) = json.load(f).values()
  assert len(ts) == 7 and ts[0] == 1.0 and ts[-1] == pytest.approx(1e-3)
  assert os.path.exists(os.path.join(wd, 'samples', 'unipc_checkpoint_5.npz'))
  proc = run(*cfg, '--mode', 'sample', '--config.sampling.grid=best', check=False)
  assert proc.returncode != 0 and 'config.sampling.grid' in proc.stderr


def test_fingerprint_is_hashed_once_until_the_weights_change(monkeypatch):
  """generate() asks for the fingerprint once per call (per eval shard, per training snapshot):
  unchanged weights must not be copied to the host again; any in-place change or replaced
  tensor gives a new fingerprint."""
  from score_sde.sampling import optimized_grid as og
  net = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.BatchNorm1d(4))
  hashed = []
  real = og._digest
  monkeypatch.setattr(og, '_digest', lambda state: hashed.append(1) or real(state))
  first = og.model_fingerprint(net, extra='a')
  assert og.model_fingerprint(net, extra='a') == first and len(hashed) == 1
  assert og.model_fingerprint(net, extra='b') != first and len(hashed) == 1
  with torch.no_grad():
    net[0].weight.add_(1e-3)                       # an optimizer step, say
  second = og.model_fingerprint(net, extra='a')
  assert second != first and len(hashed) == 2
  net.load_state_dict({k: v.clone() for k, v in net.state_dict().items()})  # same values again
  assert og.model_fingerprint(net, extra='a') == second and len(hashed) == 3
