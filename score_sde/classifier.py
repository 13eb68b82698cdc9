"""Time-dependent noisy classifiers p_phi(y | x_t, t) for classifier guidance
(Song et al. 2021, Sec. 5 / App. I.1; Dhariwal & Nichol 2021, Sec. 4).

The classifier sees x_t ~ p_0t(x_t | x_0) = N(alpha(t) x_0, sigma(t)^2 I) with t ~ U(eps, T)
and the time label 999 t (the score_sde convention), and is trained by cross-entropy.
"""
from __future__ import annotations

import logging

import torch
from torch import nn
from torch.nn import functional as F

from score_sde.conventions import time_label
from score_sde.models.embeddings import timestep_embedding
from score_sde.sdes import SDE
from score_sde.utils import randn_like


TIME_LABEL = 't999'  # the classifier's time conditioning (recorded in its checkpoints)


def _time_label(t: torch.Tensor) -> torch.Tensor:
  """The classifier's time conditioning: score_sde's continuous label 999 t."""
  return time_label(TIME_LABEL, None, t)


def classifier_metadata(sde: SDE) -> dict:
  """What a classifier checkpoint records: the SDE it was trained with (`sde.describe()`), the
  network kind and the time label, so that guiding a model of another SDE fails loudly."""
  return {'sde': sde.describe(), 'network': 'noisy_classifier', 'time_label': TIME_LABEL}


def check_classifier_metadata(meta: dict | None, sde: SDE, where: str) -> None:
  """A one-line CheckpointError when classifier checkpoint metadata `meta` records another SDE
  (name or parameters; N does not matter, t is continuous) or time label than `sde` / this
  code's; a warning only for older files that record no SDE."""
  from score_sde.checkpoint import CheckpointError
  if not isinstance(meta, dict) or not isinstance(meta.get('sde'), dict):
    logging.warning('%s does not record the SDE it was trained with (an older file): make sure it '
                    'is %s', where, sde.name)
    return
  strip = lambda d: {k: v for k, v in d.items() if k != 'N'}
  have, want = strip(meta['sde']), strip(sde.describe())
  if have != want:
    fmt = lambda d: d.get('name', '?') + '(' + ', '.join(f'{k}={d[k]}' for k in d if k != 'name') + ')'
    raise CheckpointError(f'{where} holds a classifier trained with the SDE {fmt(have)} but the model '
                          f'uses {fmt(want)}; train a classifier with the same training.sde and model '
                          'parameters')
  if meta.get('time_label', TIME_LABEL) != TIME_LABEL:
    raise CheckpointError(f"{where} holds a classifier with time label {meta['time_label']!r}; this "
                          f'code conditions classifiers on {TIME_LABEL!r}')


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


def perturb(sde: SDE, x0: torch.Tensor, t: torch.Tensor, generator=None, z=None) -> torch.Tensor:
  """x_t = alpha(t) x0 + sigma(t) z, shaped like x0 (z drawn from `generator` unless given)."""
  z = randn_like(x0, generator) if z is None else z.to(x0)
  return sde.perturb(x0, t, z)


def _uniform_t(sde: SDE, x0: torch.Tensor, generator, eps: float) -> torch.Tensor:
  dev = generator.device if generator is not None else x0.device
  u = torch.rand(x0.shape[0], generator=generator, device=dev).to(x0.device, x0.dtype)
  return u * (sde.T - eps) + eps


def classifier_loss(classifier: nn.Module, sde: SDE, x0: torch.Tensor, y: torch.Tensor,
                    generator=None, eps: float = 1e-5, noise=None) -> torch.Tensor:
  """Mean cross-entropy of `classifier(x_t, t)` against labels `y` `[B]` with
  t ~ U(eps, T) and x_t ~ p_0t(x_t | x0); x0 is `[B, ...]`. Returns a scalar.
  `noise=(u [B], z [B, ...])` (u ~ U(0, 1), z ~ N(0, I)) replaces the draws from `generator`."""
  if noise is None:
    t = _uniform_t(sde, x0, generator, eps)
    xt = perturb(sde, x0, t, generator)
  else:
    t = noise[0].to(x0) * (sde.T - eps) + eps
    xt = perturb(sde, x0, t, z=noise[1])
  return F.cross_entropy(classifier(xt, t), y.long())


def classifier_log_prob_fn(classifier: nn.Module):
  """`log_prob_fn(x [B, ...], t [B], y [B]) -> [B]` = log p_phi(y | x_t, t), for
  `score_sde.guidance.classifier_guidance`."""

  def log_prob_fn(x: torch.Tensor, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    log_probs = F.log_softmax(classifier(x, t), dim=-1)
    return log_probs.gather(1, y.long().reshape(-1, 1)).squeeze(1)

  return log_prob_fn


@torch.no_grad()
def accuracy_by_noise_level(classifier: nn.Module, sde: SDE, x0: torch.Tensor, y: torch.Tensor,
                            bins: int = 5, generator=None, eps: float = 1e-5) -> torch.Tensor:
  """Accuracy `[bins]` on x_t for t in `bins` equal sub-intervals of [eps, T] (one t per
  sample, drawn uniformly within its bin; bins ordered by increasing t)."""
  edges = torch.linspace(eps, sde.T, bins + 1).tolist()
  acc = []
  for lo, hi in zip(edges[:-1], edges[1:]):
    t = lo + (hi - lo) * (_uniform_t(sde, x0, generator, 0.0) / sde.T)
    pred = classifier(perturb(sde, x0, t, generator), t).argmax(-1)
    acc.append((pred == y.to(pred.device)).float().mean())
  return torch.stack(acc)


def create_classifier(config, flat: bool) -> nn.Module:
  """The noisy classifier for `config.data`: an MLP for flat (toy) data, else the conv encoder;
  sizes from `config.classifier`."""
  c, d = config.classifier, config.data
  if flat:
    return MLPClassifier(d.num_channels, d.num_classes, hidden=c.hidden, depth=c.depth)
  return NoisyClassifier(d.num_channels, d.num_classes, ch=c.ch, levels=c.levels)


__all__ = ['NoisyClassifier', 'MLPClassifier', 'classifier_loss', 'classifier_log_prob_fn',
           'accuracy_by_noise_level', 'perturb', 'create_classifier', 'classifier_metadata',
           'check_classifier_metadata', 'TIME_LABEL']
