"""Building blocks of NCSN++ / DDPM++ (Song et al. 2021, ICLR, "Score-Based Generative Modeling
through SDEs", App. H): Fourier noise embedding, skip combiners, attention with skip rescaling,
FIR resampling, and the DDPM/BigGAN residual blocks.

Module and parameter names and their registration order are those of score_sde_pytorch's
`models/layerspp.py`; FIR kernels live in non-persistent buffers, so state dicts match exactly.
"""
from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import nn
from torch.nn import functional as F

from score_sde.models import up_or_down_sampling as updown
from score_sde.models.layers import NIN, ddpm_conv1x1, ddpm_conv3x3, default_init, dense
from score_sde.models.layers import spatial_self_attention

conv1x1 = ddpm_conv1x1
conv3x3 = ddpm_conv3x3
_SQRT2 = math.sqrt(2.)


def group_norm(ch: int) -> nn.GroupNorm:
  """GroupNorm with min(ch // 4, 32) groups, eps 1e-6 (NCSN++)."""
  return nn.GroupNorm(num_groups=min(ch // 4, 32), num_channels=ch, eps=1e-6)


def residual_sum(x: torch.Tensor, h: torch.Tensor, skip_rescale: bool) -> torch.Tensor:
  """Residual sum, divided by sqrt(2) with `skip_rescale` (keeps the variance, App. H)."""
  return (x + h) / _SQRT2 if skip_rescale else x + h


class GaussianFourierProjection(nn.Module):
  """Random Fourier features of a scalar (Tancik et al. 2020), used for log sigma in NCSN++.

  `W ~ N(0, scale^2)` of size `embedding_size`, frozen. `[B] -> [B, 2 * embedding_size]`:
  `[sin(2 pi x W), cos(2 pi x W)]`.
  """

  def __init__(self, embedding_size: int = 256, scale: float = 1.0):
    super().__init__()
    self.W = nn.Parameter(torch.randn(embedding_size) * scale, requires_grad=False)

  def forward(self, x: torch.Tensor) -> torch.Tensor:
    proj = x[:, None] * self.W[None, :] * (2 * math.pi)
    return torch.cat([torch.sin(proj), torch.cos(proj)], dim=-1)


class Combine(nn.Module):
  """Merge a pyramid branch `x [B, dim1, H, W]` into `y [B, dim2, H, W]` through a 1x1 conv:
  concatenation (`cat`, 2*dim2 channels) or sum (`sum`, dim2 channels)."""

  def __init__(self, dim1: int, dim2: int, method: str = 'cat'):
    super().__init__()
    if method not in ('cat', 'sum'):
      raise ValueError(f"Combine method must be 'cat' or 'sum', got '{method}'")
    self.Conv_0 = conv1x1(dim1, dim2)  # the reference's name
    self.method = method

  def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    h = self.Conv_0(x)
    return torch.cat([h, y], dim=1) if self.method == 'cat' else h + y


class AttnBlockpp(nn.Module):
  """DDPM self-attention with GroupNorm(min(C//4, 32)) and optional skip rescaling.

  `[B, C, H, W] -> [B, C, H, W]`.
  """

  def __init__(self, channels: int, skip_rescale: bool = False, init_scale: float = 0.):
    super().__init__()
    self.GroupNorm_0 = group_norm(channels)
    self.NIN_0 = NIN(channels, channels)
    self.NIN_1 = NIN(channels, channels)
    self.NIN_2 = NIN(channels, channels)
    self.NIN_3 = NIN(channels, channels, init_scale=init_scale)
    self.skip_rescale = skip_rescale

  def forward(self, x: torch.Tensor) -> torch.Tensor:
    h = self.GroupNorm_0(x)
    h = spatial_self_attention(self.NIN_0(h), self.NIN_1(h), self.NIN_2(h))
    return residual_sum(x, self.NIN_3(h), self.skip_rescale)


class Upsample(nn.Module):
  """x2 upsampling: nearest (+ 3x3 `Conv_0`), or FIR (+ fused 3x3 `Conv2d_0`).

  `[B, in_ch, H, W] -> [B, out_ch, 2H, 2W]`; without a conv, out_ch = in_ch.
  """

  def __init__(self, in_ch: int | None = None, out_ch: int | None = None, with_conv: bool = False,
               fir: bool = False, fir_kernel: Sequence[float] = (1, 3, 3, 1)):
    super().__init__()
    out_ch = out_ch or in_ch
    if with_conv and not fir:
      self.Conv_0 = conv3x3(in_ch, out_ch)
    elif with_conv:
      self.Conv2d_0 = updown.Conv2d(in_ch, out_ch, kernel=3, up=True, resample_kernel=fir_kernel,
                                    use_bias=True, kernel_init=default_init())
    elif fir:
      self.register_buffer('fir_k', updown.setup_kernel(fir_kernel, up=2), persistent=False)
    self.fir, self.with_conv, self.out_ch = fir, with_conv, out_ch

  def forward(self, x: torch.Tensor) -> torch.Tensor:
    if not self.fir:
      h = F.interpolate(x, scale_factor=2, mode='nearest')
      return self.Conv_0(h) if self.with_conv else h
    return self.Conv2d_0(x) if self.with_conv else updown.upsample_2d(x, self.fir_k)


class Downsample(nn.Module):
  """/2 downsampling: 'SAME'-padded stride-2 3x3 `Conv_0` or 2x2 average pool, or FIR (+ fused
  3x3 `Conv2d_0`). `[B, in_ch, H, W] -> [B, out_ch, H/2, W/2]`."""

  def __init__(self, in_ch: int | None = None, out_ch: int | None = None, with_conv: bool = False,
               fir: bool = False, fir_kernel: Sequence[float] = (1, 3, 3, 1)):
    super().__init__()
    out_ch = out_ch or in_ch
    if with_conv and not fir:
      self.Conv_0 = conv3x3(in_ch, out_ch, stride=2, padding=0)
    elif with_conv:
      self.Conv2d_0 = updown.Conv2d(in_ch, out_ch, kernel=3, down=True, resample_kernel=fir_kernel,
                                    use_bias=True, kernel_init=default_init())
    elif fir:
      self.register_buffer('fir_k', updown.setup_kernel(fir_kernel), persistent=False)
    self.fir, self.with_conv, self.out_ch = fir, with_conv, out_ch

  def forward(self, x: torch.Tensor) -> torch.Tensor:
    if not self.fir:
      x = F.pad(x, (0, 1, 0, 1))
      return self.Conv_0(x) if self.with_conv else F.avg_pool2d(x, 2, stride=2)
    return self.Conv2d_0(x) if self.with_conv else updown.downsample_2d(x, self.fir_k)


class ResnetBlockDDPMpp(nn.Module):
  """DDPM residual block with GroupNorm(min(C//4, 32)), `init_scale` on the last conv and
  optional skip rescaling (DDPM++). `x [B, in_ch, H, W]`, `temb [B, temb_dim]` ->
  `[B, out_ch, H, W]`."""

  def __init__(self, act: nn.Module, in_ch: int, out_ch: int | None = None,
               temb_dim: int | None = None, conv_shortcut: bool = False, dropout: float = 0.1,
               skip_rescale: bool = False, init_scale: float = 0.):
    super().__init__()
    out_ch = out_ch or in_ch
    self.GroupNorm_0 = group_norm(in_ch)
    self.Conv_0 = conv3x3(in_ch, out_ch)
    if temb_dim is not None:
      self.Dense_0 = dense(temb_dim, out_ch)
    self.GroupNorm_1 = group_norm(out_ch)
    self.Dropout_0 = nn.Dropout(dropout)
    self.Conv_1 = conv3x3(out_ch, out_ch, init_scale=init_scale)
    if in_ch != out_ch:
      if conv_shortcut:
        self.Conv_2 = conv3x3(in_ch, out_ch)
      else:
        self.NIN_0 = NIN(in_ch, out_ch)
    self.skip_rescale, self.act, self.out_ch = skip_rescale, act, out_ch
    self.conv_shortcut = conv_shortcut

  def forward(self, x: torch.Tensor, temb: torch.Tensor | None = None) -> torch.Tensor:
    h = self.Conv_0(self.act(self.GroupNorm_0(x)))
    if temb is not None:
      h = h + self.Dense_0(self.act(temb))[:, :, None, None]
    h = self.Conv_1(self.Dropout_0(self.act(self.GroupNorm_1(h))))
    if x.shape[1] != self.out_ch:
      x = self.Conv_2(x) if self.conv_shortcut else self.NIN_0(x)
    return residual_sum(x, h, self.skip_rescale)


class ResnetBlockBigGANpp(nn.Module):
  """BigGAN-style residual block (Brock et al. 2019) used by NCSN++/DDPM++: resampling (FIR or
  naive) happens inside the block, on both the residual and the skip path.

  `x [B, in_ch, H, W]`, `temb [B, temb_dim]` -> `[B, out_ch, H', W']`, H' = 2H (`up`),
  H/2 (`down`) or H. The skip gets a 1x1 `Conv_2` when the width or size changes.
  """

  def __init__(self, act: nn.Module, in_ch: int, out_ch: int | None = None,
               temb_dim: int | None = None, up: bool = False, down: bool = False,
               dropout: float = 0.1, fir: bool = False,
               fir_kernel: Sequence[float] = (1, 3, 3, 1), skip_rescale: bool = True,
               init_scale: float = 0.):
    super().__init__()
    out_ch = out_ch or in_ch
    self.GroupNorm_0 = group_norm(in_ch)
    self.up, self.down, self.fir = up, down, fir
    self.Conv_0 = conv3x3(in_ch, out_ch)
    if temb_dim is not None:
      self.Dense_0 = dense(temb_dim, out_ch)
    self.GroupNorm_1 = group_norm(out_ch)
    self.Dropout_0 = nn.Dropout(dropout)
    self.Conv_1 = conv3x3(out_ch, out_ch, init_scale=init_scale)
    if in_ch != out_ch or up or down:
      self.Conv_2 = conv1x1(in_ch, out_ch)
    self.skip_rescale, self.act, self.in_ch, self.out_ch = skip_rescale, act, in_ch, out_ch
    if fir and (up or down):
      self.register_buffer('fir_k', updown.setup_kernel(fir_kernel, up=2 if up else 1),
                           persistent=False)

  def _resample(self, t: torch.Tensor) -> torch.Tensor:
    if self.up:
      return updown.upsample_2d(t, self.fir_k) if self.fir else updown.naive_upsample_2d(t)
    if self.down:
      return updown.downsample_2d(t, self.fir_k) if self.fir else updown.naive_downsample_2d(t)
    return t

  def forward(self, x: torch.Tensor, temb: torch.Tensor | None = None) -> torch.Tensor:
    h = self._resample(self.act(self.GroupNorm_0(x)))
    x = self._resample(x)
    h = self.Conv_0(h)
    if temb is not None:
      h = h + self.Dense_0(self.act(temb))[:, :, None, None]
    h = self.Conv_1(self.Dropout_0(self.act(self.GroupNorm_1(h))))
    if self.in_ch != self.out_ch or self.up or self.down:
      x = self.Conv_2(x)
    return residual_sum(x, h, self.skip_rescale)
