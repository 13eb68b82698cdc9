"""FIR up/down-sampling of images, in pure PyTorch (no custom CUDA op).

NCSN++ (Song et al. 2021, ICLR, "Score-Based Generative Modeling through SDEs", App. H)
resamples feature maps with the anti-aliasing FIR filter of StyleGAN2 (Karras et al. 2020,
"Analyzing and Improving the Image Quality of StyleGAN"), default taps `(1, 3, 3, 1)`.
Everything here is built on one primitive, `upfirdn2d`: zero-stuff by `up`, pad, convolve with
a 2-D FIR kernel, keep every `down`-th sample.

A kernel argument `k` is either a sequence of taps (normalised here, as the reference does on
every call) or a tensor already prepared by `setup_kernel` with the same `gain`/`factor`; modules
prepare it once and keep it in a non-persistent buffer so that state dicts are unchanged.
"""
from __future__ import annotations

from typing import Sequence, Union

import torch
from torch import nn
from torch.nn import functional as F

Kernel = Union[Sequence[float], torch.Tensor, None]


def setup_kernel(k: Sequence[float], gain: float = 1., up: int = 1) -> torch.Tensor:
  """FIR taps -> normalised 2-D kernel `[K, K]` (float32), scaled by `gain * up**2`.

  A 1-D `k` is made separable (outer product). The kernel sums to `gain * up**2`, so that a
  constant image keeps its value (times `gain`) after zero-stuffing by `up` and filtering.
  """
  k = torch.as_tensor(k, dtype=torch.float64)
  if k.ndim == 1:
    k = torch.outer(k, k)
  assert k.ndim == 2 and k.shape[0] == k.shape[1], f'FIR kernel must be square, got {tuple(k.shape)}'
  return (k / k.sum() * (gain * up ** 2)).to(torch.float32)


def _kernel(k: Kernel, factor: int, gain: float, up: int) -> torch.Tensor:
  if isinstance(k, torch.Tensor):
    return k
  return setup_kernel([1] * factor if k is None else k, gain, up)


def upfirdn2d(x: torch.Tensor, k: torch.Tensor, up: int = 1, down: int = 1,
              pad: tuple[int, int] = (0, 0)) -> torch.Tensor:
  """Upsample, FIR-filter, downsample: `[N, C, H, W] -> [N, C, H', W']`.

  With L = H*up + pad[0] + pad[1] (negative pads crop), H' = (L - K) // down + 1. Same maths as
  StyleGAN2's `upfirdn2d`: the kernel is applied as a true convolution (flipped correlation),
  per channel.
  """
  n, c, h, w = x.shape
  if up > 1:  # insert up-1 zeros after every sample, along H and W
    x = F.pad(x.reshape(n, c, h, 1, w, 1), (0, up - 1, 0, 0, 0, up - 1))
    x = x.reshape(n, c, h * up, w * up)
  p0, p1 = pad
  if p0 or p1:
    x = F.pad(x, (p0, p1, p0, p1))
  kh, kw = k.shape
  weight = torch.flip(k, (0, 1)).to(device=x.device, dtype=x.dtype)
  weight = weight.reshape(1, 1, kh, kw).expand(c, 1, kh, kw)
  return F.conv2d(x, weight, stride=down, groups=c)


