"""The discrete-time variational bound of a diffusion chain in bits per dimension (Ho et al.
2020, Sec. 3.3 and Eq. 5; Nichol & Dhariwal 2021, Sec. 2-3):

    L_vlb = L_K + sum_{k=1}^{K-1} L_k + L_0,
    L_K = KL(q(x_K | x_0) || p(x_K)),   L_k = KL(q(x_{k-1} | x_k, x_0) || p(x_{k-1} | x_k)),
    L_0 = -log p(x_0 | x_1)  (the discretised Gaussian decoder over the 2^n_bits bins),

for the chain of an SDE (the DDPM table of a VPSDE, also the SMLD grid of a VESDE) on its
strided "leading" subsequence of K steps (K = N: the paper's bound; fewer steps give a valid but
looser bound of the shorter chain, as IDDPM's respaced models). The reverse mean is the
posterior mean with x_0 replaced by the model's x_0 prediction, which comes from any
`score_fn(x, t)` through Tweedie's formula (`score_sde.maths.conventions`); the reverse variance is
beta tilde ("small"), beta ("large") or the model's learned interpolation ("learned",
`conventions.learned_log_variance`). As IDDPM, the variance of the last step (to the data,
where beta tilde is 0) is the next step's beta tilde ("clipped").

Each L_k is a one-sample Monte Carlo estimate (x_k ~ q(x_k | x_0), fresh noise per k), so the
sum is an unbiased estimate of the bound; one score evaluation per k (K in all).
"""
from __future__ import annotations

import dataclasses
import math

import torch

from score_sde.maths import conventions as cv
from score_sde.maths.chain_posterior import ChainTable
from score_sde.maths.conventions import ScoreFn
from score_sde.maths.sdes import SDE
from score_sde.maths.utils import bcast, full_t, num_dims, randn_like

VARIANCES = ('small', 'large', 'learned')


@dataclasses.dataclass
class VLBResult:
  """bpd: `[B]` bits/dim of the whole bound; terms: `[B, K + 1]` nats, the prior term L_K,
  then L_{K-1} ... L_1, then the decoder L_0; nfe: score evaluations; steps: K."""
  bpd: torch.Tensor
  terms: torch.Tensor
  nfe: int
  steps: int

  @property
  def nats(self) -> torch.Tensor:
    """`[B]` the bound in nats."""
    return self.terms.sum(1)


def gaussian_kl(mean_q, logvar_q, mean_p, logvar_p) -> torch.Tensor:
  """Elementwise KL(N(mean_q, e^logvar_q) || N(mean_p, e^logvar_p)) in nats (broadcasting)."""
  return 0.5 * (logvar_p - logvar_q + torch.exp(logvar_q - logvar_p)
                + (mean_q - mean_p) ** 2 * torch.exp(-logvar_p) - 1.0)


def _log_diff_ndtr(hi: torch.Tensor, lo: torch.Tensor) -> torch.Tensor:
  """log(Phi(hi) - Phi(lo)) for hi > lo, computed in the tail where it is accurate."""
  flip = lo > 0  # both in the right tail: Phi(hi) - Phi(lo) = Phi(-lo) - Phi(-hi)
  hi, lo = torch.where(flip, -lo, hi), torch.where(flip, -hi, lo)
  a, b = torch.special.log_ndtr(hi), torch.special.log_ndtr(lo)
  d = (b - a).clamp(max=-1e-30)
  log1mexp = torch.where(d > -math.log(2.0), torch.log(-torch.expm1(d)), torch.log1p(-torch.exp(d)))
  return a + log1mexp


def discretized_gaussian_log_likelihood(x: torch.Tensor, mean: torch.Tensor, log_scale: torch.Tensor,
                                        data_range=(-1.0, 1.0), n_bits: int = 8) -> torch.Tensor:
  """Elementwise log P(x) in nats of the discretised Gaussian decoder (Ho et al. 2020, Eq. 13):
  the mass of N(mean, e^{2 log_scale}) over x's bin of width (hi - lo) / (2^n_bits - 1), with
  the outermost bins extended to -inf / +inf so that the 2^n_bits bins sum to 1.
  x is on the grid of `data_range`; all tensors broadcast to x's shape `[B, ...]`."""
  lo, hi = data_range
  half = (hi - lo) / (2 * (2 ** n_bits - 1))
  inv = torch.exp(-log_scale)
  upper, lower = (x - mean + half) * inv, (x - mean - half) * inv
  mid = _log_diff_ndtr(upper, lower)
  out = torch.where(x < lo + half, torch.special.log_ndtr(upper), mid)
  return torch.where(x > hi - half, torch.special.log_ndtr(-lower), out)


