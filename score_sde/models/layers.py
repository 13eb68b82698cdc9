"""Common layers of the score networks: DDPM initialisation, NIN, attention, resampling,
the DDPM residual block and the sinusoidal time embedding.

The DDPM pieces follow Ho et al. 2020 ("Denoising Diffusion Probabilistic Models", App. B) as
ported to PyTorch by score_sde_pytorch (Song et al. 2021, ICLR). Module and parameter names
(`GroupNorm_0`, `Conv_0`, `Dense_0`, `NIN_0.W`, ...) and their registration order are those of
score_sde_pytorch, so its checkpoints load with `strict=True`.
"""
from __future__ import annotations

import math
from typing import Callable, Sequence

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

_ACTIVATIONS = {
    'elu': nn.ELU,
    'relu': nn.ReLU,
    'lrelu': lambda: nn.LeakyReLU(negative_slope=0.2),
    'swish': nn.SiLU,
}


def get_act(nonlinearity: str) -> nn.Module:
  """The activation named `nonlinearity` (`model.nonlinearity`: elu | relu | lrelu | swish)."""
  name = nonlinearity.lower()
  if name not in _ACTIVATIONS:
    raise ValueError(f"unknown nonlinearity '{name}'; choose one of {sorted(_ACTIVATIONS)}")
  return _ACTIVATIONS[name]()


def variance_scaling(scale: float, mode: str, distribution: str, in_axis: int = 1,
                     out_axis: int = 0) -> Callable[[Sequence[int]], torch.Tensor]:
  """JAX's `variance_scaling` initialiser: Var[w] = scale / fan, fan by `mode`.

  `mode` is fan_in | fan_out | fan_avg; `distribution` is normal | uniform. The receptive field
  (all axes but `in_axis`, `out_axis`) multiplies both fans.
  """
  if mode not in ('fan_in', 'fan_out', 'fan_avg'):
    raise ValueError(f'invalid mode for variance scaling initializer: {mode}')
  if distribution not in ('normal', 'uniform'):
    raise ValueError(f'invalid distribution for variance scaling initializer: {distribution}')

  def init(shape, dtype=torch.float32, device=None) -> torch.Tensor:
    shape = tuple(shape)
    receptive = int(np.prod(shape)) / shape[in_axis] / shape[out_axis]
    fan_in, fan_out = shape[in_axis] * receptive, shape[out_axis] * receptive
    fan = {'fan_in': fan_in, 'fan_out': fan_out, 'fan_avg': (fan_in + fan_out) / 2}[mode]
    variance = scale / fan
    if distribution == 'normal':
      return torch.randn(*shape, dtype=dtype, device=device) * math.sqrt(variance)
    return (torch.rand(*shape, dtype=dtype, device=device) * 2. - 1.) * math.sqrt(3 * variance)

  return init


def default_init(scale: float = 1.):
  """DDPM's initialiser: uniform variance scaling, fan_avg (scale 0 is taken as 1e-10)."""
  return variance_scaling(1e-10 if scale == 0 else scale, 'fan_avg', 'uniform')


def dense(in_dim: int, out_dim: int) -> nn.Linear:
  """`nn.Linear` with `default_init` weights and zero bias."""
  lin = nn.Linear(in_dim, out_dim)
  lin.weight.data = default_init()(lin.weight.shape)
  nn.init.zeros_(lin.bias)
  return lin


def ddpm_conv1x1(in_planes: int, out_planes: int, stride: int = 1, bias: bool = True,
                 init_scale: float = 1., padding: int = 0) -> nn.Conv2d:
  """1x1 convolution with DDPM initialisation."""
  conv = nn.Conv2d(in_planes, out_planes, 1, stride=stride, padding=padding, bias=bias)
  conv.weight.data = default_init(init_scale)(conv.weight.shape)
  if bias:
    nn.init.zeros_(conv.bias)
  return conv


def ddpm_conv3x3(in_planes: int, out_planes: int, stride: int = 1, bias: bool = True,
                 dilation: int = 1, init_scale: float = 1., padding: int = 1) -> nn.Conv2d:
  """3x3 convolution with DDPM initialisation."""
  conv = nn.Conv2d(in_planes, out_planes, 3, stride=stride, padding=padding, dilation=dilation,
                   bias=bias)
  conv.weight.data = default_init(init_scale)(conv.weight.shape)
  if bias:
    nn.init.zeros_(conv.bias)
  return conv


