"""Closed-form marginals and scores of Gaussian-mixture data under any of our SDEs.

If x_0 ~ sum_k w_k N(m_k, diag(S_k)), the perturbation kernel x_t = alpha(t) x_0 + sqrt(v(t)) z
gives p_t = sum_k w_k N(alpha m_k, diag(alpha^2 S_k + v)), whose score is known exactly
(Song et al. 2021, App. on Gaussian data). v(t) is the kernel's true variance: sigma(t)^2 for
VP and sub-VP, and sigma(t)^2 - sigma_min^2 for VE (the SDE started at t = 0).

These are ground truths for tests and benchmarks: samplers driven by them must reproduce the
data, and the ODE likelihood must equal `logp`.
"""
from __future__ import annotations

import math

import torch

from score_sde.maths.sdes import SDE


def kernel(sde: SDE, t: torch.Tensor):
  """alpha(t) and the exact kernel variance v(t) (`sde.exact_kernel_var`), each `[B]`."""
  return sde.mean_coeff(t), sde.exact_kernel_var(t)


class GaussianMixture:
  """Diagonal Gaussian mixture on R^D (data of any shape `[B, ...]` is flattened to `[B, D]`).

  Args:
    means: `[K, D]` component means.
    variances: `[K, D]` (or `[D]` / scalar, broadcast) component variances.
    weights: `[K]` mixture weights (normalised internally); default uniform.
  """

  def __init__(self, means, variances, weights=None):
    self.means = torch.as_tensor(means, dtype=torch.float64)
    if self.means.ndim == 1:
      self.means = self.means[None]
    k, d = self.means.shape
    self.variances = torch.as_tensor(variances, dtype=torch.float64).expand(k, d).clone()
    w = torch.ones(k, dtype=torch.float64) if weights is None else torch.as_tensor(weights, dtype=torch.float64)
    self.log_weights = torch.log(w / w.sum())
    self.dim, self.num_components = d, k

  def _component_logp(self, x2, t, sde):
    """`[B, K]` log w_k + log N(x; alpha m_k, alpha^2 S_k + v) and the per-component terms."""
    if t is None:
      mean, var = self.means[None].to(x2), self.variances[None].to(x2)
    else:
      alpha, v = kernel(sde, t.double())
      alpha, v = alpha.to(x2)[:, None, None], v.to(x2)[:, None, None]
      mean, var = alpha * self.means[None].to(x2), alpha ** 2 * self.variances[None].to(x2) + v
    diff = x2[:, None, :] - mean
    logn = -0.5 * ((diff ** 2 / var).sum(-1) + torch.log(2 * math.pi * var).sum(-1))
    return logn + self.log_weights.to(x2), diff, var

  def logp(self, x: torch.Tensor, t: torch.Tensor | None = None, sde: SDE | None = None):
    """log p_t(x) `[B]` (log p_0 if t is None)."""
    x2 = x.reshape(x.shape[0], -1).double()
    lp, _, _ = self._component_logp(x2, t, sde)
    return torch.logsumexp(lp, dim=1).to(x.dtype)

  def posterior(self, x, t, sde, log: bool = True):
    """p(k | x_t) `[B, K]` (its log if `log`): the exact noisy-class posterior."""
    x2 = x.reshape(x.shape[0], -1).double()
    lp, _, _ = self._component_logp(x2, t, sde)
    post = lp - torch.logsumexp(lp, dim=1, keepdim=True)
    return (post if log else post.exp()).to(x.dtype)

  def score(self, x: torch.Tensor, t: torch.Tensor, sde: SDE) -> torch.Tensor:
    """grad_x log p_t(x), shaped like x (computed in float64)."""
    x2 = x.reshape(x.shape[0], -1).double()
    lp, diff, var = self._component_logp(x2, t, sde)
    resp = torch.softmax(lp, dim=1)[:, :, None]
    return (-(resp * diff / var).sum(1)).to(x.dtype).reshape(x.shape)

  def score_fn(self, sde: SDE):
    """`score_fn(x, t)` of the noisy marginals under `sde`."""
    return lambda x, t: self.score(x, t, sde)

  def component(self, k: int) -> 'GaussianMixture':
    """The k-th component as a one-component mixture."""
    return GaussianMixture(self.means[k:k + 1], self.variances[k:k + 1])

  def sample(self, n: int, generator=None) -> torch.Tensor:
    """n draws `[n, D]` (float32) and implicitly their components."""
    return self.sample_with_labels(n, generator)[0]

  def sample_with_labels(self, n: int, generator=None):
    k = torch.multinomial(self.log_weights.exp(), n, replacement=True, generator=generator)
    z = torch.randn(n, self.dim, generator=generator, dtype=torch.float64)
    x = self.means[k] + self.variances[k].sqrt() * z
    return x.float(), k

  def moments(self):
    """Mean `[D]` and covariance `[D, D]` of the mixture."""
    w = self.log_weights.exp()
    mean = (w[:, None] * self.means).sum(0)
    second = sum(w[k] * (torch.diag(self.variances[k]) + torch.outer(self.means[k], self.means[k]))
                 for k in range(self.num_components))
    return mean, second - torch.outer(mean, mean)


def gaussian(mean, variance) -> GaussianMixture:
  """A single diagonal Gaussian N(mean, diag(variance))."""
  mean = torch.as_tensor(mean, dtype=torch.float64).reshape(1, -1)
  return GaussianMixture(mean, torch.as_tensor(variance, dtype=torch.float64).expand_as(mean))
