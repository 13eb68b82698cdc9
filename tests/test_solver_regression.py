"""Every solver reproduces the samples, NFE and callback sequences recorded from the code
before the SolverSpec / grids refactor (issue 27: "no change in behaviour"), to 1e-6.

The reference file tests/data/solver_reference.pt was written by this file's `record()`
(`python tests/test_solver_regression.py --record`) at commit 71745f3; do not rewrite it to make
a test pass: a difference means a solver's samples changed."""
from __future__ import annotations

import os
import sys

import pytest
import torch

from score_sde.maths.analytic import GaussianMixture, gaussian
from score_sde.sampling import GridTuning, sample
from score_sde.sdes import SubVPSDE, VESDE, VPSDE

REFERENCE = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'data', 'solver_reference.pt')
SDES = {'vp': VPSDE, 'subvp': SubVPSDE, 've': VESDE, 'vpcos': lambda: VPSDE(schedule='cosine'),
        'vp8': lambda: VPSDE(beta_max=4.0, N=8), 've8': lambda: VESDE(N=8)}
MIX = GaussianMixture(torch.tensor([[1.5, -1.0], [-2.0, 0.5]]), torch.tensor([[0.3, 0.5], [0.4, 0.2]]),
                      torch.tensor([1.0, 2.0]))
IMG = gaussian(torch.linspace(-1.0, 1.0, 16), torch.linspace(0.2, 1.0, 16))  # data [B, 1, 4, 4]
SHAPES = {'flat': ((8, 2), MIX), 'img': ((2, 1, 4, 4), IMG)}
TUNING = GridTuning(key=None, pilot_batch=8, passes=1, iters=3, max_knots=2)


class LearnedVariance:
  """The mixture's exact score with a fixed learned-variance output v (IDDPM's [0, 1] mix)."""

  def __init__(self, sde, data):
    self.score = data.score_fn(sde)

  def __call__(self, x, t):
    return self.score(x, t)

  def score_and_variance(self, x, t):
    return self.score(x, t), torch.full_like(x, 0.3)


def _cases():
  """name -> (sde key, shape key, solver, sample() keywords)."""
  c = {}

  def add(solver, sdes=('vp', 'subvp', 've'), shapes=('flat',), tag='', **kw):
    for s in sdes:
      for sh in shapes:
        c[f'{solver}{tag}|{s}|{sh}'] = (s, sh, solver, kw)
  chained = ('vp', 've')
  for p in ('euler_maruyama', 'reverse_diffusion', 'ancestral', 'none'):
    for corr in ('langevin', 'ald', 'none'):
      if p == corr == 'none':
        continue
      add('pc', chained if p == 'ancestral' else ('vp', 'subvp', 've'), tag=f' {p} {corr}', steps=5,
          predictor=p, corrector=corr)
  add('pc', tag=' img', shapes=('img',), steps=4)
  add('pc', tag=' pf n2 snr', steps=4, probability_flow=True, n_steps=2, snr=0.3, denoise=False)
  add('pc', ('vp8', 've8'), tag=' on-chain', predictor='ancestral')
  add('pc', ('vp8', 've8', 'subvp'), tag=' N', steps=8, eps=1e-2)
  add('pc', tag=' ts', ts=[1.0, 0.6, 0.3, 0.1, 0.0])
  add('ode', tag=' rk4', shapes=('flat', 'img'), steps=5, method='rk4')
  add('ode', tag=' euler nodenoise', steps=4, method='euler', denoise=False, eps=1e-2)
  add('ode', tag=' dopri5', rtol=1e-4, atol=1e-4)
  add('ode', ('vp',), tag=' rk45', method='rk45', rtol=1e-4, atol=1e-4)
  add('ode', tag=' ts adaptive', ts=[1.0, 0.5, 0.1, 1e-3], rtol=1e-4, atol=1e-4)
  add('ode', tag=' ts rk4', ts=[1.0, 0.5, 0.1, 1e-3], method='rk4')
  for m in ('euler', 'milstein', 'srk'):
    add('sde', tag=f' {m}', steps=5, method=m)
  add('sde', tag=' img', shapes=('img',), steps=4)
  add('sde', ('vp8',), tag=' default')
  add('sde', tag=' ts', ts=[1.0, 0.6, 0.2, 0.05])
  add('sde', ('vp',), tag=' adaptive', steps=10, adaptive=True, ts=[1.0, 0.5, 1e-3], rtol=1e-3, atol=1e-3)
  for v in ('auto', 'small', 'large'):
    add('ddpm', chained, tag=f' {v}', steps=5, variance=v)
  add('ddpm', ('vp8', 've8'), tag=' N')
  add('ddpm', ('vp',), tag=' img', shapes=('img',), steps=4)
  add('ddpm', ('vp',), tag=' ts', ts=[0.9, 0.5, 0.2, 0.0])
  for eta in (0.0, 0.5, 1.0):
    add('ddim', chained, tag=f' eta{eta}', steps=5, eta=eta)
  add('ddim', ('vp8',), tag=' N', eta=1.0)
  add('heun', tag=' default')
  add('heun', tag=' 4 img', shapes=('flat', 'img'), steps=4)
  add('heun', tag=' churn rho', steps=5, s_churn=5.0, rho=5.0, s_tmin=0.05, s_tmax=20.0, s_noise=1.01)
  add('heun', tag=' ts', ts=[1.0, 0.6, 0.3, 0.1, 1e-3], denoise=False)
  for grid in ('logsnr', 'time_uniform', 'karras'):
    for order in (1, 2, 3):
      add('dpm_solver', tag=f' {grid} {order}M', steps=6, order=order, grid=grid)
    for order in (2, 3):
      add('dpm_solver', tag=f' {grid} {order}S', steps=4, order=order, grid=grid, multistep=False)
  add('dpm_solver', ('vp', 'vpcos'), tag=' default img', shapes=('flat', 'img'))
  add('dpm_solver', ('vp',), tag=' 12 no-lof', steps=12, order=3, lower_order_final=False, eps=1e-2)
  add('dpm_solver', ('vp',), tag=' ts', ts=[1.0, 0.7, 0.4, 0.1, 1e-3], order=3, denoise=False)
  for variant in ('bh1', 'bh2'):
    for order in (1, 2, 3):
      for grid in ('logsnr', 'karras'):
        add('unipc', tag=f' {variant} {order} {grid}', steps=6, order=order, variant=variant, grid=grid)
  add('unipc', ('vp', 'vpcos'), tag=' default img', shapes=('flat', 'img'))
  add('unipc', ('vp',), tag=' ts tu', ts=[1.0, 0.7, 0.4, 0.1, 1e-3], order=3, grid='time_uniform')
  add('dpm_solver', ('vp', 've'), tag=' optimized', steps=4, order=2, grid='optimized', denoise=False)
  add('unipc', ('vp',), tag=' optimized', steps=4, order=3, grid='optimized')
  return c


