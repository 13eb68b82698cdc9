"""A residual MLP score network for low-dimensional (toy) data."""
from __future__ import annotations

import torch
from torch import nn

from score_sde.maths.conventions import output_channels
from score_sde.models.embeddings import TimeClassEmbedding


class ResidualBlock(nn.Module):
  """h + W2 SiLU(W1 SiLU(LayerNorm(h) + temb)): a pre-norm residual MLP block."""

  def __init__(self, width: int):
    super().__init__()
    self.norm = nn.LayerNorm(width)
    self.fc1, self.fc2 = nn.Linear(width, width), nn.Linear(width, width)
    self.act = nn.SiLU()

  def forward(self, h, temb):
    return h + self.fc2(self.act(self.fc1(self.act(self.norm(h) + temb))))


class MLP(nn.Module):
  """Time-conditioned residual MLP: `net(x [B, D], labels [B], y=None) -> [B, D]`.

  Args:
    dim: data dimension D.
    hidden: width of the hidden layers.
    depth: number of residual blocks.
    num_classes: > 0 adds a class embedding (with a null row) for conditional models.
    out_dim: output width (default dim; 2 dim for learned variances).
  """

  def __init__(self, dim: int = 2, hidden: int = 256, depth: int = 3, num_classes: int = 0,
               out_dim: int | None = None):
    super().__init__()
    self.embed = TimeClassEmbedding(hidden, hidden, num_classes)
    self.inp = nn.Linear(dim, hidden)
    self.blocks = nn.ModuleList([ResidualBlock(hidden) for _ in range(depth)])
    self.out = nn.Sequential(nn.LayerNorm(hidden), nn.SiLU(), nn.Linear(hidden, out_dim or dim))

  @classmethod
  def from_settings(cls, m, data) -> 'MLP':
    """The MLP of model hyper-parameters `m` (`config.model`) for data `data` (`config.data`)."""
    num_classes = data.num_classes if m.class_conditional else 0
    return cls(data.num_channels, m.hidden, m.depth, num_classes,
               output_channels(data.num_channels, m.learn_sigma))

  def forward(self, x: torch.Tensor, labels: torch.Tensor, y: torch.Tensor | None = None):
    if x.ndim != 2:
      raise ValueError(f'MLP expects data of shape [B, D], got {tuple(x.shape)}')
    temb = self.embed(labels, y)
    h = self.inp(x)
    for block in self.blocks:
      h = block(h, temb)
    return self.out(h)
