"""Inputs of `--mode inpaint` / `--mode colorize`: images from a file or the test split, and
inpainting masks from a file or by name. The solvers are in `score_sde.inverse`.

Masks are 1 where a pixel is known and 0 where it is to be filled, `[n, 1, H, W]` (one mask
for every channel), as `score_sde.inverse.inpaint` expects.
"""
from __future__ import annotations

import os

import numpy as np
import torch

from score_sde.errors import UserError

MASKS = ('center', 'left', 'random')


def load_images(path: str, channels: int, size: int) -> torch.Tensor:
  """Images `[n, C, H, W]` in [0, 1] from `.npy` / `.npz` (array 'images' or the first one;
  `[n, H, W, C]`, `[n, C, H, W]`, `[H, W, C]` or `[H, W]`; uint8 or floats in [0, 1]) or from an
  image file (.png / .jpg, resized to size x size)."""
  if not os.path.isfile(path):
    raise UserError(f'input images not found: {path}')
  if path.endswith(('.npy', '.npz')):
    data = np.load(path)
    if path.endswith('.npz'):
      data = data['images'] if 'images' in data.files else data[data.files[0]]
    arr = np.asarray(data)
    arr = arr.astype(np.float32) / 255.0 if arr.dtype == np.uint8 else arr.astype(np.float32)
  else:
    from PIL import Image
    with Image.open(path) as img:
      img = img.convert('L' if channels == 1 else 'RGB').resize((size, size), Image.BICUBIC)
      arr = np.asarray(img, dtype=np.float32) / 255.0
  x = torch.from_numpy(np.ascontiguousarray(arr))
  if x.ndim == 2:
    x = x[None, None]
  elif x.ndim == 3:
    x = x[None]
  if x.ndim == 4 and x.shape[-1] == channels and x.shape[1] != channels:
    x = x.permute(0, 3, 1, 2)
  if x.ndim != 4 or tuple(x.shape[1:]) != (channels, size, size):
    raise UserError(f'{path}: expected images of shape ({channels}, {size}, {size}), got {tuple(arr.shape)}')
  return x.clamp(0, 1).contiguous()


def make_mask(spec: str, shape, fraction: float = 0.5, seed: int = 0) -> torch.Tensor:
  """The mask `[n, 1, H, W]` named by `spec` (center: a centred box of half the side is
  unknown; left: the right half is unknown; random: each pixel known with prob. `fraction`),
  or read from a .npy / .png file (nonzero = known)."""
  n, _, h, w = shape
  if spec == 'center':
    m = torch.ones(n, 1, h, w)
    m[:, :, h // 4:h - h // 4, w // 4:w - w // 4] = 0
    return m
  if spec == 'left':
    m = torch.zeros(n, 1, h, w)
    m[..., :w // 2] = 1
    return m
  if spec == 'random':
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(n, 1, h, w, generator=g) < fraction).float()
  if not os.path.isfile(spec):
    raise UserError(f"inverse.mask must be one of {', '.join(MASKS)} or a mask file; "
                    f'{spec!r} is neither')
  m = load_images(spec, 1, h) if not spec.endswith('.npy') else torch.from_numpy(np.load(spec)).float()
  m = (m.reshape(-1, 1, h, w) > 0).float()
  return m.expand(n, 1, h, w) if m.shape[0] == 1 else m[:n]
