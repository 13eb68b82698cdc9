"""PNG output without matplotlib: image grids and 2-D point-cloud pictures."""
from __future__ import annotations

import math

import numpy as np
import torch

from score_sde.files.atomic import atomic_file


def image_grid(x: torch.Tensor, nrow: int | None = None, padding: int = 2,
               min_size: int = 32) -> np.ndarray:
  """Tile images `[B, C, H, W]` with values in [0, 1] into a uint8 `[H', W', C]` array.

  Images smaller than `min_size` pixels are enlarged by an integer factor (nearest pixel), so
  that an 8x8 digit is visible in the grid.
  """
  x = x.detach().float().clamp(0, 1).cpu()
  scale = max(1, min_size // x.shape[-1])
  if scale > 1:
    x = x.repeat_interleave(scale, dim=-1).repeat_interleave(scale, dim=-2)
  b, c, h, w = x.shape
  nrow = nrow or int(math.ceil(math.sqrt(b)))
  ncol = int(math.ceil(b / nrow))
  grid = torch.ones(c, ncol * (h + padding) + padding, nrow * (w + padding) + padding)
  for i in range(b):
    r, q = divmod(i, nrow)
    top, left = padding + r * (h + padding), padding + q * (w + padding)
    grid[:, top:top + h, left:left + w] = x[i]
  return (grid.permute(1, 2, 0).numpy() * 255 + 0.5).astype(np.uint8)


def points_image(x: torch.Tensor, size: int = 256, lim: float | None = None) -> np.ndarray:
  """Render 2-D points `[B, 2]` as a uint8 `[size, size, 3]` density picture."""
  pts = x.detach().float().cpu().numpy()
  lim = lim or float(np.quantile(np.abs(pts), 0.995)) * 1.1 or 1.0
  hist, _, _ = np.histogram2d(pts[:, 1], pts[:, 0], bins=size, range=[[-lim, lim], [-lim, lim]])
  hist = np.log1p(hist[::-1])
  img = 1.0 - hist / max(hist.max(), 1e-12)
  return (np.stack([img, img, np.ones_like(img) * 0.5 + img * 0.5], -1) * 255).astype(np.uint8)


def save_png(array: np.ndarray, path: str) -> None:
  """Write a uint8 `[H, W, C]` (C in 1, 3) array as PNG."""
  from PIL import Image
  img = array[..., 0] if array.shape[-1] == 1 else array
  with atomic_file(path) as f:  # never written through a link planted at `path`
    Image.fromarray(img).save(f, format='PNG')


def save_samples_png(x: torch.Tensor, path: str, nrow: int | None = None) -> None:
  """Images `[B, C, H, W]` in [0, 1] as a grid, or 2-D points `[B, 2]` as a density plot."""
  save_png(points_image(x) if x.ndim == 2 else image_grid(x, nrow), path)
