"""Pieces every solver shares: NFE counting, the Tweedie denoising step, the latest x0
prediction and the `Step` record for callbacks, and the checks of explicit times and options."""
from __future__ import annotations

import dataclasses
import inspect
import math
import numbers
from typing import NamedTuple

import torch

from score_sde.maths.conventions import x0_from_score
from score_sde.maths.sdes import SDE
from score_sde.maths.utils import full_t


class Step(NamedTuple):
  """What a solver reports after step i (1..steps): x `[B, ...]` at time t (a float) and
  `denoised`, its x0 prediction `[B, ...]` or None (each solver's `SolverSpec.denoised` says
  which). A NamedTuple, so `i, t, x, denoised = step` works."""
  i: int
  t: float
  x: torch.Tensor
  denoised: torch.Tensor | None


def step_callback(callback):
  """`callback` as a function of one `Step`: a callback that takes one positional argument
  gets the record, any other (the older `callback(i, t, x, denoised)`) its four fields."""
  if callback is None:
    return None
  try:
    sig = inspect.signature(callback)
  except (TypeError, ValueError):  # no signature (some builtins): the four-argument form
    return lambda step: callback(*step)
  if _binds(sig, 1) and not _binds(sig, 4):
    return callback
  return lambda step: callback(*step)


def _binds(sig: inspect.Signature, n: int) -> bool:
  try:
    sig.bind(*([None] * n))
    return True
  except TypeError:
    return False


@dataclasses.dataclass
class SampleResult:
  """x: samples `[B, ...]` at time 0 (denoised) or eps; nfe: score evaluations (one per
  batched call); trajectory: optional list of intermediate states."""
  x: torch.Tensor
  nfe: int
  trajectory: list | None = None


class CountingScore:
  """Wraps `score_fn(x, t)` and counts its (batched) evaluations. The first evaluation's output
  must have x's shape (a ValueError otherwise: a `[D]` or `[1, ...]` score would be silently
  broadcast over the batch); shapes are host-side, so the check costs no device sync."""

  def __init__(self, score_fn):
    self.score_fn = score_fn
    self.nfe = 0
    self._checked = False

  def __call__(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    self.nfe += 1
    out = self.score_fn(x, t)
    if not self._checked:
      check_score_shape(out, x)
      self._checked = True
    return out

  @property
  def score_and_variance(self):
    """The wrapped function's `score_and_variance` (learned variances), also counted."""
    both = getattr(self.score_fn, 'score_and_variance', None)
    if both is None:
      return None

    def counted(x, t):
      self.nfe += 1
      return both(x, t)
    return counted


class LatestX0:
  """Wraps `score_fn(x, t)` and keeps its latest call, so that a callback can be handed the
  x0 prediction (x + sigma^2 s)/alpha `[B, ...]` of that call at no extra evaluation."""

  def __init__(self, sde: SDE, score_fn):
    self.sde, self.score_fn, self._last = sde, score_fn, None

  def __call__(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    score = self.score_fn(x, t)
    self._last = (x, t, score)
    return score

  def denoised(self) -> torch.Tensor | None:
    """The x0 prediction of the latest call (None before the first)."""
    if self._last is None:
      return None
    x, t, score = self._last
    return x0_from_score(x, score, self.sde.mean_coeff(t), self.sde.marginal_std(t))


def tweedie_denoise(sde: SDE, score_fn, x: torch.Tensor, t: float, x0_fn=None) -> torch.Tensor:
  """E[x_0 | x_t] = (x + sigma(t)^2 s(x, t)) / alpha(t) (Tweedie's formula; Efron 2011).

  One score evaluation; the "noise removal" final step of Song et al. 2021 (App. G), and the
  data prediction of the exponential integrators. `x0_fn`: the solver's x0 map (clipping or
  dynamic thresholding, `thresholding.x0_limit`) applied to it; None: none.
  """
  tt = full_t(t, x.shape[0], x)
  alpha, std = sde.mean_coeff(tt), sde.marginal_std(tt)
  x0 = x0_from_score(x, score_fn(x, tt), alpha, std)
  return x0 if x0_fn is None else x0_fn(x0)


def check_score_shape(out, x: torch.Tensor) -> None:
  """A ValueError unless the score `out` is a tensor of x's shape `[B, ...]`."""
  if not torch.is_tensor(out) or tuple(out.shape) != tuple(x.shape):
    got = tuple(out.shape) if torch.is_tensor(out) else type(out).__name__
    raise ValueError(f'score_fn(x, t) returned {got} for x of shape {tuple(x.shape)}; it must '
                     "return a tensor of x's shape (one score per sample)")


def check_steps_and_shape(steps, shape) -> None:
  """A ValueError unless `steps` is None or an integer >= 1 and `shape` (None: taken from
  x_init) is a non-empty sequence of integers >= 1 (a batch of at least one sample)."""
  if steps is not None and (isinstance(steps, bool) or not isinstance(steps, numbers.Integral) or steps < 1):
    raise ValueError(f'steps = {steps!r}: must be an integer >= 1 (or None for the solver default)')
  if shape is None:
    return
  dims = tuple(shape.shape) if torch.is_tensor(shape) else tuple(shape)
  if not dims or any(isinstance(d, bool) or not isinstance(d, numbers.Integral) or d < 1 for d in dims):
    raise ValueError(f'shape = {dims}: must be [B, ...] with a batch B >= 1 and every size >= 1')


class Times(list):
  """Times `[T, ..., end]` (floats) resolved by `SolverSpec.times`: checked explicit times or
  a solver's own grid, which a solver handed them does not check again (a chain grid of VE
  visits table index 0 at t = 0 before its end marker 0)."""


def check_times(sde: SDE, ts, allow_zero_end: bool = False) -> list[float]:
  """Explicit times `ts` (a sequence or a 1-D tensor) as a list of floats: at least 2, finite,
  strictly decreasing, within (0, T] (the last may be 0 if `allow_zero_end`); a ValueError
  otherwise."""
  try:
    ts = [float(t) for t in (ts.tolist() if torch.is_tensor(ts) else ts)]
  except (TypeError, ValueError):
    raise ValueError(f'ts must be a 1-D sequence of times, got {ts!r:.80}') from None
  bad_end = len(ts) < 2 or ts[0] > sde.T or (ts[-1] < 0 if allow_zero_end else ts[-1] <= 0)
  if bad_end or not all(map(math.isfinite, ts)) or any(b >= a for a, b in zip(ts, ts[1:])):
    span = '[0' if allow_zero_end else '(0'
    raise ValueError(f'ts must be at least 2 strictly decreasing times in {span}, {sde.T}], got {ts[:5]}...')
  return ts


def check_options(solver: str, options: dict, allowed) -> None:
  """Reject unknown keyword options with a one-line message."""
  unknown = sorted(set(options) - set(allowed))
  if unknown:
    raise ValueError(f"unknown option(s) {', '.join(unknown)} for solver '{solver}'; "
                     f"allowed: {', '.join(sorted(allowed)) or 'none'}")
