"""Normalisation layers of NCSN / NCSNv2 (Song & Ermon 2019, "Generative Modeling by Estimating
Gradients of the Data Distribution", App. A; Song & Ermon 2020, "Improved Techniques
for Training Score-Based Generative Models").

InstanceNorm++ fixes the colour shift of instance normalisation by putting the (normalised)
channel means back: for channel k with spatial mean mu_k and std s_k, and m, v the mean and
(unbiased) variance of the mu_k over channels,

    z_k = gamma_k (x_k - mu_k) / s_k + beta_k + alpha_k (mu_k - m) / sqrt(v + 1e-5).

Parameter names follow score_sde_pytorch / ermongroup/ncsnv2 (`alpha`, `gamma`, `beta`, `embed`).
"""
from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F


def _normalised_means(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
  """Instance-normalised `x [B, C, H, W]` and the standardised channel means `[B, C]`."""
  means = x.mean(dim=(2, 3))
  m = means.mean(dim=-1, keepdim=True)
  v = means.var(dim=-1, keepdim=True)
  return F.instance_norm(x, eps=1e-5), (means - m) / torch.sqrt(v + 1e-5)


class InstanceNorm2dPlus(nn.Module):
  """InstanceNorm++ with learned `alpha`, `gamma` ~ N(1, 0.02) and `beta` = 0, each `[C]`.

  `[B, C, H, W] -> [B, C, H, W]`.
  """

  def __init__(self, num_features: int, bias: bool = True):
    super().__init__()
    self.num_features, self.bias = num_features, bias
    self.alpha = nn.Parameter(torch.zeros(num_features).normal_(1, 0.02))
    self.gamma = nn.Parameter(torch.zeros(num_features).normal_(1, 0.02))
    if bias:
      self.beta = nn.Parameter(torch.zeros(num_features))

  def forward(self, x: torch.Tensor) -> torch.Tensor:
    h, means = _normalised_means(x)
    h = h + means[..., None, None] * self.alpha[:, None, None]
    out = self.gamma[:, None, None] * h
    return out + self.beta[:, None, None] if self.bias else out


class ConditionalInstanceNorm2dPlus(nn.Module):
  """InstanceNorm++ whose (gamma, alpha, beta) are rows of an embedding indexed by a class /
  noise level `y [B]` (NCSN). `embed.weight [num_classes, 3C]` (or 2C without bias).

  `x [B, C, H, W]`, `y [B]` -> `[B, C, H, W]`.
  """

  def __init__(self, num_features: int, num_classes: int, bias: bool = True):
    super().__init__()
    self.num_features, self.bias = num_features, bias
    self.embed = nn.Embedding(num_classes, num_features * (3 if bias else 2))
    self.embed.weight.data[:, :2 * num_features].normal_(1, 0.02)
    self.embed.weight.data[:, 2 * num_features:].zero_()

  def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    h, means = _normalised_means(x)
    params = self.embed(y)[..., None, None]
    gamma, alpha = params[:, :self.num_features], params[:, self.num_features:2 * self.num_features]
    out = gamma * (h + means[..., None, None] * alpha)
    return out + params[:, 2 * self.num_features:] if self.bias else out


class VarianceNorm2d(nn.Module):
  """Divide each channel by its spatial std (no centring), times `alpha ~ N(1, 0.02)`."""

  def __init__(self, num_features: int, bias: bool = False):
    super().__init__()
    self.num_features = num_features
    self.alpha = nn.Parameter(torch.zeros(num_features).normal_(1, 0.02))

  def forward(self, x: torch.Tensor) -> torch.Tensor:
    h = x / torch.sqrt(x.var(dim=(2, 3), keepdim=True) + 1e-5)
    return self.alpha[:, None, None] * h


_NORMS = {
    'InstanceNorm': nn.InstanceNorm2d,
    'InstanceNorm++': InstanceNorm2dPlus,
    'VarianceNorm': VarianceNorm2d,
}


def get_normalization(name: str, conditional: bool = False):
  """The normalisation class named `name` (`model.normalization`).

  Unconditional: InstanceNorm | InstanceNorm++ | VarianceNorm, called as `norm(num_features)`.
  Conditional (NCSN): InstanceNorm++ only, called as `norm(num_features, num_classes)`.
  """
  if conditional:
    if name != 'InstanceNorm++':
      raise NotImplementedError(f'conditional {name} is not implemented')
    return ConditionalInstanceNorm2dPlus
  if name not in _NORMS:
    raise ValueError(f"unknown normalization '{name}'; choose one of {sorted(_NORMS)}")
  return _NORMS[name]
