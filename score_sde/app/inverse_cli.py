"""Inputs of `--mode inpaint` / `--mode colorize`: images from a file or the test split, and
inpainting masks from a file or by name. The solvers are in `score_sde.sampling.inverse`.

Masks are 1 where a pixel is known and 0 where it is to be filled, `[n, 1, H, W]` (one mask
for every channel), as `score_sde.sampling.inverse.inpaint` expects.
"""
from __future__ import annotations

import os
import zipfile

import numpy as np
import torch
from PIL import Image

from score_sde.errors import UserError

MASKS = ('center', 'left', 'random')
# what NumPy and PIL raise for a damaged file (PIL's UnidentifiedImageError is an OSError; its
# DecompressionBombError is none of these)
_DAMAGED = (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile, Image.DecompressionBombError)


def load_images(path: str, channels: int, size: int) -> torch.Tensor:
  """Images `[n, C, H, W]` in [0, 1] from `.npy` / `.npz` (array 'images' or the first one;
  `[n, H, W, C]`, `[n, C, H, W]`, `[H, W, C]` or `[H, W]`) or from an image file (.png / .jpg,
  resized to size x size).

  Values (nothing is clamped): uint8, and other integer types with values in 0..255, are
  divided by 255; floats (and bools) must be finite and in [0, 1] and are used as they are.
  Anything else (e.g. floats in 0..255 or in [-1, 1]) is a one-line UserError saying how to
  convert, as is a file that cannot be read as images (naming the file)."""
  arr = _read_array(path, channels, size)
  x = torch.from_numpy(np.ascontiguousarray(to_unit_range(arr, path)))
  if x.ndim == 2:
    x = x[None, None]
  elif x.ndim == 3:
    x = x[None]
  if x.ndim == 4 and x.shape[-1] == channels and x.shape[1] != channels:
    x = x.permute(0, 3, 1, 2)
  if x.ndim != 4 or tuple(x.shape[1:]) != (channels, size, size) or len(x) == 0:
    raise UserError(f'{path}: expected images of shape ({channels}, {size}, {size}), got {tuple(arr.shape)}')
  return x.contiguous()


def _read_array(path: str, channels: int, size: int | None) -> np.ndarray:
  """The raw array of an .npy / .npz / image file (an image resized to size x size unless
  size is None); a one-line UserError naming the file when it cannot be read."""
  if not os.path.isfile(path):
    raise UserError(f'input images not found: {path}')
  try:
    if path.endswith(('.npy', '.npz')):
      data = np.load(path, allow_pickle=False)
      if path.endswith('.npz'):
        with data:
          if not data.files:
            raise UserError(f'{path}: the .npz file holds no arrays')
          return data['images'] if 'images' in data.files else data[data.files[0]]
      return np.asarray(data)
    with Image.open(path) as img:
      img = img.convert('L' if channels == 1 else 'RGB')
      if size is not None:
        img = img.resize((size, size), Image.BICUBIC)
      return np.asarray(img)
  except UserError:
    raise
  except _DAMAGED as e:  # a damaged or mislabelled file
    why = str(e).splitlines()[0] if str(e) else type(e).__name__
    raise UserError(f'cannot read images from {path}: {why} (use a .npy / .npz array or an image '
                    'file)') from None


def to_unit_range(arr: np.ndarray, path: str) -> np.ndarray:
  """`arr` as float32 in [0, 1] by the rule of `load_images`; a one-line UserError otherwise."""
  if arr.dtype == np.bool_:
    return arr.astype(np.float32)
  if np.issubdtype(arr.dtype, np.integer):
    if arr.size and (arr.min() < 0 or arr.max() > 255):
      raise UserError(f'{path}: integer images must be in 0..255 (divided by 255); got values in '
                      f'[{arr.min()}, {arr.max()}]')
    return arr.astype(np.float32) / 255.0
  if not np.issubdtype(arr.dtype, np.floating):
    raise UserError(f'{path}: images must be uint8 (0..255) or floats in [0, 1]; got dtype {arr.dtype}')
  if not np.isfinite(arr).all():
    raise UserError(f'{path}: images have non-finite (NaN / inf) values')
  if arr.size and (arr.min() < 0 or arr.max() > 1):
    raise UserError(f'{path}: float images must be in [0, 1]; got values in [{arr.min():.4g}, '
                    f'{arr.max():.4g}] (for 0..255 values divide by 255 or store uint8; for [-1, 1] '
                    'use (x + 1) / 2)')
  return arr.astype(np.float32)


def make_mask(spec: str, shape, fraction: float = 0.5, seed: int = 0) -> torch.Tensor:
  """The mask `[n, 1, H, W]` named by `spec` (center: a centred box of half the side is
  unknown; left: the right half is unknown; random: each pixel known with prob. `fraction`),
  or read from a .npy / .npz / .png file (1 = known, 0 = unknown; see `_mask_file`)."""
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
  return _mask_file(spec, n, h, w)


def _mask_file(path: str, n: int, h: int, w: int) -> torch.Tensor:
  """A mask file as `[n, 1, H, W]`: an array (or an image, not resized) of shape `[H, W]`,
  `[k, H, W]` or `[k, 1, H, W]` with k = 1 (one mask for all) or k >= n (the first n), values
  0 and 1 (or 0 and 255 in uint8 / an image); a one-line UserError otherwise."""
  arr = _read_array(path, 1, None)
  if np.issubdtype(arr.dtype, np.integer) and arr.size and arr.max() > 1:
    arr = arr / 255.0
  m = torch.from_numpy(np.ascontiguousarray(arr, dtype=np.float32) if arr.dtype != np.bool_
                       else arr.astype(np.float32))
  if m.ndim == 2:
    m = m[None]
  if m.ndim == 4 and m.shape[1] == 1:
    m = m[:, 0]
  if m.ndim != 3 or tuple(m.shape[1:]) != (h, w) or not (m.shape[0] == 1 or m.shape[0] >= n):
    raise UserError(f'mask {path}: shape {tuple(arr.shape)} does not fit {n} images of {h}x{w}; '
                    f'use [{h}, {w}], [1 or >= {n}, {h}, {w}] or [1 or >= {n}, 1, {h}, {w}]')
  if not bool(((m == 0) | (m == 1)).all()):
    raise UserError(f'mask {path}: values must be 0 (unknown) and 1 (known) (or 0 / 255 in an '
                    'image); it has others (or NaN)')
  m = m[:, None]
  return m.expand(n, 1, h, w) if m.shape[0] == 1 else m[:n]