def _scaled(conv: nn.Conv2d, init_scale: float) -> nn.Conv2d:
  init_scale = 1e-10 if init_scale == 0 else init_scale
  conv.weight.data *= init_scale
  if conv.bias is not None:
    conv.bias.data *= init_scale
  return conv


def ncsn_conv1x1(in_planes: int, out_planes: int, stride: int = 1, bias: bool = True,
                 dilation: int = 1, init_scale: float = 1., padding: int = 0) -> nn.Conv2d:
  """1x1 convolution with PyTorch's default initialisation (NCSNv1/v2)."""
  return _scaled(nn.Conv2d(in_planes, out_planes, 1, stride=stride, bias=bias, dilation=dilation,
                           padding=padding), init_scale)


def ncsn_conv3x3(in_planes: int, out_planes: int, stride: int = 1, bias: bool = True,
                 dilation: int = 1, init_scale: float = 1., padding: int | None = None) -> nn.Conv2d:
  """3x3 convolution with PyTorch's default initialisation (NCSNv1/v2).

  `padding` defaults to `dilation`, which keeps the size (as in ermongroup/ncsnv2; the
  score_sde_pytorch port pads by 1 and so breaks dilated blocks, its issue #48).
  """
  padding = dilation if padding is None else padding
  return _scaled(nn.Conv2d(in_planes, out_planes, 3, stride=stride, bias=bias, dilation=dilation,
                           padding=padding), init_scale)


def class_embedding(label_emb: nn.Embedding, y: torch.Tensor | None, batch: int,
                    device: torch.device) -> torch.Tensor:
  """`[B, D]` rows of `label_emb` for classes `y [B]`; `y=None` selects the last (null) row,
  the unconditional label of classifier-free guidance (Ho & Salimans 2022)."""
  if y is None:
    y = torch.full((batch,), label_emb.num_embeddings - 1, dtype=torch.long, device=device)
  return label_emb(y.long())


def get_timestep_embedding(timesteps: torch.Tensor, embedding_dim: int,
                           max_positions: int = 10000) -> torch.Tensor:
  """Sinusoidal embedding (Vaswani et al. 2017) of `[B]` labels as in DDPM: `[B, embedding_dim]`.

  `[sin(t w_k), cos(t w_k)]`, w_k = max_positions^(-k/(half-1)), k < half = embedding_dim // 2;
  zero-padded when `embedding_dim` is odd.
  """
  assert timesteps.ndim == 1, f'timesteps must be [B], got {tuple(timesteps.shape)}'
  half = embedding_dim // 2
  step = math.log(max_positions) / (half - 1)
  freqs = torch.exp(torch.arange(half, dtype=torch.float32, device=timesteps.device) * -step)
  args = timesteps.float()[:, None] * freqs[None, :]
  emb = torch.cat([torch.sin(args), torch.cos(args)], dim=1)
  if embedding_dim % 2 == 1:
    emb = F.pad(emb, (0, 1))
  return emb


class NIN(nn.Module):
  """Network-in-network: a per-pixel dense layer, `[B, in_dim, H, W] -> [B, num_units, H, W]`.

  Parameters `W [in_dim, num_units]` and `b [num_units]` as in DDPM. Computed as a 1x1
  convolution (same maths as the reference's tensordot, friendlier to channels_last).
  """

  def __init__(self, in_dim: int, num_units: int, init_scale: float = 0.1):
    super().__init__()
    self.W = nn.Parameter(default_init(scale=init_scale)((in_dim, num_units)))
    self.b = nn.Parameter(torch.zeros(num_units))

  def forward(self, x: torch.Tensor) -> torch.Tensor:
    return F.conv2d(x, self.W.t()[:, :, None, None], self.b)


def spatial_self_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
  """Single-head attention over the H*W positions of `[B, C, H, W]` maps, scale C^-1/2."""
  b, c, h, w = q.shape
  q, k, v = (t.reshape(b, c, h * w).transpose(1, 2) for t in (q, k, v))
  out = F.scaled_dot_product_attention(q, k, v)
  return out.transpose(1, 2).reshape(b, c, h, w)


