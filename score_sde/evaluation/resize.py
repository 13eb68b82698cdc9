"""TensorFlow 1.x `tf.image.resize_bilinear` (align_corners=False, no half-pixel centres), the
resize inside the Inception graph of TTUR's / TF-GAN's FID, which score_sde's and most papers'
numbers were computed with.

Output pixel i samples the input at src = i * in / out (no half-pixel offset, unlike PyTorch's
`F.interpolate(..., align_corners=False)`, which samples (i + 0.5) * in / out - 0.5): with
lo = floor(src), hi = min(lo + 1, in - 1) and w = src - lo, out[i] = in[lo] + (in[hi] - in[lo]) w,
first along the width, then along the height, all in float32 as TensorFlow does (the same
arithmetic as torch-fidelity's `interpolate_bilinear_2d_like_tensorflow1x`). So a downscale by
an integer factor k picks every k-th pixel (no averaging), and the last output pixels of an
upscale repeat the last input pixel.
"""
from __future__ import annotations

import torch


def _taps(in_size: int, out_size: int, device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
  """(lo, hi, w) of each output pixel: `[out_size]` int64, int64, float32."""
  scale = torch.tensor(in_size / out_size, dtype=torch.float32)
  src = torch.arange(out_size, dtype=torch.float32) * scale
  lo = src.floor()
  w = src - lo
  lo = lo.long().clamp(0, in_size - 1)
  hi = (lo + 1).clamp(max=in_size - 1)
  return lo.to(device), hi.to(device), w.to(device)


def resize_bilinear_tf1(images: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
  """TF1 `resize_bilinear(align_corners=False)` of float images `[B, C, H, W]` to `size` (h, w)."""
  if images.ndim != 4 or not images.is_floating_point():
    raise ValueError(f'expected float images [B, C, H, W], got {tuple(images.shape)} {images.dtype}')
  x = images.float()
  y_lo, y_hi, wy = _taps(x.shape[2], size[0], x.device)
  x_lo, x_hi, wx = _taps(x.shape[3], size[1], x.device)
  top, bottom = x.index_select(2, y_lo), x.index_select(2, y_hi)

  def along_width(rows: torch.Tensor) -> torch.Tensor:
    left, right = rows.index_select(3, x_lo), rows.index_select(3, x_hi)
    return left + (right - left) * wx.view(1, 1, 1, -1)

  top, bottom = along_width(top), along_width(bottom)
  return top + (bottom - top) * wy.view(1, 1, -1, 1)


__all__ = ['resize_bilinear_tf1']
