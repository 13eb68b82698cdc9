"""The one home of the conversions between what a network may predict and the score.

For the Gaussian perturbation kernel x_t = alpha x_0 + sigma z (any SDE; alpha, sigma are
`[B]` and broadcast against `x [B, ...]` of any rank):

  score = -eps / sigma                              (Ho et al. 2020; Song et al. 2021, Eq. 7)
  x0    = (x + sigma^2 score) / alpha               (Tweedie's formula; Efron 2011)
  score = (alpha x0 - x) / sigma^2                  (its inverse)

A network with learned variances (Nichol & Dhariwal 2021) also outputs v, nominally in [-1, 1],
that interpolates the log-variance of a reverse chain step between beta and beta tilde
(`learned_log_variance`); a score function that carries one exposes
`score_and_variance(x, t) -> (score, v)` (see `variance_fn`).

The EDM denoiser D(x_hat; sigma_e) of Karras et al. 2022 is the x0 prediction in the scaled
variable x_hat = x / alpha with sigma_e = sigma / alpha. Time labels (what a network is told
about the time) are also defined here: `time_label(kind, sde, t)`.
"""
from __future__ import annotations

from typing import Protocol

import torch

from score_sde.maths.utils import bcast



class ScoreFn(Protocol):
  """The one interface of every sampler, the likelihood, the bound, guidance and the inverse
  solvers: `score_fn(x [B, ...], t [B]) -> [B, ...]`, the score grad_x log p_t(x), of any rank
  and with or without a network behind it (`ScoreModel`, an analytic score, a guided one)."""

  def __call__(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor: ...


PARAMETERIZATIONS = ('eps', 'score', 'x0')
TIME_LABELS = ('t999', 'sigma', 'index', 't')


def _b(v, x):
  return bcast(v, x) if torch.is_tensor(v) else v


def score_from_eps(eps: torch.Tensor, sigma) -> torch.Tensor:
  """-eps / sigma."""
  return -eps / _b(sigma, eps)


def eps_from_score(score: torch.Tensor, sigma) -> torch.Tensor:
  """-sigma score."""
  return -_b(sigma, score) * score


def eps_residual(score: torch.Tensor, sigma, z: torch.Tensor) -> torch.Tensor:
  """z + sigma s `[B, ...]`: the drawn noise z minus the noise the score s implies
  (eps_theta = -sigma s) at x_t = alpha x_0 + sigma z. Its square is the denoising score
  matching loss with lambda = sigma^2 (Song et al. 2021, Eq. 7), DDPM's L_simple (Ho et al.
  2020, Eq. 14)."""
  return score * _b(sigma, z) + z


def x0_from_score(x: torch.Tensor, score: torch.Tensor, alpha, sigma) -> torch.Tensor:
  """Tweedie: E[x_0 | x_t] = (x + sigma^2 score) / alpha."""
  return (x + _b(sigma, x) ** 2 * score) / _b(alpha, x)


def score_from_x0(x: torch.Tensor, x0: torch.Tensor, alpha, sigma) -> torch.Tensor:
  """(alpha x0 - x) / sigma^2: the score of N(alpha x0, sigma^2 I) at x."""
  return (_b(alpha, x) * x0 - x) / _b(sigma, x) ** 2


def x0_from_eps(x: torch.Tensor, eps: torch.Tensor, alpha, sigma) -> torch.Tensor:
  """(x - sigma eps) / alpha."""
  return (x - _b(sigma, x) * eps) / _b(alpha, x)


def eps_from_x0(x: torch.Tensor, x0: torch.Tensor, alpha, sigma) -> torch.Tensor:
  """(x - alpha x0) / sigma."""
  return (x - _b(alpha, x) * x0) / _b(sigma, x)


_TO_SCORE = {  # parameterization -> (output, x, alpha, sigma) -> score
    'score': lambda out, x, alpha, sigma: out,
    'eps': lambda out, x, alpha, sigma: score_from_eps(out, sigma),
    'x0': lambda out, x, alpha, sigma: score_from_x0(x, out, alpha, sigma),
}
_FROM_SCORE = {  # parameterization -> (score, x, alpha, sigma) -> output
    'score': lambda score, x, alpha, sigma: score,
    'eps': lambda score, x, alpha, sigma: eps_from_score(score, sigma),
    'x0': lambda score, x, alpha, sigma: x0_from_score(x, score, alpha, sigma),
}


def _pick(table: dict, parameterization: str):
  if parameterization not in table:
    raise ValueError(f"unknown parameterization '{parameterization}'; "
                     f"choose one of: {', '.join(PARAMETERIZATIONS)}")
  return table[parameterization]


def to_score(output: torch.Tensor, x: torch.Tensor, parameterization: str, alpha, sigma):
  """The score from a network `output` shaped like x, given what it predicts."""
  return _pick(_TO_SCORE, parameterization)(output, x, alpha, sigma)


def from_score(score: torch.Tensor, x: torch.Tensor, parameterization: str, alpha, sigma):
  """Inverse of `to_score`: what a network of that parameterization outputs for this score."""
  return _pick(_FROM_SCORE, parameterization)(score, x, alpha, sigma)


def time_label(kind: str, sde, t: torch.Tensor) -> torch.Tensor:
  """The `[B]` label a network is conditioned on at times t `[B]`:

  - 't999':  999 t (continuous VP / sub-VP networks of score_sde_pytorch);
  - 'sigma': sigma(t) (continuous VE; NCSN++ embeds log sigma with Fourier features);
  - 'index': the integer chain index the discrete-time network was trained on,
             `sde.index_label(t)` (DDPM index for VP, N - 1 - i for SMLD's descending sigmas);
  - 't':     t itself.
  """
  if kind == 't999':
    return 999.0 * t
  if kind == 'sigma':
    return sde.marginal_std(t)
  if kind == 'index':
    return sde.index_label(t).to(t.dtype)
  if kind == 't':
    return t
  raise ValueError(f"unknown time label '{kind}'; choose one of: {', '.join(TIME_LABELS)}")


def label_kernel(kind: str, sde, t: torch.Tensor):
  """(alpha, sigma) `[B]` that scale an eps / x0 output for a network with labels `kind`: the
  chain's own kernel at the label's index for a discrete ('index') model of an SDE with a
  chain (e.g. DDPM's sqrt(1 - abar_i), as score_sde_pytorch), else the continuous alpha(t), sigma(t)."""
  if kind == 'index' and sde.chain is not None:
    alpha, sigma = sde.chain.kernel(sde.index_of_time(t))
    return alpha.to(t), sigma.to(t)
  return sde.mean_coeff(t), sde.marginal_std(t)


def learned_log_variance(v: torch.Tensor, log_beta, log_beta_tilde) -> torch.Tensor:
  """IDDPM's learned reverse variance (Nichol & Dhariwal 2021, Eq. 15), as a log:
  log Sigma = f log beta + (1 - f) log beta_tilde with f = (v + 1) / 2. v is the network's
  raw extra output (not squashed, as in IDDPM: v = 1 gives beta, v = -1 beta tilde); `[B, ...]`,
  with log_beta / log_beta_tilde broadcastable (`[B]` are broadcast against v)."""
  frac = (v + 1) / 2
  return frac * _b(log_beta, v) + (1 - frac) * _b(log_beta_tilde, v)


def variance_fn(score_fn):
  """`score_and_variance(x, t) -> (score, v)` of a score function that has a learned variance
  (a `ScoreModel` with `learn_sigma`, or any callable exposing that attribute), else None.
  The guidance wrappers (`score_sde.maths.guidance`) and `score_sde.sampling.graphed.GraphedScore` keep it."""
  return getattr(score_fn, 'score_and_variance', None)


def output_channels(num_channels: int, learn_sigma: bool) -> int:
  """Channels a network outputs: the data's `num_channels`, doubled when it also learns its
  variance (`model.learn_sigma`)."""
  return num_channels * (2 if learn_sigma else 1)
