"""Guided score functions: classifier-free and classifier guidance
(Ho & Salimans 2022; Dhariwal & Nichol 2021).

Both act on the score only, so a guided score bound to a label (`bind`) works with every
sampler in `score_sde.sampling.SOLVERS` and with `score_sde.maths.likelihood.log_likelihood`.

Conventions. A conditional score function is `score_fn(x [B, ...], t [B], y) -> [B, ...]`
where `y` is a `[B]` long tensor of class labels or `None` (unconditional). Networks built
on `score_sde.models.embeddings.TimeClassEmbedding` also take the null label
`num_classes` inside a batch of labels, which lets the conditional and the unconditional
score be evaluated in one batched call.

What `log_likelihood(sde, bind(guided, y), x)` computes: the exact log-density of x under
the model defined by the guided probability-flow ODE, i.e. of the pushforward of the prior
p_T through the guided PF-ODE, p_w(x | y). It is a proper, normalised density for every w
(a change of variables of the prior), but it equals log p(x | y) only for w = 1 (or
scale = 1 with an exact classifier) and exact scores: for w != 1 the guided scores are in
general not the scores of any diffusion of the tilted density p(x)^(1-w) p(x|y)^w, so
p_w(x | y) is neither the tilted density nor log p(x | y).
"""
from __future__ import annotations

from typing import Callable

import torch

from score_sde.maths.conventions import ScoreFn

CondScoreFn = Callable[..., torch.Tensor]


def labels_like(y, x: torch.Tensor) -> torch.Tensor | None:
  """Broadcast a label (int, 0-d or `[B]` tensor) to a `[B]` long tensor on x's device."""
  if y is None:
    return None
  y = torch.as_tensor(y, device=x.device).long()
  if y.ndim == 0:
    return y.expand(x.shape[0])
  if y.shape != (x.shape[0],):
    raise ValueError(f'labels must be a scalar or shaped [B] = [{x.shape[0]}], got {tuple(y.shape)}')
  return y


class Guided:
  """A guided score function (called like the function it wraps) that also carries
  `score_and_variance` when its base model learns its reverse variance (see
  `score_sde.maths.conventions.variance_fn`), so that guided sampling keeps the learned variance."""

  def __init__(self, fn, with_variance=None):
    self.fn = fn
    if with_variance is not None:
      self.score_and_variance = with_variance

  def __call__(self, *args, **kwargs):
    return self.fn(*args, **kwargs)


def classifier_free(score_fn: CondScoreFn, w: float, null_label: int | None = None) -> CondScoreFn:
  """Classifier-free guidance (Ho & Salimans 2022), `guided(x, t, y) -> [B, ...]`:

      s_w(x, t, y) = s(x, t, None) + w (s(x, t, y) - s(x, t, None)).

  w = 1 is plain conditional sampling, w = 0 unconditional, w > 1 sharpens p(y | x). Ho &
  Salimans write (1 + w') s_c - w' s_u, i.e. their w' = w - 1 (the same form as the seeds'
  `(1 + w) eps_c - w eps_u` on the noise prediction, eps = -sigma s, with our w = 1 + theirs).
  A learned variance is the conditional branch's (as GLIDE, Nichol et al. 2022).

  Args:
    score_fn: `score_fn(x, t, y)`; `y = None` is unconditional.
    w: the guidance weight.
    null_label: if given, `score_fn` accepts a `[2B]` label batch in which this label means
      unconditional, and both terms are evaluated in ONE call on [x, x] with [y, null].
      If None, `score_fn` is called twice (once with `y = None`).
  """
  w = float(w)

  def combine(call, x, t, y):
    """The guided (score, variance) from `call(x, t, y) -> (score, v or None)`."""
    y = labels_like(y, x)
    if y is None or w == 0.0:
      return call(x, t, None)
    if w == 1.0:
      return call(x, t, y)
    if null_label is None:
      (s_cond, v_cond), (s_uncond, _) = call(x, t, y), call(x, t, None)
    else:
      null = torch.full_like(y, int(null_label))
      s, v = call(torch.cat([x, x]), torch.cat([t, t]), torch.cat([y, null]))
      (s_cond, s_uncond), v_cond = s.chunk(2), None if v is None else v.chunk(2)[0]
    return s_uncond + w * (s_cond - s_uncond), v_cond

  both = getattr(score_fn, 'score_and_variance', None)
  return Guided(lambda x, t, y=None: combine(lambda *a: (score_fn(*a), None), x, t, y)[0],
                None if both is None else (lambda x, t, y=None: combine(both, x, t, y)))


def classifier_grad(log_prob_fn, x: torch.Tensor, t: torch.Tensor, y) -> torch.Tensor:
  """grad_x log p(y | x_t, t) `[B, ...]` by autograd (works under the samplers' no_grad)."""
  with torch.enable_grad():
    xg = x.detach().requires_grad_(True)
    log_prob = log_prob_fn(xg, t, y)
    (grad,) = torch.autograd.grad(log_prob.sum(), xg)
  return grad.detach()


def classifier_guidance(score_fn: ScoreFn, log_prob_fn, scale: float) -> CondScoreFn:
  """Classifier guidance (Dhariwal & Nichol 2021, Alg. 1; Song et al. 2021, Sec. 5 / App. I.1):

      s(x, t, y) = s(x, t) + scale * grad_x log p_phi(y | x_t, t).

  With scale = 1 and the exact noisy posterior this is the exact conditional score
  grad log p_t(x | y) (Bayes' rule); scale > 1 samples from a sharpened p(y | x)^scale p(x).

  Args:
    score_fn: the unconditional `score_fn(x, t) -> [B, ...]`.
    log_prob_fn: `log_prob_fn(x [B, ...], t [B], y [B]) -> [B]`, a time-dependent classifier's
      log p(y | x_t) (e.g. `score_sde.training.classifier.classifier_log_prob_fn`).
    scale: the guidance scale.
  Returns:
    `guided(x, t, y) -> [B, ...]`; `y = None` gives the unconditional score.
  """
  scale = float(scale)

  def shift(score, x, t, y):
    y = labels_like(y, x)
    if y is None or scale == 0.0:
      return score
    return score + scale * classifier_grad(log_prob_fn, x, t, y).to(score.dtype)

  def with_variance(x, t, y=None):  # the mean moves, the learned variance stays (ADM, Alg. 1)
    score, v = both(x, t)
    return shift(score, x, t, y), v
  both = getattr(score_fn, 'score_and_variance', None)
  return Guided(lambda x, t, y=None: shift(score_fn(x, t), x, t, y), with_variance if both else None)


def bind(guided: CondScoreFn, y) -> ScoreFn:
  """Fix the label: `score_fn(x, t) = guided(x, t, y)` with `y` (int or `[B]`) broadcast to
  the batch. The result plugs into `score_sde.sampling.sample` and `log_likelihood` (and keeps a
  learned variance)."""
  both = getattr(guided, 'score_and_variance', None)
  return Guided(lambda x, t: guided(x, t, labels_like(y, x)),
                None if both is None else (lambda x, t: both(x, t, labels_like(y, x))))


__all__ = ['Guided', 'classifier_free', 'classifier_guidance', 'classifier_grad', 'bind', 'labels_like']