def upsample_2d(x: torch.Tensor, k: Kernel = None, factor: int = 2, gain: float = 1.) -> torch.Tensor:
  """FIR upsampling `[N, C, H, W] -> [N, C, H*factor, W*factor]` (StyleGAN2 `upsample_2d`).

  Pixels outside the image are zero; a constant image stays constant (times `gain`).
  """
  k = _kernel(k, factor, gain, factor)
  p = k.shape[0] - factor
  return upfirdn2d(x, k, up=factor, pad=((p + 1) // 2 + factor - 1, p // 2))


def downsample_2d(x: torch.Tensor, k: Kernel = None, factor: int = 2, gain: float = 1.) -> torch.Tensor:
  """FIR downsampling `[N, C, H, W] -> [N, C, H//factor, W//factor]` (StyleGAN2 `downsample_2d`).

  The default kernel `[1] * factor` is average pooling.
  """
  k = _kernel(k, factor, gain, 1)
  p = k.shape[0] - factor
  return upfirdn2d(x, k, down=factor, pad=((p + 1) // 2, p // 2))


def naive_upsample_2d(x: torch.Tensor, factor: int = 2) -> torch.Tensor:
  """Nearest-neighbour upsampling `[N, C, H, W] -> [N, C, H*factor, W*factor]`."""
  n, c, h, w = x.shape
  x = x.reshape(n, c, h, 1, w, 1).expand(n, c, h, factor, w, factor)
  return x.reshape(n, c, h * factor, w * factor)


def naive_downsample_2d(x: torch.Tensor, factor: int = 2) -> torch.Tensor:
  """Average pooling over `factor x factor` blocks: `[N, C, H, W] -> [N, C, H//f, W//f]`."""
  n, c, h, w = x.shape
  return x.reshape(n, c, h // factor, factor, w // factor, factor).mean(dim=(3, 5))


def upsample_conv_2d(x: torch.Tensor, w: torch.Tensor, k: Kernel = None, factor: int = 2,
                     gain: float = 1.) -> torch.Tensor:
  """Fused `upsample_2d` followed by a 'same' convolution with weight `w [O, I, k, k]`.

  A transposed convolution with stride `factor` (weights flipped, in/out swapped) upsamples and
  convolves at once; the FIR filter is applied once afterwards.
  `[N, I, H, W] -> [N, O, H*factor, W*factor]`.
  """
  out_c, in_c, kh, kw = w.shape
  assert kh == kw, f'square conv kernels only, got {tuple(w.shape)}'
  k = _kernel(k, factor, gain, factor)
  p = (k.shape[0] - factor) - (kw - 1)
  wt = torch.flip(w, (2, 3)).transpose(0, 1)  # conv_transpose2d wants [I, O, k, k]
  x = F.conv_transpose2d(x, wt, stride=factor)
  return upfirdn2d(x, k, pad=((p + 1) // 2 + factor - 1, p // 2 + 1))


def conv_downsample_2d(x: torch.Tensor, w: torch.Tensor, k: Kernel = None, factor: int = 2,
                       gain: float = 1.) -> torch.Tensor:
  """Fused 'same' convolution with `w [O, I, k, k]` followed by `downsample_2d`.

  The FIR filter pads once, then a strided 'valid' convolution downsamples.
  `[N, I, H, W] -> [N, O, H//factor, W//factor]`.
  """
  _, _, kh, kw = w.shape
  assert kh == kw, f'square conv kernels only, got {tuple(w.shape)}'
  k = _kernel(k, factor, gain, 1)
  p = (k.shape[0] - factor) + (kw - 1)
  x = upfirdn2d(x, k, pad=((p + 1) // 2, p // 2))
  return F.conv2d(x, w, stride=factor)


class Conv2d(nn.Module):
  """Conv2d with optional fused FIR up- or down-sampling (StyleGAN2), as used by NCSN++.

  Parameters (names as in score_sde_pytorch): `weight [out_ch, in_ch, kernel, kernel]`, and
  `bias [out_ch]` when `use_bias`. The FIR kernel is a non-persistent buffer.
  """

  def __init__(self, in_ch: int, out_ch: int, kernel: int, up: bool = False, down: bool = False,
               resample_kernel: Sequence[float] = (1, 3, 3, 1), use_bias: bool = True,
               kernel_init=None):
    super().__init__()
    assert not (up and down), 'Conv2d cannot both upsample and downsample'
    assert kernel >= 1 and kernel % 2 == 1, f'odd kernel size required, got {kernel}'
    self.weight = nn.Parameter(torch.zeros(out_ch, in_ch, kernel, kernel))
    if kernel_init is not None:
      self.weight.data = kernel_init(self.weight.shape)
    self.bias = nn.Parameter(torch.zeros(out_ch)) if use_bias else None
    self.up, self.down, self.kernel = up, down, kernel
    self.register_buffer('fir_k', setup_kernel(resample_kernel, up=2 if up else 1), persistent=False)

  def forward(self, x: torch.Tensor) -> torch.Tensor:
    """`[N, in_ch, H, W] -> [N, out_ch, H', W']` with H' = 2H (up), H/2 (down) or H."""
    if self.up:
      x = upsample_conv_2d(x, self.weight, k=self.fir_k)
    elif self.down:
      x = conv_downsample_2d(x, self.weight, k=self.fir_k)
    else:
      x = F.conv2d(x, self.weight, padding=self.kernel // 2)
    if self.bias is not None:
      x = x + self.bias.reshape(1, -1, 1, 1)
    return x
