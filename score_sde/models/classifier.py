"""Time-dependent noisy classifiers p_phi(y | x_t, t) for classifier guidance
(Song et al. 2021, Sec. 5 / App. I.1; Dhariwal & Nichol 2021, Sec. 4): a conv encoder for
images and an MLP for flat toy data, both conditioned on score_sde's time label 999 t.
Training and guidance use them through `score_sde.training.classifier`.
"""
from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from score_sde.maths.conventions import time_label
from score_sde.models.embeddings import timestep_embedding

TIME_LABEL = 't999'  # the classifier's time conditioning (recorded in its checkpoints)


def _time_label(t: torch.Tensor) -> torch.Tensor:
  """The classifier's time conditioning: score_sde's continuous label 999 t."""
  return time_label(TIME_LABEL, None, t)


class _ResBlock(nn.Module):
  """GroupNorm-SiLU-conv x 2 with the time embedding added in between; `[B, C, H, W]`."""

  def __init__(self, ch: int, emb_dim: int):
    super().__init__()
    self.norm1, self.conv1 = nn.GroupNorm(min(8, ch), ch), nn.Conv2d(ch, ch, 3, padding=1)
    self.emb = nn.Linear(emb_dim, ch)
    self.norm2, self.conv2 = nn.GroupNorm(min(8, ch), ch), nn.Conv2d(ch, ch, 3, padding=1)

  def forward(self, x, emb):
    h = self.conv1(F.silu(self.norm1(x))) + self.emb(emb)[:, :, None, None]
    return x + self.conv2(F.silu(self.norm2(h)))


class NoisyClassifier(nn.Module):
  """Conv encoder: stem, residual blocks with time embedding, stride-2 downsampling between
  levels, global average pool, linear head. `forward(x [B, C, H, W], t [B]) -> logits [B, K]`."""

  def __init__(self, in_channels: int = 3, num_classes: int = 10, ch: int = 32,
               levels: int = 3, emb_dim: int = 128):
    super().__init__()
    self.emb_dim = emb_dim
    self.time_mlp = nn.Sequential(nn.Linear(emb_dim, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim))
    self.stem = nn.Conv2d(in_channels, ch, 3, padding=1)
    self.blocks = nn.ModuleList(_ResBlock(ch, emb_dim) for _ in range(levels))
    self.downs = nn.ModuleList(nn.Conv2d(ch, ch, 3, stride=2, padding=1) for _ in range(levels - 1))
    self.head = nn.Sequential(nn.GroupNorm(min(8, ch), ch), nn.SiLU())
    self.out = nn.Linear(ch, num_classes)

  def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    emb = self.time_mlp(timestep_embedding(_time_label(t), self.emb_dim))
    h = self.stem(x)
    for i, block in enumerate(self.blocks):
      h = block(h, emb)
      if i < len(self.downs):
        h = self.downs[i](h)
    return self.out(self.head(h).mean(dim=(2, 3)))


class MLPClassifier(nn.Module):
  """Noisy classifier for flat toy data: `forward(x [B, D], t [B]) -> logits [B, K]`."""

  def __init__(self, dim: int = 2, num_classes: int = 3, hidden: int = 128, depth: int = 3,
               emb_dim: int = 32):
    super().__init__()
    self.emb_dim = emb_dim
    self.inp = nn.Linear(dim + emb_dim, hidden)
    self.hidden = nn.ModuleList(nn.Linear(hidden, hidden) for _ in range(depth - 1))
    self.out = nn.Linear(hidden, num_classes)

  def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    emb = timestep_embedding(_time_label(t), self.emb_dim).to(x)
    h = F.silu(self.inp(torch.cat([x.reshape(x.shape[0], -1), emb], dim=1)))
    for layer in self.hidden:
      h = F.silu(layer(h))
    return self.out(h)


__all__ = ['NoisyClassifier', 'MLPClassifier', 'TIME_LABEL']
