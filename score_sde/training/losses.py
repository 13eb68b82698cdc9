"""Weighted denoising score matching (Song et al. 2021, Eq. 7; Vincent 2011).

    L(theta) = E_t E_x0 E_{x_t|x_0} [ lambda(t) || s_theta(x_t, t) - grad log p_0t(x_t | x_0) ||^2 ]

with grad log p_0t(x_t | x_0) = -z / sigma(t) for x_t = alpha(t) x_0 + sigma(t) z. Weightings:
  - 'score':      lambda = sigma^2, i.e. || sigma s + z ||^2 (the default; eps-matching).
  - 'likelihood': lambda = g(t)^2, which makes L an upper bound on the negative
                  log-likelihood (Song, Durkan, Murray & Ermon 2021, Thm. 1). With
                  `importance_sampling`, t is drawn with density proportional to
                  g^2 / sigma^2 and the loss is reweighted, which keeps the estimator's
                  variance low (ibid., Sec. 5).
The discrete-time losses of DDPM (L_simple, Ho et al. 2020, Eq. 14) and SMLD are the same
estimator on the discrete tables: t is drawn from the N grid points of the chain.
"""
from __future__ import annotations

import dataclasses

import numpy as np
import torch

from score_sde.maths.conventions import eps_residual
from score_sde.maths.sdes import SDE
from score_sde.maths.utils import cached_to, noisy, randn_like

WEIGHTINGS = ('score', 'likelihood')


@dataclasses.dataclass
class LossOutput:
  """loss: scalar mean over the batch; per_sample: `[B]`; t: the `[B]` times used; for the
  VLB losses (score_sde.training.vlb_loss) also the chain positions t_index and the L_t values (bits)
  vlb_terms `[B]` that update the importance sampler."""
  loss: torch.Tensor
  per_sample: torch.Tensor
  t: torch.Tensor
  t_index: torch.Tensor | None = None
  vlb_terms: torch.Tensor | None = None


