"""Training and using time-dependent noisy classifiers p_phi(y | x_t, t) for classifier guidance
(Song et al. 2021, Sec. 5 / App. I.1; Dhariwal & Nichol 2021, Sec. 4).

The classifier sees x_t ~ p_0t(x_t | x_0) = N(alpha(t) x_0, sigma(t)^2 I) with t ~ U(eps, T)
and the time label 999 t (the score_sde convention), and is trained by cross-entropy.
"""
from __future__ import annotations

import logging

import torch
from torch import nn
from torch.nn import functional as F

from score_sde.files.checkpoint import CheckpointError
from score_sde.maths.sdes import SDE
from score_sde.maths.utils import randn_like
from score_sde.models.classifier import TIME_LABEL


def classifier_metadata(sde: SDE) -> dict:
  """What a classifier checkpoint records: the SDE it was trained with (`sde.describe()`), the
  network kind and the time label, so that guiding a model of another SDE fails loudly."""
  return {'sde': sde.describe(), 'network': 'noisy_classifier', 'time_label': TIME_LABEL}


def check_classifier_metadata(meta: dict | None, sde: SDE, where: str) -> None:
  """A one-line CheckpointError when classifier checkpoint metadata `meta` records another SDE
  (name or parameters; N does not matter, t is continuous) or time label than `sde` / this
  code's; a warning only for older files that record no SDE."""
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
  `score_sde.maths.guidance.classifier_guidance`."""

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


__all__ = ['classifier_loss', 'classifier_log_prob_fn', 'accuracy_by_noise_level', 'perturb',
           'classifier_metadata', 'check_classifier_metadata']
