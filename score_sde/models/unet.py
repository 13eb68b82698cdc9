"""A small time-conditioned U-Net for small images (e.g. 16x16 digits), in the spirit of
the DDPM network (Ho et al. 2020) at a size that trains on a CPU in minutes."""
from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from score_sde.maths.conventions import output_channels
from score_sde.models.embeddings import TimeClassEmbedding


def _norm(ch: int) -> nn.GroupNorm:
  return nn.GroupNorm(min(8, ch), ch)


class ResBlock(nn.Module):
  """GroupNorm-SiLU-Conv, + time embedding, GroupNorm-SiLU-Dropout-Conv, with a skip."""

  def __init__(self, cin: int, cout: int, temb_dim: int, dropout: float):
    super().__init__()
    self.norm1, self.conv1 = _norm(cin), nn.Conv2d(cin, cout, 3, padding=1)
    self.temb = nn.Linear(temb_dim, cout)
    self.norm2, self.conv2 = _norm(cout), nn.Conv2d(cout, cout, 3, padding=1)
    self.dropout = nn.Dropout(dropout)
    self.skip = nn.Conv2d(cin, cout, 1) if cin != cout else nn.Identity()

  def forward(self, x, temb):
    h = self.conv1(F.silu(self.norm1(x)))
    h = h + self.temb(F.silu(temb))[:, :, None, None]
    h = self.conv2(self.dropout(F.silu(self.norm2(h))))
    return self.skip(x) + h


class SelfAttention(nn.Module):
  """Single-head self-attention over the H*W positions, with a residual connection."""

  def __init__(self, ch: int):
    super().__init__()
    self.norm, self.qkv, self.proj = _norm(ch), nn.Conv2d(ch, 3 * ch, 1), nn.Conv2d(ch, ch, 1)

  def forward(self, x):
    b, c, h, w = x.shape
    q, k, v = self.qkv(self.norm(x)).reshape(b, 3, c, h * w).transpose(-1, -2).unbind(1)
    out = F.scaled_dot_product_attention(q, k, v)
    return x + self.proj(out.transpose(-1, -2).reshape(b, c, h, w))


class SmallUNet(nn.Module):
  """`net(x [B, C, H, W], labels [B], y=None) -> [B, C, H, W]`; H, W divisible by 2^(levels-1).

  Args:
    channels: data channels C.
    nf: base width; level i has nf * ch_mult[i] channels.
    ch_mult: width multipliers, one per resolution.
    attn_resolutions: resolutions (in pixels) that get a self-attention block.
    image_size: input resolution (used to place attention).
    dropout: dropout in the residual blocks.
    num_classes: > 0 adds a class embedding with a null row.
    out_channels: output channels (default C; 2C for learned variances).
  """

  def __init__(self, channels=1, nf=32, ch_mult=(1, 2, 2), attn_resolutions=(8,),
               image_size=16, dropout=0.0, num_classes=0, out_channels=None):
    super().__init__()
    temb_dim = 4 * nf
    self.embed = TimeClassEmbedding(nf, temb_dim, num_classes)
    self.inp = nn.Conv2d(channels, nf, 3, padding=1)
    widths = [nf * m for m in ch_mult]
    self.down, self.up = nn.ModuleList(), nn.ModuleList()
    res, cin = image_size, nf
    for i, w in enumerate(widths):
      attn = SelfAttention(w) if res in attn_resolutions else nn.Identity()
      pool = nn.Conv2d(w, w, 3, stride=2, padding=1) if i < len(widths) - 1 else nn.Identity()
      self.down.append(nn.ModuleList([ResBlock(cin, w, temb_dim, dropout), attn, pool]))
      cin, res = w, res // 2 if i < len(widths) - 1 else res
    self.mid1 = ResBlock(cin, cin, temb_dim, dropout)
    self.mid_attn = SelfAttention(cin)
    self.mid2 = ResBlock(cin, cin, temb_dim, dropout)
    for i, w in reversed(list(enumerate(widths))):
      attn = SelfAttention(w) if res in attn_resolutions else nn.Identity()
      upsample = nn.Upsample(scale_factor=2, mode='nearest') if i > 0 else nn.Identity()
      self.up.append(nn.ModuleList([ResBlock(cin + w, w, temb_dim, dropout), attn, upsample]))
      cin, res = w, res * 2 if i > 0 else res
    self.out = nn.Sequential(_norm(cin), nn.SiLU(), nn.Conv2d(cin, out_channels or channels, 3, padding=1))
    nn.init.zeros_(self.out[-1].weight)
    nn.init.zeros_(self.out[-1].bias)

  @classmethod
  def from_settings(cls, m, d) -> 'SmallUNet':
    """The U-Net of model hyper-parameters `m` (`config.model`) for data `d` (`config.data`)."""
    return cls(d.num_channels, m.nf, tuple(m.ch_mult), tuple(m.attn_resolutions), d.image_size,
               m.dropout, d.num_classes if m.class_conditional else 0,
               output_channels(d.num_channels, m.learn_sigma))

  def forward(self, x: torch.Tensor, labels: torch.Tensor, y: torch.Tensor | None = None):
    if x.ndim != 4:
      raise ValueError(f'SmallUNet expects images [B, C, H, W], got {tuple(x.shape)}')
    temb = self.embed(labels, y)
    h = self.inp(x)
    skips = []
    for block, attn, pool in self.down:
      h = attn(block(h, temb))
      skips.append(h)
      h = pool(h)
    h = self.mid2(self.mid_attn(self.mid1(h, temb)), temb)
    for block, attn, upsample in self.up:
      h = upsample(attn(block(torch.cat([h, skips.pop()], dim=1), temb)))
    return self.out(h)
