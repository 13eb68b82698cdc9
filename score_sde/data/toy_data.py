"""2-D toy distributions for quick score-model experiments (cf. FFJORD, Grathwohl et al. 2019).

Every sampler has the signature `sample_NAME(n, generator) -> (x, y)` with
  - x: float32 `[n, 2]`, unscaled points, all (or, for Gaussian tails, nearly all) in [-4, 4]^2;
  - y: int64 `[n]`, the mixture component / cluster the point was drawn from:
      gmm:          the Gaussian component 0..7 (counter-clockwise from angle 0);
      moons:        which moon, 0 (upper) or 1 (lower);
      checkerboard: which of the 8 filled squares, `2 * row + col // 2` with row, col in
                    0..3 counted from the bottom-left cell;
      swissroll:    a coarse position bin 0..3 along the roll (inner end = 0, outer end = 3).
All randomness comes from the given `torch.Generator`, so a fixed seed gives fixed data.
"""
from __future__ import annotations

import math
from typing import Callable

import torch

Sample = tuple[torch.Tensor, torch.Tensor]

GMM_COMPONENTS = 8
GMM_RADIUS = 2.0 * math.sqrt(2.0)   # FFJORD's "8gaussians": centres 4 * unit / sqrt(2)
GMM_STD = 0.5 / math.sqrt(2.0)
MOONS_NOISE = 0.1                   # std of the Gaussian noise, before the scaling by 2
SWISSROLL_NOISE = 1.0               # std before the division by 5 (as FFJORD)
SWISSROLL_BINS = 4


def sample_gmm(n: int, generator: torch.Generator) -> Sample:
  """Eight isotropic Gaussians (std GMM_STD) with centres on a circle of radius GMM_RADIUS."""
  y = torch.randint(GMM_COMPONENTS, (n,), generator=generator)
  angle = 2 * math.pi * y.double() / GMM_COMPONENTS
  centres = GMM_RADIUS * torch.stack([angle.cos(), angle.sin()], dim=1)
  x = centres + GMM_STD * torch.randn(n, 2, generator=generator, dtype=torch.float64)
  return x.float(), y


def sample_moons(n: int, generator: torch.Generator) -> Sample:
  """Two interleaved half circles (sklearn's make_moons), centred and scaled by 2."""
  y = torch.randint(2, (n,), generator=generator)
  theta = math.pi * torch.rand(n, generator=generator, dtype=torch.float64)
  upper = torch.stack([theta.cos(), theta.sin()], dim=1)
  lower = torch.stack([1 - theta.cos(), 0.5 - theta.sin()], dim=1)
  x = torch.where(y[:, None] == 0, upper, lower)
  x = x + MOONS_NOISE * torch.randn(n, 2, generator=generator, dtype=torch.float64)
  x = 2 * (x - torch.tensor([0.5, 0.25], dtype=torch.float64))
  return x.float(), y


def sample_checkerboard(n: int, generator: torch.Generator) -> Sample:
  """Uniform on the 8 dark squares (side 2) of a 4 x 4 checkerboard covering [-4, 4]^2."""
  y = torch.randint(8, (n,), generator=generator)
  row = y // 2
  col = 2 * (y % 2) + row % 2           # the dark cells of row r are the columns of parity r
  u = torch.rand(n, 2, generator=generator, dtype=torch.float64)
  x = 2 * (torch.stack([col, row], dim=1) + u) - 4
  return x.float(), y


def sample_swissroll(n: int, generator: torch.Generator) -> Sample:
  """sklearn's make_swiss_roll projected to its (x, z) plane, plus noise, divided by 5."""
  u = torch.rand(n, generator=generator, dtype=torch.float64)
  t = 1.5 * math.pi * (1 + 2 * u)
  x = torch.stack([t * t.cos(), t * t.sin()], dim=1)
  x = (x + SWISSROLL_NOISE * torch.randn(n, 2, generator=generator, dtype=torch.float64)) / 5
  y = (u * SWISSROLL_BINS).long().clamp_(max=SWISSROLL_BINS - 1)
  return x.float(), y


TOYS: dict[str, Callable[[int, torch.Generator], Sample]] = {
    'gmm': sample_gmm,
    'moons': sample_moons,
    'checkerboard': sample_checkerboard,
    'swissroll': sample_swissroll,
}


def sample_toy(name: str, n: int, seed: int) -> Sample:
  """Draw `n` points of the toy `name` from a fresh generator seeded with `seed`."""
  if name not in TOYS:
    raise ValueError(f"unknown toy dataset '{name}'; choose one of: {', '.join(TOYS)}")
  generator = torch.Generator().manual_seed(seed)
  return TOYS[name](n, generator)
