"""The reverse-time SDE dx = [f - g^2 s] dt + g dw_bar (Anderson 1982; Song et al. 2021, Eq. 6)
integrated by torchsde (Li et al. 2020; Kidger et al. 2021) for any SDE.

torchsde integrates forward in time, so the state is y(s) = x(T - s) in reversed time
s = T - t in [0, T - eps]: dy = -[f - g^2 s](y, T - s) ds + g(T - s) dW_s, Ito, diagonal noise,
with x flattened to `[B, D]`. The Brownian motion is a `torchsde.BrownianInterval` whose
entropy is drawn from the caller's generator, so equal seeds give equal samples.
"""
from __future__ import annotations

import torch

from score_sde.sampling.common import LatestX0, Step, tweedie_denoise
from score_sde.sampling.grids import uniform_grid
from score_sde.sampling.spec import SolverSpec
from score_sde.maths.sdes import SDE
from score_sde.maths.utils import full_t

METHODS = ('euler', 'milstein', 'srk')


class ReversedTimeSDE(torch.nn.Module):
  """torchsde-facing reverse SDE on flattened states `[B, D]` in reversed time s = T - t."""

  noise_type = 'diagonal'
  sde_type = 'ito'

  def __init__(self, sde: SDE, score_fn, shape):
    super().__init__()
    self.rsde, self.shape, self.T = sde.reverse(score_fn), tuple(shape), sde.T
    self._last = None  # (key, drift): torchsde's shape check and first step ask for the same f

  def f(self, s, y):
    key = (float(s), y.data_ptr(), y._version, tuple(y.shape))
    if self._last is not None and self._last[0] == key:
      return self._last[1]
    drift, _ = self.rsde.sde(y.reshape(self.shape), full_t(self.T - float(s), y.shape[0], y))
    drift = -drift.reshape(y.shape)
    self._last = (key, drift)
    return drift

  def g(self, s, y):
    t = full_t(self.T - float(s), y.shape[0], y)
    g = self.rsde.forward.sde(y.reshape(self.shape), t)[1]
    return g[:, None].expand_as(y)


def _entropy(generator) -> int:
  device = generator.device if generator is not None else 'cpu'
  return int(torch.randint(0, 2 ** 62, (1,), generator=generator, device=device))


def sde_sample(sde: SDE, score_fn, x: torch.Tensor, *, steps: int | None = None, eps: float = 1e-3,
               denoise: bool = True, generator=None, method: str = 'euler', adaptive: bool = False,
               rtol: float = 1e-3, atol: float = 1e-3, ts=None, callback=None,
               progress=None) -> torch.Tensor:
  """Integrate the reverse SDE from x_T `[B, ...]` at ts[0] to ts[-1] with torchsde `method`
  (euler, milstein (derivative-free), srk), one step per interval of the decreasing times `ts`
  (default the SPEC's grid: `steps`, default N, uniform steps to eps), or with torchsde's
  adaptive step control (`adaptive`, `rtol`, `atol`; the first dt is the span / `steps`; `ts`
  are then the output times, at which torchsde interpolates); then Tweedie at ts[-1] if
  `denoise`. `callback(Step)` after step i at t = ts[i] (see SPEC.denoised); adaptive: once per
  output time after the solve, with denoised None. Returns `[B, ...]`."""
  import torchsde
  method = method.lower()
  if method not in METHODS:
    raise ValueError(f"unknown torchsde method '{method}'; choose one of: {', '.join(METHODS)}")
  steps = SPEC.steps(sde, steps)
  ts = SPEC.times(sde, steps, eps, ts, SPEC.options(adaptive=adaptive))
  y0 = x.reshape(x.shape[0], -1)
  # reversed times s = T - t in float64; the Brownian motion spans all of them
  ss = [sde.T - t for t in ts]
  bm = torchsde.BrownianInterval(
      t0=ss[0], t1=ss[-1], size=y0.shape, dtype=y0.dtype, device=y0.device, entropy=_entropy(generator),
      levy_area_approximation='space-time' if method == 'srk' else 'none')
  latest = LatestX0(sde, score_fn)
  kwargs = dict(bm=bm, method=method, adaptive=adaptive, rtol=rtol, atol=atol,
                options={'grad_free': True} if method == 'milstein' else None)
  rsde = ReversedTimeSDE(sde, latest, x.shape)
  report = (lambda i, y: callback(Step(i, ts[i], y.reshape(x.shape), latest.denoised()))) if callback else None
  if adaptive:
    ys = torchsde.sdeint(rsde, y0, torch.tensor(ss, dtype=torch.float64, device=y0.device),
                         dt=(ss[-1] - ss[0]) / steps, **kwargs)
    for i in range(1, len(ss) if callback else 0):  # after the solve: torchsde has no step hook
      callback(Step(i, ts[i], ys[i].reshape(x.shape), None))
    y = ys[-1]
  else:
    y = _fixed_steps(rsde, y0, ss, kwargs, progress, report)
  x = y.reshape(x.shape)
  return tweedie_denoise(sde, score_fn, x, ts[-1]) if denoise else x


def _fixed_steps(rsde, y, ss, kwargs, progress, report=None):
  """One torchsde call per interval of the reversed times ss (exactly one step each: dt is the
  interval, 1e-10 longer so that round-off makes no extra step), `report(i, y)` after step i;
  returns the last state `[B, D]`."""
  import torchsde
  extra = None
  idx = range(len(ss) - 1)
  for i in (progress(idx) if progress else idx):
    pair = torch.tensor(ss[i:i + 2], dtype=torch.float64, device=y.device)
    ys, extra = torchsde.sdeint(rsde, y, pair, dt=(ss[i + 1] - ss[i]) * (1 + 1e-10), extra=True,
                                extra_solver_state=extra, **kwargs)
    y = ys[-1]
    if report is not None:
      report(i + 1, y)
  return y


EVALS_PER_STEP = {'euler': 1, 'milstein': 1, 'srk': 9}  # score evaluations per fixed step


def _nfe(steps: int, o, denoise: bool):
  per_step = None if o.adaptive else EVALS_PER_STEP.get(o.method.lower())  # adaptive: not known
  return None if per_step is None else steps * per_step + denoise


SPEC = SolverSpec(
    'sde', sde_sample, grid=lambda sde, steps, eps, o: [sde.T, eps] if o.adaptive else uniform_grid(sde, steps, eps),
    grid_doc='steps uniform steps in t from T to eps; adaptive: output times [T, eps], first dt (T - eps) / steps',
    nfe=_nfe,
    denoised="x0 prediction of the step's latest score evaluation; None when adaptive",
    uses=('steps', 'denoise', 'generator'), choices={'method': METHODS})


__all__ = ['sde_sample', 'ReversedTimeSDE', 'METHODS', 'SPEC']