CASES = _cases()
CALLBACKS = ('pc euler_maruyama langevin|vp|flat', 'pc ts|vp|flat', 'ode rk4|vp|flat', 'ode ts adaptive|vp|flat',
             'sde euler|vp|flat', 'sde adaptive|vp|flat', 'ddpm small|vp|flat', 'ddim eta0.0|ve|flat',
             'heun churn rho|vp|flat', 'dpm_solver logsnr 3S|subvp|flat', 'dpm_solver karras 2M|ve|flat',
             'unipc bh2 3 logsnr|vp|flat', 'unipc bh1 2 karras|ve|flat', 'dpm_solver optimized|vp|flat')
LEARNED = ('ddpm auto|vp|flat', 'ddim eta0.5|vp|flat', 'ddim eta1.0|ve|flat')


def run_case(name: str):
  """(x, nfe, calls) of one case; calls: (i, t, x, denoised or None) per callback (or None)."""
  sde_key, shape_key, solver, kw = CASES[name]
  sde = SDES[sde_key]()
  shape, data = SHAPES[shape_key]
  score_fn = LearnedVariance(sde, data) if name in LEARNED else data.score_fn(sde)
  seed = sum(map(ord, name)) % 1000
  x_T = sde.prior_sampling(shape, torch.Generator().manual_seed(seed))
  calls = [] if name in CALLBACKS else None
  extra = {'callback': lambda i, t, x, d: calls.append((i, float(t), x.clone(), d))} if calls is not None else {}
  res = sample(sde, score_fn, None, solver, x_init=x_T, generator=torch.Generator().manual_seed(seed + 1),
               grid_tuning=TUNING, **kw, **extra)
  return res.x, res.nfe, calls


def _pack_calls(calls):
  if calls is None:
    return None
  return {'i': torch.tensor([c[0] for c in calls]), 't': torch.tensor([c[1] for c in calls], dtype=torch.float64),
          'x': torch.stack([c[2] for c in calls]),
          'has_denoised': torch.tensor([c[3] is not None for c in calls]),
          'denoised': torch.stack([c[3] if c[3] is not None else torch.zeros_like(c[2]) for c in calls])}


def record(path: str = REFERENCE) -> None:
  """Write the reference file (only from the code before the refactor)."""
  torch.set_num_threads(1)
  out = {}
  for name in CASES:
    x, nfe, calls = run_case(name)
    assert torch.isfinite(x).all(), name
    out[name] = {'x': x, 'nfe': nfe, 'calls': _pack_calls(calls)}
  os.makedirs(os.path.dirname(path), exist_ok=True)
  torch.save(out, path)
  print(f'{len(out)} cases -> {path} ({os.path.getsize(path) // 1024} KiB)')


pytestmark = pytest.mark.usefixtures('one_thread')


@pytest.fixture(scope='module')
def reference():
  return torch.load(REFERENCE, weights_only=True)


def test_every_case_is_recorded(reference):
  assert set(reference) == set(CASES)


@pytest.mark.parametrize('name', list(CASES))
def test_samples_nfe_and_callbacks_unchanged(name, reference):
  ref = reference[name]
  x, nfe, calls = run_case(name)
  assert nfe == ref['nfe']
  torch.testing.assert_close(x, ref['x'], rtol=0, atol=1e-6 * (1 + ref['x'].abs().max().item()))
  if ref['calls'] is None:
    return
  got = _pack_calls(calls)
  assert torch.equal(got['i'], ref['calls']['i']) and torch.equal(got['has_denoised'], ref['calls']['has_denoised'])
  # 1e-7: ode's fixed-step grid was float32 linspace before the refactor, float64 now
  torch.testing.assert_close(got['t'], ref['calls']['t'], rtol=0, atol=1e-7)
  for key in ('x', 'denoised'):
    scale = 1 + ref['calls'][key].abs().max().item()
    torch.testing.assert_close(got[key], ref['calls'][key], rtol=0, atol=1e-6 * scale)


if __name__ == '__main__' and '--record' in sys.argv:
  record()
