"""Time and class embeddings shared by the small networks."""
from __future__ import annotations

import math

import torch
from torch import nn


def timestep_embedding(labels: torch.Tensor, dim: int, max_positions: int = 10000) -> torch.Tensor:
  """Sinusoidal embedding of a `[B]` float label (Vaswani et al. 2017; Ho et al. 2020).

  Returns `[B, dim]`: [sin(l w_k), cos(l w_k)] with w_k = max_positions^(-k / (dim/2 - 1)).
  """
  half = dim // 2
  freqs = torch.exp(-math.log(max_positions) *
                    torch.arange(half, device=labels.device, dtype=torch.float32) / max(half - 1, 1))
  args = labels.float()[:, None] * freqs[None]
  emb = torch.cat([torch.sin(args), torch.cos(args)], dim=1)
  return nn.functional.pad(emb, (0, dim % 2))


class TimeClassEmbedding(nn.Module):
  """label -> sinusoid -> MLP, plus an optional learned class embedding.

  With `num_classes > 0` the table has `num_classes + 1` rows; row `num_classes` is the null
  label used for unconditional evaluation (classifier-free guidance, Ho & Salimans 2022).
  `y=None` means every sample is unconditional.
  """

  def __init__(self, dim: int, out_dim: int, num_classes: int = 0):
    super().__init__()
    self.dim, self.num_classes = dim, num_classes
    self.mlp = nn.Sequential(nn.Linear(dim, out_dim), nn.SiLU(), nn.Linear(out_dim, out_dim))
    self.label_emb = nn.Embedding(num_classes + 1, out_dim) if num_classes > 0 else None

  def forward(self, labels: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
    """`[B]` time labels (and `[B]` int classes) -> `[B, out_dim]`."""
    emb = self.mlp(timestep_embedding(labels, self.dim))
    if self.label_emb is not None:
      if y is None:
        y = torch.full(labels.shape, self.num_classes, device=labels.device, dtype=torch.long)
      emb = emb + self.label_emb(y.long())
    return emb