def step_nats(table: ChainTable, k: torch.Tensor, x0: torch.Tensor, xt: torch.Tensor,
              x0_hat: torch.Tensor, variance: str, v: torch.Tensor | None = None,
              data_range=(-1.0, 1.0), n_bits: int = 8) -> torch.Tensor:
  """`[B]` nats of term L_k for per-sample chain positions k (long `[B]`): the KL of the true
  posterior against the model's reverse step for k >= 1, the decoder NLL for k = 0.

  x0 (data), xt (~ q(x_k | x0)), x0_hat (the model's prediction from xt) and v (the learned
  interpolation, for variance='learned') are `[B, ...]`."""
  mean_q = table.posterior_mean(k, x0, xt)
  mean_p = table.posterior_mean(k, x0_hat, xt)
  logvar_p = table.log_variance(k, variance, v, like=xt)
  logvar_p = bcast(logvar_p, xt) if logvar_p.ndim == 1 else logvar_p
  kl = gaussian_kl(mean_q, bcast(table.on('log_beta_tilde_clipped', xt)[k], xt), mean_p, logvar_p)
  nll = -discretized_gaussian_log_likelihood(x0, mean_p, 0.5 * logvar_p, data_range, n_bits)
  b = x0.shape[0]
  return torch.where(k == 0, nll.reshape(b, -1).sum(1), kl.reshape(b, -1).sum(1))


def prior_nats(sde: SDE, table: ChainTable, x0: torch.Tensor) -> torch.Tensor:
  """`[B]` L_K = KL(N(alpha_K x0, sigma_K^2 I) || N(0, prior_std^2 I)) in nats."""
  alpha, sigma = table.alphas[-1].item(), table.sigmas[-1].item()
  prior_var = getattr(sde, 'prior_std', 1.0) ** 2
  logvar_q, logvar_p = (torch.full_like(x0, math.log(v)) for v in (sigma ** 2, prior_var))
  kl = gaussian_kl(alpha * x0, logvar_q, torch.zeros_like(x0), logvar_p)
  return kl.reshape(x0.shape[0], -1).sum(1)


def _check_grid(x: torch.Tensor, data_range, n_bits: int) -> None:
  lo, hi = data_range
  k = (x - lo) / (hi - lo) * (2 ** n_bits - 1)
  off = (k - k.round()).abs().max().item() if x.numel() else 0.0
  if off > 1e-3 or x.min() < lo - 1e-6 or x.max() > hi + 1e-6:
    raise ValueError(f'variational_bound needs data on the {2 ** n_bits}-level grid of {tuple(data_range)} '
                     f'(off by up to {off:.3g} bins): pass the quantised data, not dequantised')


@torch.no_grad()
def variational_bound(sde: SDE, score_fn: ScoreFn, x: torch.Tensor, *, data_range=(-1.0, 1.0), n_bits: int = 8,
                      variance: str = 'small', steps: int | None = None, generator=None,
                      clip_x0: bool = False, progress=None) -> VLBResult:
  """The variational bound on -log P(x) of data x `[B, ...]` (on the 2^n_bits grid of
  `data_range`) under the chain of `sde` reversed with `score_fn`.

  Args:
    variance: one of VARIANCES; 'learned' needs a score function with `score_and_variance`
      (a `ScoreModel` with learn_sigma).
    steps: the strided chain's length K (default N, the full chain).
    generator: the noise of x_k ~ q(x_k | x_0).
    clip_x0: clip the x_0 prediction to `data_range` (as IDDPM's evaluation does).
    progress: optional iterable wrapper (tqdm) for the K steps.
  Returns a VLBResult (`.bpd` `[B]`, `.terms` `[B, K + 1]` nats, `.nfe` = K).
  """
  if variance not in VARIANCES:
    raise ValueError(f"unknown variance '{variance}'; choose one of: {', '.join(VARIANCES)}")
  model = cv.variance_fn(score_fn) if variance == 'learned' else None
  if variance == 'learned' and model is None:
    raise ValueError("variance='learned' needs a model with a learned variance (model.learn_sigma)")
  _check_grid(x, data_range, n_bits)
  table = ChainTable(sde, steps)
  b, order = x.shape[0], list(reversed(range(table.K)))
  terms = [prior_nats(sde, table, x)]
  for k in (progress(order) if progress else order):
    kk = torch.full((b,), k, dtype=torch.long)
    alpha, sigma = table.alphas[k].item(), table.sigmas[k].item()
    xt = alpha * x + sigma * randn_like(x, generator)
    t = full_t(table.time(k), b, x)
    score, v = model(xt, t) if model is not None else (score_fn(xt, t), None)
    x0_hat = cv.x0_from_score(xt, score, alpha, sigma)
    if clip_x0:
      x0_hat = x0_hat.clamp(*data_range)
    terms.append(step_nats(table, kk.to(x.device), x, xt, x0_hat, variance, v, data_range, n_bits))
  terms = torch.stack(terms, 1)
  bpd = terms.sum(1) / (num_dims(x) * math.log(2.0))
  return VLBResult(bpd=bpd, terms=terms, nfe=table.K, steps=table.K)


__all__ = ['variational_bound', 'VLBResult', 'VARIANCES', 'gaussian_kl',
           'discretized_gaussian_log_likelihood', 'step_nats', 'prior_nats']