class AttnBlock(nn.Module):
  """DDPM self-attention block: `x + NIN_3(attn(NIN_0(n), NIN_1(n), NIN_2(n)))`, n = GN(x)."""

  def __init__(self, channels: int):
    super().__init__()
    self.GroupNorm_0 = nn.GroupNorm(num_groups=32, num_channels=channels, eps=1e-6)
    self.NIN_0 = NIN(channels, channels)
    self.NIN_1 = NIN(channels, channels)
    self.NIN_2 = NIN(channels, channels)
    self.NIN_3 = NIN(channels, channels, init_scale=0.)

  def forward(self, x: torch.Tensor) -> torch.Tensor:
    """`[B, C, H, W] -> [B, C, H, W]`."""
    h = self.GroupNorm_0(x)
    h = spatial_self_attention(self.NIN_0(h), self.NIN_1(h), self.NIN_2(h))
    return x + self.NIN_3(h)


class Upsample(nn.Module):
  """DDPM upsampling: nearest x2, then an optional 3x3 conv. `[B, C, H, W] -> [B, C, 2H, 2W]`."""

  def __init__(self, channels: int, with_conv: bool = False):
    super().__init__()
    if with_conv:
      self.Conv_0 = ddpm_conv3x3(channels, channels)
    self.with_conv = with_conv

  def forward(self, x: torch.Tensor) -> torch.Tensor:
    h = F.interpolate(x, scale_factor=2, mode='nearest')
    return self.Conv_0(h) if self.with_conv else h


class Downsample(nn.Module):
  """DDPM downsampling, TF 'SAME' style: pad right/bottom by 1, then a stride-2 3x3 conv (or a
  2x2 average pool). `[B, C, H, W] -> [B, C, H/2, W/2]`."""

  def __init__(self, channels: int, with_conv: bool = False):
    super().__init__()
    if with_conv:
      self.Conv_0 = ddpm_conv3x3(channels, channels, stride=2, padding=0)
    self.with_conv = with_conv

  def forward(self, x: torch.Tensor) -> torch.Tensor:
    x = F.pad(x, (0, 1, 0, 1))
    return self.Conv_0(x) if self.with_conv else F.avg_pool2d(x, 2, stride=2)


class ResnetBlockDDPM(nn.Module):
  """DDPM residual block (Ho et al. 2020):
  `h = Conv_1(Drop(act(GN_1(Conv_0(act(GN_0(x))) + Dense_0(act(temb)))))); out = skip(x) + h`.

  The skip is `NIN_0` (or `Conv_2` with `conv_shortcut`) when the width changes.
  `x [B, in_ch, H, W]`, `temb [B, temb_dim]` -> `[B, out_ch, H, W]`.
  """

  def __init__(self, act: nn.Module, in_ch: int, out_ch: int | None = None,
               temb_dim: int | None = None, conv_shortcut: bool = False, dropout: float = 0.1):
    super().__init__()
    out_ch = out_ch or in_ch
    # registration order = score_sde_pytorch's parameter order (its EMA is a positional list)
    self.act = act
    self.GroupNorm_0 = nn.GroupNorm(num_groups=32, num_channels=in_ch, eps=1e-6)
    self.Conv_0 = ddpm_conv3x3(in_ch, out_ch)
    if temb_dim is not None:
      self.Dense_0 = dense(temb_dim, out_ch)
    self.GroupNorm_1 = nn.GroupNorm(num_groups=32, num_channels=out_ch, eps=1e-6)
    self.Dropout_0 = nn.Dropout(dropout)
    self.Conv_1 = ddpm_conv3x3(out_ch, out_ch, init_scale=0.)
    if in_ch != out_ch:
      if conv_shortcut:
        self.Conv_2 = ddpm_conv3x3(in_ch, out_ch)
      else:
        self.NIN_0 = NIN(in_ch, out_ch)
    self.in_ch, self.out_ch, self.conv_shortcut = in_ch, out_ch, conv_shortcut

  def forward(self, x: torch.Tensor, temb: torch.Tensor | None = None) -> torch.Tensor:
    h = self.Conv_0(self.act(self.GroupNorm_0(x)))
    if temb is not None:
      h = h + self.Dense_0(self.act(temb))[:, :, None, None]
    h = self.Conv_1(self.Dropout_0(self.act(self.GroupNorm_1(h))))
    if self.in_ch != self.out_ch:
      x = self.Conv_2(x) if self.conv_shortcut else self.NIN_0(x)
    return x + h
