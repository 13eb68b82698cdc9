"""The Gaussian posterior of a diffusion chain's steps, q(x_{k-1} | x_k, x_0) (Ho et al. 2020,
Eq. 6-7), for the chain x_k = alpha_k x_0 + sigma_k z of any SDE with one (the DDPM table of a
VPSDE, the SMLD sigmas of a VESDE), possibly on a strided subsequence of its indices.

For a step s -> t with a = alpha_t / alpha_s, the forward variance is
beta = sigma_t^2 - a^2 sigma_s^2 (DDPM's beta_t on the full table, 1 - abar_t / abar_s when
strided) and the posterior is N(c0 x_0 + ct x_t, beta_tilde) with

    c0 = alpha_s beta / sigma_t^2,   ct = a sigma_s^2 / sigma_t^2,   beta_tilde = beta sigma_s^2 / sigma_t^2.
"""
from __future__ import annotations

import torch

from score_sde.maths import conventions as cv
from score_sde.maths.sdes import SDE
from score_sde.maths.utils import bcast, cached_to


def step_posterior(alpha_t, sigma_t, alpha_s, sigma_s):
  """(c0, ct, beta, beta_tilde) of the step s -> t between kernels (alpha, sigma) (floats or
  tensors): q(x_s | x_t, x_0) = N(c0 x_0 + ct x_t, beta_tilde), beta the forward variance."""
  a = alpha_t / alpha_s
  beta = sigma_t ** 2 - a ** 2 * sigma_s ** 2
  return alpha_s * beta / sigma_t ** 2, a * sigma_s ** 2 / sigma_t ** 2, beta, beta * sigma_s ** 2 / sigma_t ** 2


def leading_indices(n: int, steps: int) -> list[int]:
  """The "leading" strided subsequence tau of table indices 0..n-1, increasing, `steps` long
  (r = n // steps; tau = 0, r, ..., (steps - 1) r, as diffusers)."""
  if not 1 <= steps <= n:
    raise ValueError(f'steps must be in [1, {n}], got {steps}')
  ratio = n // steps
  return [k * ratio for k in range(steps)]


class ChainTable:
  """Per-step float64 `[K]` tables of the chain of `sde` on the strided indices tau (K = steps,
  default N): position k = 0..K-1 is table index tau[k]; step k goes from tau[k] to tau[k-1]
  (to the data for k = 0). `log_beta_tilde_clipped` replaces the 0 of k = 0 by the value at
  k = 1 (IDDPM's clipping; beta at k = 0 when K = 1)."""

  def __init__(self, sde: SDE, steps: int | None = None):
    if sde.chain is None:
      raise ValueError(f'{type(sde).__name__} has no discrete chain (the variational bound and '
                       'learned variances need the DDPM table of a VPSDE, or a VESDE)')
    self.sde = sde
    self.tau = leading_indices(sde.N, steps or sde.N)
    self.tau_index = torch.tensor(self.tau)
    alpha, sigma = sde.chain.kernel(torch.tensor(self.tau))
    if not (torch.isfinite(alpha).all() and (alpha > 0).all() and (sigma > 0).all()):
      raise ValueError(f'the chain of {type(sde).__name__}(N={sde.N}) is degenerate (a kernel with '
                       'alpha_i <= 0, i.e. some beta_i >= 1: use a larger N)')
    alpha_s = torch.cat([torch.ones(1, dtype=alpha.dtype), alpha[:-1]])
    sigma_s = torch.cat([torch.zeros(1, dtype=sigma.dtype), sigma[:-1]])
    self.coef_x0, self.coef_xt, beta, beta_tilde = step_posterior(alpha, sigma, alpha_s, sigma_s)
    self.alphas, self.sigmas = alpha, sigma
    self.log_beta = torch.log(beta)
    first = beta_tilde[1:2] if len(beta) > 1 else beta[:1]
    self.log_beta_tilde_clipped = torch.log(torch.cat([first, beta_tilde[1:]]))

  def on(self, name: str, like: torch.Tensor) -> torch.Tensor:
    """Table `name` in like's device and dtype (copied once per device and dtype)."""
    return cached_to(self, name, like.device, like.dtype)

  @property
  def K(self) -> int:
    return len(self.tau)

  def time(self, k: int) -> float:
    """The SDE time of position k (`sde.time_of_index(tau[k])`)."""
    return float(self.sde.time_of_index(self.tau[k]))

  def kernel(self, k: torch.Tensor, like: torch.Tensor):
    """(alpha_k, sigma_k) `[B]` at positions k (long `[B]`), in like's device and dtype."""
    return self.on('alphas', like)[k], self.on('sigmas', like)[k]

  def posterior_mean(self, k: torch.Tensor, x0: torch.Tensor, xt: torch.Tensor) -> torch.Tensor:
    """`[B, ...]` mean of q(x_{k-1} | x_k = xt, x_0 = x0) at positions k (long `[B]`)."""
    return bcast(self.on('coef_x0', xt)[k], xt) * x0 + bcast(self.on('coef_xt', xt)[k], xt) * xt

  def log_variance(self, k: torch.Tensor, variance: str, v: torch.Tensor | None = None,
                   like: torch.Tensor | None = None) -> torch.Tensor:
    """The log-variance of the model's reverse step at positions k (long `[B]`): `[B]` for
    'small' (beta tilde, clipped) and 'large' (beta; as IDDPM, the clipped beta tilde at k = 0),
    `[B, ...]` for 'learned' (IDDPM Eq. 15 with the network's v `[B, ...]`)."""
    ref = v if v is not None else like
    small = self.on('log_beta_tilde_clipped', ref)[k]
    if variance == 'small':
      return small
    large = torch.where(k == 0, small, self.on('log_beta', ref)[k])
    if variance == 'large':
      return large
    if variance == 'learned':
      if v is None:
        raise ValueError("variance='learned' needs the model's v output")
      return cv.learned_log_variance(v, self.on('log_beta', v)[k], small)
    raise ValueError(f"unknown variance '{variance}'; choose small, large or learned")


__all__ = ['ChainTable', 'leading_indices', 'step_posterior']
