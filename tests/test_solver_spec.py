"""SolverSpec (issue 27): every fact about a solver comes from its one declaration. The NFE
formulas match the counted NFE, the option lists / config choices / CLI options are derived,
an unused option is an error, the callback gets a named record, and a new solver is added by
its own module plus one registration line (`test_an_example_solver_is_one_registration`)."""
from __future__ import annotations

import dataclasses

import pytest
import torch

from test_solver_regression import CASES, REFERENCE, SDES, SHAPES, TUNING
from score_sde.maths.analytic import gaussian
from score_sde.app.config_check import validate
from score_sde.configs.default import get_default_config
from score_sde.errors import ConfigError
from score_sde.app.build import config_key, solver_kwargs
from score_sde.sampling import (SOLVERS, SolverSpec, Step, register, resolve_times, sample,
                                solver_options, solver_spec, unregister)
from score_sde.sampling.common import tweedie_denoise
from score_sde.sampling.spec import REGISTRY
from score_sde.sampling.grids import KernelAt, karras_grid, time_grid, uniform_grid
from score_sde.sampling.heun import heun_grid
from score_sde.sampling.optimized_grid import TUNABLE
from score_sde.sdes import SubVPSDE, VESDE, VPSDE

pytestmark = pytest.mark.usefixtures('one_thread')
DATA = gaussian(torch.tensor([1.0, -2.0]), torch.tensor([0.25, 4.0]))


def test_nfe_formulas_match_the_counted_nfe():
  """For every recorded case the spec's formula, applied to the resolved times, gives the NFE
  counted (adaptive methods: None, not known in advance)."""
  ref = torch.load(REFERENCE, weights_only=True)
  checked = 0
  for name, (sde_key, shape_key, solver, kw) in CASES.items():
    spec, sde = solver_spec(solver), SDES[sde_key]()
    kw = dict(kw)
    steps, eps, denoise = kw.pop('steps', None), kw.pop('eps', 1e-3), kw.pop('denoise', True)
    if kw.get('grid') == 'optimized':  # the tuned grid has as many times as the named one
      kw['grid'] = 'logsnr'
    ts = resolve_times(sde, None, solver, SHAPES[shape_key][0][1:], steps=steps, eps=eps, **kw)
    nfe = spec.nfe(len(ts) - 1, spec.parse({k: v for k, v in kw.items() if k != 'ts'}), denoise)
    if nfe is None:  # adaptive ode / sde methods
      assert kw.get('adaptive') or solver == 'ode', name
      continue
    assert nfe == ref[name]['nfe'], name
    checked += 1
  assert checked > 180


def test_options_are_derived_from_the_signature():
  spec = solver_spec('ddim')
  assert spec.option_names[0] == 'eta' and solver_options('ddim')[:len(spec.option_names)] == spec.option_names
  assert solver_options('ddim')[len(spec.option_names):] == ('ts', 'callback')
  assert spec.options().eta == 0.0 and dataclasses.is_dataclass(spec.options)
  assert solver_spec('sde').options().rtol == 1e-3 and solver_spec('ode').options().rtol == 1e-5
  assert set(TUNABLE) == {'dpm_solver', 'unipc', 'ipndm'} and TUNABLE['unipc'] is SOLVERS['unipc']
  assert solver_spec('heun').default_steps == 18 and solver_spec('pc').default_steps is None


@pytest.mark.parametrize('solver,bad', [('ddim', {'order': 2}), ('heun', {'grid': 'optimized'}),
                                        ('ode', {'eta': 1.0}), ('pc', {'variance': 'small'})])
def test_an_option_the_solver_does_not_take_is_a_one_line_error(solver, bad):
  with pytest.raises(ValueError, match=f"unknown option.*for solver '{solver}'") as e:
    sample(VPSDE(), DATA.score_fn(VPSDE()), (4, 2), solver, steps=2, **bad)
  assert '\n' not in str(e.value)


def test_the_cli_passes_only_the_chosen_solvers_options():
  config = get_default_config()
  for name in SOLVERS:
    spec = solver_spec(name)
    got = solver_kwargs(config, name)
    assert set(got) == {o for o in spec.option_names if config_key(name, o) in config.sampling}
    sample(VPSDE(N=10), DATA.score_fn(VPSDE(N=10)), (2, 2), name, steps=2, **got)  # all accepted
  assert solver_kwargs(config, 'ode')['method'] == config.sampling.ode_method


def test_config_defaults_agree_with_the_solver_defaults_but_for_known_cases():
  """The CLI's defaults (configs/default.py) equal the API's, except: sampling.rtol / atol are
  shared by ode (1e-5) and sde (API 1e-3), and s_tmax is 1e30 in the config (inf in the API)."""
  s, differ = get_default_config().sampling, set()
  for name in SOLVERS:
    spec = solver_spec(name)
    for f in dataclasses.fields(spec.options):
      key = config_key(name, f.name)
      if key in s and s[key] != f.default:
        differ.add((name, f.name))
  assert differ == {('sde', 'rtol'), ('sde', 'atol'), ('heun', 's_tmax')}


@pytest.mark.parametrize('key,value', [('sampling.ode_method', 'bogus'), ('sampling.sde_method', 'rk4'),
                                       ('sampling.grid', 'cosine'), ('sampling.order', 4),
                                       ('sampling.unipc_variant', 'bh3'), ('sampling.variance', 'tiny')])
