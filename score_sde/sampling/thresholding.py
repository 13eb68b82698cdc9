"""x0 clipping and dynamic thresholding of a solver's data prediction (Saharia et al. 2022,
"Photorealistic Text-to-Image Diffusion Models...", Sec. 2.3; diffusers' `clip_sample` and
`thresholding`), built once here and applied where `ddpm`, `ddim`, `dpm_solver` and `unipc`
form their x0 prediction (x + sigma^2 score)/alpha.

The options every one of those solvers takes:
  clip_x0: the data range: False (off), True ([-1, 1], centered data, as diffusers'
    `clip_sample`), a number r > 0 ([-r, r], diffusers' `clip_sample_range`) or (lo, hi).
    The CLI passes the data range of the config (`data.centered`: [-1, 1], else [0, 1]).
  threshold: p in (0, 1] turns on dynamic thresholding (0: off), which then replaces clipping:
    per sample, with u = (x0 - c)/w the prediction in units of the range (center c,
    half-width w; u = x0 for [-1, 1]), s = clamp(quantile_p(|u|), 1, threshold_max) and
    u -> clip(u, -s, s) / s. Its range is clip_x0's ([-1, 1] when clip_x0 is off). At
    s = 1 (few pixels out of range) it is plain clipping.
  threshold_max: the cap on s (diffusers' `sample_max_value`); 0: no cap (Imagen).
All off (the defaults) leaves every solver's samples bit-identical.
"""
from __future__ import annotations

import math
import numbers

import torch

OFF = dict(clip_x0=False, threshold=0.0, threshold_max=0.0)


def x0_range(clip_x0) -> tuple[float, float] | None:
  """The (lo, hi) of a `clip_x0` option (None when off); a one-line ValueError for a bad one."""
  if clip_x0 is None or clip_x0 is False:
    return None
  if clip_x0 is True:
    return (-1.0, 1.0)
  if isinstance(clip_x0, numbers.Real) and math.isfinite(clip_x0) and clip_x0 > 0:
    return (-float(clip_x0), float(clip_x0))
  if isinstance(clip_x0, (tuple, list)) and len(clip_x0) == 2 and all(
      isinstance(v, numbers.Real) and not isinstance(v, bool) and math.isfinite(v) for v in clip_x0) \
      and clip_x0[0] < clip_x0[1]:
    return (float(clip_x0[0]), float(clip_x0[1]))
  raise ValueError(f'clip_x0 = {clip_x0!r}: must be False, True ([-1, 1]), a number r > 0 ([-r, r]) '
                   'or a data range (lo, hi) with lo < hi')


def clip(x0: torch.Tensor, lo: float, hi: float) -> torch.Tensor:
  """x0 `[B, ...]` clamped to [lo, hi]."""
  return x0.clamp(lo, hi)


def dynamic_threshold(x0: torch.Tensor, p: float, lo: float = -1.0, hi: float = 1.0,
                      max_value: float = 0.0) -> torch.Tensor:
  """Dynamic thresholding of x0 `[B, ...]` in the range [lo, hi] (module docstring): per
  sample s = clamp(quantile_p(|u|), 1, max_value or inf) of u = (x0 - c)/w, then
  c + w clip(u, -s, s)/s. For [-1, 1] this is diffusers' `_threshold_sample` exactly. Half
  precision is computed in float32 (as there; quantile needs it) and returned in x0's dtype."""
  dtype = x0.dtype
  u = x0 if dtype in (torch.float32, torch.float64) else x0.float()
  c, w = (lo + hi) / 2, (hi - lo) / 2
  if (c, w) != (0.0, 1.0):
    u = (u - c) / w
  flat = u.reshape(u.shape[0], -1)
  s = torch.quantile(flat.abs(), p, dim=1).clamp(min=1.0, max=max_value if max_value > 0 else None)
  s = s.unsqueeze(1)
  u = (torch.clamp(flat, -s, s) / s).reshape(u.shape)
  if (c, w) != (0.0, 1.0):
    u = c + w * u
  return u.to(dtype)


class X0Limit:
  """The x0 map of the options (module docstring): `X0Limit(...)(x0 [B, ...]) -> [B, ...]`."""

  def __init__(self, clip_x0=False, threshold: float = 0.0, threshold_max: float = 0.0):
    rng = x0_range(clip_x0)
    if isinstance(threshold, bool) or not isinstance(threshold, numbers.Real) or not 0 <= threshold <= 1:
      raise ValueError(f'threshold = {threshold!r}: must be a quantile p in (0, 1] (e.g. 0.995), or 0 (off)')
    if isinstance(threshold_max, bool) or not isinstance(threshold_max, numbers.Real) or not (
        threshold_max == 0 or 1 <= threshold_max < math.inf):
      raise ValueError(f'threshold_max = {threshold_max!r}: must be a number >= 1 (the cap on the '
                       "threshold s, diffusers' sample_max_value), or 0 (no cap)")
    self.range = rng if rng is not None else (-1.0, 1.0)
    self.threshold, self.threshold_max = float(threshold), float(threshold_max)
    self.clips = rng is not None

  def __call__(self, x0: torch.Tensor) -> torch.Tensor:
    if self.threshold > 0:
      return dynamic_threshold(x0, self.threshold, *self.range, self.threshold_max)
    return clip(x0, *self.range)


def x0_limit(clip_x0=False, threshold: float = 0.0, threshold_max: float = 0.0) -> X0Limit | None:
  """The x0 map of the options, or None when they are off (the solver then does nothing:
  bit-identical to a solver without them). Bad options: a one-line ValueError."""
  limit = X0Limit(clip_x0, threshold, threshold_max)
  return limit if limit.clips or limit.threshold > 0 else None


def fraction_outside(x: torch.Tensor, lo: float, hi: float) -> float:
  """The fraction of the entries of x outside [lo, hi]."""
  return float(((x < lo) | (x > hi)).float().mean())


__all__ = ['x0_range', 'clip', 'dynamic_threshold', 'X0Limit', 'x0_limit', 'fraction_outside', 'OFF']
