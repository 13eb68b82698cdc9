"""RefineNet blocks of NCSN / NCSNv2 (Song & Ermon 2019, App. A; Song & Ermon 2020, App. B),
after Lin et al. 2017 ("RefineNet"): residual conv units (RCU), multi-resolution fusion (MSF),
chained residual pooling (CRP), and the pre-activation residual block of the encoder.

Names (`adapt_convs`, `msf`, `crp`, `output_convs`, `{i}_{j}_conv`, `conv1`, `normalize2`, ...)
and registration order follow score_sde_pytorch's `models/layers.py` (= ermongroup/ncsnv2).
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn
from torch.nn import functional as F

from score_sde.models.layers import ncsn_conv1x1, ncsn_conv3x3


class CRPBlock(nn.Module):
  """Chained residual pooling: `x = act(x)`, then n_stages times `path = conv(pool5x5(path));
  x = x + path`. `[B, F, H, W] -> [B, F, H, W]`."""

  def __init__(self, features: int, n_stages: int, act: nn.Module = nn.ReLU(), maxpool: bool = True):
    super().__init__()
    self.convs = nn.ModuleList(ncsn_conv3x3(features, features, bias=False) for _ in range(n_stages))
    pool = nn.MaxPool2d if maxpool else nn.AvgPool2d
    self.pool = pool(kernel_size=5, stride=1, padding=2)
    self.act = act

  def forward(self, x: torch.Tensor) -> torch.Tensor:
    x = path = self.act(x)
    for conv in self.convs:
      path = conv(self.pool(path))
      x = path + x
    return x


class RCUBlock(nn.Module):
  """Residual conv unit: n_blocks times `x = x + conv(act(...conv(act(x))))` with n_stages
  bias-free 3x3 convs `{i}_{j}_conv`. `[B, F, H, W] -> [B, F, H, W]`."""

  def __init__(self, features: int, n_blocks: int, n_stages: int, act: nn.Module = nn.ReLU()):
    super().__init__()
    for i in range(n_blocks):
      for j in range(n_stages):
        setattr(self, f'{i + 1}_{j + 1}_conv', ncsn_conv3x3(features, features, bias=False))
    self.n_blocks, self.n_stages, self.act = n_blocks, n_stages, act

  def forward(self, x: torch.Tensor) -> torch.Tensor:
    for i in range(self.n_blocks):
      residual = x
      for j in range(self.n_stages):
        x = getattr(self, f'{i + 1}_{j + 1}_conv')(self.act(x))
      x = x + residual
    return x


class MSFBlock(nn.Module):
  """Multi-resolution fusion: 3x3 conv each input to `features` channels, resize bilinearly
  (align_corners) to `shape`, and sum. `[B, in_planes[i], H_i, W_i]` -> `[B, features, *shape]`."""

  def __init__(self, in_planes: Sequence[int], features: int):
    super().__init__()
    self.convs = nn.ModuleList(ncsn_conv3x3(c, features, bias=True) for c in in_planes)
    self.features = features

  def forward(self, xs: Sequence[torch.Tensor], shape) -> torch.Tensor:
    out = 0
    for conv, x in zip(self.convs, xs):
      out = out + F.interpolate(conv(x), size=tuple(shape), mode='bilinear', align_corners=True)
    return out


class RefineBlock(nn.Module):
  """RefineNet block: RCU on each input, MSF (unless `start`), CRP, output RCU (3 units at the
  `end`, else 1). Inputs `[B, in_planes[i], H_i, W_i]` -> `[B, features, *output_shape]`."""

  def __init__(self, in_planes: Sequence[int], features: int, act: nn.Module = nn.ReLU(),
               start: bool = False, end: bool = False, maxpool: bool = True):
    super().__init__()
    self.n_blocks = len(in_planes)
    self.adapt_convs = nn.ModuleList(RCUBlock(c, 2, 2, act) for c in in_planes)
    self.output_convs = RCUBlock(features, 3 if end else 1, 2, act)
    if not start:
      self.msf = MSFBlock(in_planes, features)
    self.crp = CRPBlock(features, 2, act, maxpool=maxpool)

  def forward(self, xs: Sequence[torch.Tensor], output_shape) -> torch.Tensor:
    hs = [adapt(x) for adapt, x in zip(self.adapt_convs, xs)]
    h = self.msf(hs, output_shape) if self.n_blocks > 1 else hs[0]
    return self.output_convs(self.crp(h))


class ConvMeanPool(nn.Module):
  """Conv ('same') then 2x2 mean pooling: `[B, I, H, W] -> [B, O, H/2, W/2]`. With
  `adjust_padding` (28px images) the input is first padded by one on the top/left."""

  def __init__(self, input_dim: int, output_dim: int, kernel_size: int = 3, biases: bool = True,
               adjust_padding: bool = False):
    super().__init__()
    conv = nn.Conv2d(input_dim, output_dim, kernel_size, padding=kernel_size // 2, bias=biases)
    self.conv = nn.Sequential(nn.ZeroPad2d((1, 0, 1, 0)), conv) if adjust_padding else conv

  def forward(self, x: torch.Tensor) -> torch.Tensor:
    out = self.conv(x)
    return (out[:, :, ::2, ::2] + out[:, :, 1::2, ::2] + out[:, :, ::2, 1::2]
            + out[:, :, 1::2, 1::2]) / 4.


class ResidualBlock(nn.Module):
  """Pre-activation residual block of the NCSNv2 encoder:
  `out = skip(x) + conv2(act(norm2(conv1(act(norm1(x))))))`.

  `resample='down'` halves H, W with mean pooling, or, when `dilation > 1`, keeps the size and
  uses dilated convs instead (RefineNet-style). `[B, input_dim, H, W] -> [B, output_dim, H', W']`.
  """

  def __init__(self, input_dim: int, output_dim: int, resample: str | None = None,
               act: nn.Module = nn.ELU(), normalization=nn.InstanceNorm2d,
               adjust_padding: bool = False, dilation: int = 1):
    super().__init__()
    if resample not in (None, 'down'):
      raise ValueError(f"resample must be None or 'down', got {resample!r}")
    self.non_linearity, self.input_dim, self.output_dim = act, input_dim, output_dim
    self.resample = resample
    mid = input_dim if resample == 'down' else output_dim
    self.conv1 = ncsn_conv3x3(input_dim, mid, dilation=dilation)
    self.normalize2 = normalization(mid)
    pooled = resample == 'down' and dilation == 1
    if pooled:
      self.conv2 = ConvMeanPool(input_dim, output_dim, 3, adjust_padding=adjust_padding)
    else:
      self.conv2 = ncsn_conv3x3(mid, output_dim, dilation=dilation)
    if output_dim != input_dim or resample is not None:
      if pooled:
        self.shortcut = ConvMeanPool(input_dim, output_dim, 1, adjust_padding=adjust_padding)
      elif dilation > 1:
        self.shortcut = ncsn_conv3x3(input_dim, output_dim, dilation=dilation)
      else:
        self.shortcut = ncsn_conv1x1(input_dim, output_dim)
    self.normalize1 = normalization(input_dim)

  def forward(self, x: torch.Tensor) -> torch.Tensor:
    out = self.conv1(self.non_linearity(self.normalize1(x)))
    out = self.conv2(self.non_linearity(self.normalize2(out)))
    skip = x if self.output_dim == self.input_dim and self.resample is None else self.shortcut(x)
    return skip + out