class ImportanceSampler:
  """Draws t in [eps, T] with density q(t) = w(t) / Z, w = g(t)^2 / sigma(t)^2, by inverse-CDF
  interpolation on a fine grid (geometric near eps, where w is largest). Works for any SDE."""

  def __init__(self, sde: SDE, eps: float, n_grid: int = 20001):
    t = np.unique(np.concatenate([np.geomspace(eps, sde.T, n_grid // 2),
                                  np.linspace(eps, sde.T, n_grid // 2)]))
    tt = torch.from_numpy(t)
    _, g = sde.sde(torch.zeros(len(t), 1, dtype=torch.float64), tt)
    w = (g ** 2 / sde.marginal_std(tt) ** 2).numpy()
    cdf = np.concatenate([[0.0], np.cumsum(np.diff(t) * (w[1:] + w[:-1]) / 2)])
    self.Z = float(cdf[-1])
    self.t_grid, self.cdf = torch.from_numpy(t), torch.from_numpy(cdf / cdf[-1])
    self.sde, self.eps = sde, eps

  def from_uniform(self, u: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """t `[B]` ~ q by inverse CDF of u `[B]` ~ U(0, 1) (linear interpolation on the grid, on
    u's device: no host sync), and the weight Z / (T - eps): E_U[w(t) L(t)] = Z / (T - eps) E_q[L(t)]."""
    cdf, grid = cached_to(self, 'cdf', u.device), cached_to(self, 't_grid', u.device)
    v = u.detach().double().clamp(0.0, 1.0)
    j = torch.searchsorted(cdf, v).clamp(1, len(cdf) - 1)
    c0, c1 = cdf[j - 1], cdf[j]
    frac = ((v - c0) / (c1 - c0).clamp_min(1e-300)).clamp(0.0, 1.0)
    t = grid[j - 1] + frac * (grid[j] - grid[j - 1])
    factor = self.Z / (self.sde.T - self.eps)
    return t.float(), torch.full(u.shape, factor, device=u.device)


def uniform_index(u: torch.Tensor, n: int) -> torch.Tensor:
  """u `[B]` ~ U(0, 1) -> i `[B]` ~ U{0..n-1} (long), u's device."""
  return torch.clamp(torch.floor(u.double() * n), max=n - 1).long()


def draw_noise(x0: torch.Tensor, generator=None) -> tuple[torch.Tensor, torch.Tensor]:
  """The randomness of one DSM loss evaluation: u `[B]` ~ U(0, 1) (mapped to t) and
  z ~ N(0, I) shaped like x0, drawn on the generator's device and moved to x0's."""
  dev = generator.device if generator is not None else x0.device
  u = torch.rand(x0.shape[0], generator=generator, device=dev).to(x0.device)
  return u, randn_like(x0, generator)


def get_loss_fn(sde: SDE, *, continuous: bool = True, weighting: str = 'score',
                importance_sampling: bool = False, reduce_mean: bool = False,
                eps: float = 1e-5):
  """Return `loss_fn(score_fn, x0, y=None, generator=None, noise=None) -> LossOutput`.

  The randomness (u `[B]` ~ U(0, 1), mapped to t, and z shaped like x0) comes from `generator`,
  or is passed as `noise=(u, z)` so that a distributed run can give each sample the noise of its
  position in the global batch (see score_sde.training.trainer).

  Args:
    sde: the forward SDE.
    continuous: t ~ U(eps, T) (continuous) or the discrete chain's grid (DDPM/SMLD).
    weighting: one of WEIGHTINGS.
    importance_sampling: with 'likelihood', sample t ~ g^2 / sigma^2.
    reduce_mean: average (True) or sum (False) the squared error over data dims.
    eps: smallest training time (Song et al. use 1e-5).
  `score_fn(x, t)` or `score_fn(x, t, y)` must return the model score shaped like x `[B, ...]`.
  Discrete training draws chain indices and perturbs with the chain's own kernel
  `sde.chain.kernel(i)` (DDPM's sqrt(abar_i), sqrt(1-abar_i); SMLD's sigma grid); an SDE
  without a chain (sub-VP) is refused, as score_sde_pytorch does.
  """
  if weighting not in WEIGHTINGS:
    raise ValueError(f"unknown loss weighting '{weighting}'; choose one of: {', '.join(WEIGHTINGS)}")
  if importance_sampling and weighting != 'likelihood':
    raise ValueError('importance sampling of t applies to the likelihood weighting only')
  if not continuous and sde.chain is None:
    raise ValueError(f'discrete-time training needs an SDE with a discrete chain and '
                     f'{type(sde).__name__} has none; set training.continuous=True')
  sampler = ImportanceSampler(sde, eps) if importance_sampling else None

  def coefficients(t):
    if continuous:
      return sde.mean_coeff(t), sde.marginal_std(t)
    alpha, sigma = sde.chain.kernel(sde.index_of_time(t))
    return alpha.to(t), sigma.to(t)

  def times(u):
    """u `[B]` in [0, 1) -> (t `[B]`, importance weight `[B]`)."""
    if not continuous:  # chain indices i ~ U{0..N-1} at their times
      return sde.time_of_index(uniform_index(u, sde.N).double()).float(), torch.ones_like(u)
    if sampler is not None:
      return sampler.from_uniform(u)
    return u * (sde.T - eps) + eps, torch.ones_like(u)

  def loss_fn(score_fn, x0, y=None, generator=None, noise=None) -> LossOutput:
    b = x0.shape[0]
    u, z = noise if noise is not None else draw_noise(x0, generator)
    t, weight = times(u.to(x0.device, torch.float32))
    z = z.to(x0)
    alpha, std = coefficients(t)
    xt = noisy(alpha, std, x0, z)
    score = score_fn(xt, t) if y is None else score_fn(xt, t, y)
    err = torch.square(eps_residual(score, std, z)).reshape(b, -1)
    per_sample = err.mean(1) if reduce_mean else err.sum(1)
    if weighting == 'likelihood' and sampler is None:
      g2 = sde.sde(torch.zeros_like(x0), t)[1] ** 2
      per_sample = per_sample * g2 / std ** 2
    per_sample = per_sample * weight  # importance sampling: q(t) already carries g^2 / std^2
    return LossOutput(per_sample.mean(), per_sample, t)

  return loss_fn