def test_config_choices_come_from_the_specs(key, value):
  config = get_default_config()
  section, leaf = key.split('.')
  config[section][leaf] = value
  with pytest.raises(ConfigError, match=f'config.{key} = .*must be one of'):
    validate(config)


def test_one_kernel_evaluator_and_the_merged_grids():
  sde = VPSDE(schedule='cosine')
  k = KernelAt(sde)
  ts = [0.9, 0.5, 0.1]
  assert k.lam(ts) == pytest.approx([k.lam(t) for t in ts], rel=1e-15)
  assert k.t_of_lam(k.lam(0.5)) == pytest.approx(0.5, abs=1e-9)
  assert k.t_of_sigma_e(k.sigma_e(0.3)) == pytest.approx(0.3, abs=1e-9)
  for sde in (VPSDE(), SubVPSDE(), VESDE()):
    assert heun_grid(sde, 7, 1e-3) == time_grid(sde, 7, 1e-3, 'karras') == karras_grid(sde, 7, 1e-3, 7.0)
  with pytest.raises(ValueError, match="grid='optimized' needs the model"):
    time_grid(VPSDE(), 4, 1e-3, 'optimized')


def test_callbacks_get_a_named_record_or_its_four_fields():
  sde, records, fields = VPSDE(), [], []
  x_T = sde.prior_sampling((4, 2), torch.Generator().manual_seed(0))
  a = sample(sde, DATA.score_fn(sde), None, 'heun', steps=3, x_init=x_T, callback=records.append)
  b = sample(sde, DATA.score_fn(sde), None, 'heun', steps=3, x_init=x_T,
             callback=lambda i, t, x, d: fields.append((i, t, x, d)))
  assert all(isinstance(r, Step) for r in records) and [r.i for r in records] == [1, 2, 3]
  assert [r.t for r in records] == [f[1] for f in fields] == heun_grid(sde, 3, 1e-3)[1:]
  assert all(torch.equal(r.denoised, f[3]) for r, f in zip(records, fields)) and torch.equal(a.x, b.x)


def euler_pf_ode(sde, score_fn, x, *, steps=None, eps=1e-3, denoise=True, ts=None, callback=None,
                 progress=None, scale: float = 1.0):
  """A tiny example solver: Euler on the PF-ODE dx/dt = f - g^2 s / 2 over ts (`scale`
  multiplies the score, an option); Tweedie at ts[-1] if `denoise`."""
  ts = EULER.times(sde, steps, eps, ts)
  for i in range(len(ts) - 1):
    t = torch.full((x.shape[0],), ts[i], dtype=x.dtype)
    f, g = sde.sde(x, t)
    x = x + (f - 0.5 * g[:, None] ** 2 * scale * score_fn(x, t)) * (ts[i + 1] - ts[i])
    if callback is not None:
      callback(Step(i + 1, ts[i + 1], x, None))
  return tweedie_denoise(sde, score_fn, x, ts[-1]) if denoise else x


EULER = SolverSpec('euler_example', euler_pf_ode, grid=lambda sde, steps, eps, o: uniform_grid(sde, steps, eps),
                   grid_doc='steps uniform steps from T to eps', default_steps=30,
                   nfe=lambda steps, o, denoise: steps + denoise, denoised='None', uses=('denoise',),
                   stochastic=lambda o: False)


def test_an_example_solver_is_one_registration():
  """The solver above, its SPEC and one `register` line: sample(), SOLVERS, the options, the
  CLI's option plumbing and config_check's solver choice all know it."""
  register(EULER)
  try:
    sde, calls = VPSDE(), []
    x_T = sde.prior_sampling((256, 2), torch.Generator().manual_seed(0))
    res = sample(sde, DATA.score_fn(sde), None, 'euler_example', x_init=x_T, callback=calls.append,
                 return_trajectory=True)
    assert res.nfe == EULER.nfe(30, EULER.options(), True) == 31 and len(calls) == 30
    assert [c.t for c in calls] == pytest.approx(uniform_grid(sde, 30, 1e-3)[1:], abs=1e-12)
    assert len(res.trajectory) == 31 and torch.equal(res.trajectory[-1], calls[-1].x)
    assert (res.x.mean(0) - torch.tensor([1.0, -2.0])).abs().max() < 0.4
    same = sample(sde, DATA.score_fn(sde), None, 'euler_example', x_init=x_T, ts=uniform_grid(sde, 30, 1e-3))
    assert torch.equal(same.x, res.x)
    assert solver_options('euler_example') == ('scale', 'ts', 'callback')
    assert 'euler_example' in SOLVERS and solver_kwargs(get_default_config(), 'euler_example') == {}
    config = get_default_config()
    config.sampling.method = 'euler_example'
    validate(config)  # the CLI's solver choice includes it
    with pytest.raises(ValueError, match="unknown option.*'euler_example'"):
      sample(sde, DATA.score_fn(sde), (2, 2), 'euler_example', eta=1.0)
    with pytest.raises(ValueError, match='already registered'):
      register(EULER)
  finally:
    unregister('euler_example')
  assert 'euler_example' not in SOLVERS


def test_every_solver_takes_ts_and_a_callback():
  """The old WITH_CALLBACK list is gone (#27): the spec contract makes every solver take both."""
  import inspect
  for spec in REGISTRY.values():
    params = inspect.signature(spec.fn).parameters
    assert {'ts', 'callback', 'progress'} <= set(params), spec.name
  assert TUNING.pilot_batch == 8  # the regression cases' tuning is cheap
