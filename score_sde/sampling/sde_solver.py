"""The reverse-time SDE dx = [f - g^2 s] dt + g dw_bar (Anderson 1982; Song et al. 2021, Eq. 6)
integrated by torchsde (Li et al. 2020; Kidger et al. 2021) for any SDE.

torchsde integrates forward in time, so the state is y(s) = x(T - s) in reversed time
s = T - t in [0, T - eps]: dy = -[f - g^2 s](y, T - s) ds + g(T - s) dW_s, Ito, diagonal noise,
with x flattened to `[B, D]`. The Brownian motion is a `torchsde.BrownianInterval` whose
entropy is drawn from the caller's generator, so equal seeds give equal samples.
"""
from __future__ import annotations

import torch

from score_sde.sampling.common import tweedie_denoise
from score_sde.sdes import SDE
from score_sde.utils import full_t

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
               rtol: float = 1e-3, atol: float = 1e-3, progress=None) -> torch.Tensor:
  """Integrate the reverse SDE from x_T `[B, ...]` at T to eps with torchsde `method`
  (euler, milstein (derivative-free), srk) on `steps` (default N) uniform steps, or with
  torchsde's adaptive step control (`adaptive`, `rtol`, `atol`; `steps` sets the first dt);
  then Tweedie to t = 0 if `denoise`. Returns `[B, ...]`."""
  import torchsde
  method = method.lower()
  if method not in METHODS:
    raise ValueError(f"unknown torchsde method '{method}'; choose one of: {', '.join(METHODS)}")
  steps = steps or sde.N
  span = sde.T - eps
  y0 = x.reshape(x.shape[0], -1)
  # float64 times, and a step 1e-10 longer than span/steps: torchsde accumulates t += dt and
  # clips the last step at t1, so exactly `steps` steps are taken (no round-off extra step)
  ts = torch.tensor([0.0, span], dtype=torch.float64, device=y0.device)
  bm = torchsde.BrownianInterval(
      t0=0.0, t1=span, size=y0.shape, dtype=y0.dtype, device=y0.device, entropy=_entropy(generator),
      levy_area_approximation='space-time' if method == 'srk' else 'none')
  options = {'grad_free': True} if method == 'milstein' else None
  ys = torchsde.sdeint(ReversedTimeSDE(sde, score_fn, x.shape), y0, ts, bm=bm, method=method,
                       dt=span / steps * (1 + 1e-10), adaptive=adaptive, rtol=rtol, atol=atol,
                       options=options)
  x = ys[-1].reshape(x.shape)
  return tweedie_denoise(sde, score_fn, x, eps) if denoise else x


__all__ = ['sde_sample', 'ReversedTimeSDE', 'METHODS']
