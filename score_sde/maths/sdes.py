"""Forward SDEs dx = f(x, t) dt + g(t) dw of Song et al. 2021 (ICLR), Sec. 3.4 and App. B.

Every SDE is rank-agnostic: `x` is `[B, ...]` of any rank (`[B, 2]` toys, `[B, C, H, W]`
images) and `t` is a `[B]` float tensor in `[0, T]`, T = 1. Per-sample coefficients such as
the diffusion g(t) and the marginal std are returned with shape `[B]`.

Besides the methods of the paper's interface (sde, marginal_prob, prior_sampling,
prior_logp, discretize, reverse), every SDE exposes the scalar schedule of its Gaussian
perturbation kernel x_t = alpha(t) x_0 + sigma(t) z: `mean_coeff(t)` = alpha(t) and
`marginal_std(t)` = sigma(t), and its half log-SNR `log_snr(t)` = log(alpha/sigma) with the
inverse `t_from_log_snr` (used by DPM-Solver, Lu et al. 2022).

The SDE is also the one owner of its discrete chain (DDPM for VP, SMLD for VE; sub-VP has
none): the single index <-> time mapping `time_of_index` / `index_of_time`, the chain itself,
`sde.chain` (a `score_sde.maths.chain.DiscreteChain`, None without one: its kernel
`chain.kernel(i)` = (alpha_i, sigma_i) and steps), and the one-step coefficients
`chain_step(t, dt)` on or off the chain. Everything else asks these instead of checking the
SDE's class.
"""
from __future__ import annotations

import math

import numpy as np
import torch

from score_sde.maths.chain import DiscreteChain
from score_sde.maths.sde_base import SDE, ReverseSDE
from score_sde.maths.utils import batch_sum, bcast, num_dims, randn

SCHEDULES = ('linear', 'cosine')   # VP beta schedules: DDPM's linear, IDDPM's cosine


class _GaussianPrior:
  """Mixin: prior N(0, prior_std^2 I)."""

  prior_std = 1.0

  def prior_sampling(self, shape, generator=None, device=None):
    return randn(tuple(shape), generator, device) * self.prior_std

  def prior_logp(self, z):
    d = num_dims(z)
    return (-0.5 * d * math.log(2 * math.pi * self.prior_std ** 2)
            - batch_sum(z ** 2) / (2 * self.prior_std ** 2))


class VPSDE(_GaussianPrior, SDE):
  """Variance-preserving SDE, the continuous DDPM (Song et al. 2021, Eq. 11).

  Linear schedule: beta(t) = beta_min + t (beta_max - beta_min); f = -beta x / 2,
  g = sqrt(beta). Cosine schedule (Nichol & Dhariwal 2021): alpha_bar(u) =
  cos^2(((u + s)/(1 + s)) pi/2) / cos^2((s/(1 + s)) pi/2) with u = t * COSINE_T_MAX, so that
  beta stays finite at t = T (alpha_bar(T) ~ 7e-5; DPM-Solver uses the same cut-off).
  """

  name = 'vpsde'
  ancestral_variance = 'large'     # DDPM ancestral noise sqrt(beta_i) (Ho et al. 2020, Alg. 2)
  COSINE_S = 0.008
  COSINE_T_MAX = 0.9946

  def __init__(self, beta_min=0.1, beta_max=20.0, N=1000, schedule='linear'):
    super().__init__(N)
    self.hparams = dict(beta_min=beta_min, beta_max=beta_max, schedule=schedule)
    if schedule not in SCHEDULES:
      raise ValueError(f"unknown VP schedule '{schedule}'; choose 'linear' or 'cosine'")
    self.beta_0, self.beta_1, self.schedule = float(beta_min), float(beta_max), schedule
    self.discrete_betas = self._discrete_betas()
    self.alphas = 1.0 - self.discrete_betas
    self.alphas_cumprod = torch.cumprod(self.alphas, dim=0)
    self.sqrt_1m_alphas_cumprod = torch.sqrt(1.0 - self.alphas_cumprod)

  def _discrete_betas(self) -> torch.Tensor:
    """DDPM table (float64): beta_i = beta_min/N + i/(N-1) (beta_max - beta_min)/N, or the
    improved-DDPM cosine betas 1 - abar((i+1)/N)/abar(i/N), clipped at 0.999."""
    n = self.N
    if self.schedule == 'linear':
      return torch.linspace(self.beta_0 / n, self.beta_1 / n, n, dtype=torch.float64)
    u = torch.arange(n + 1, dtype=torch.float64) / n
    s = self.COSINE_S
    abar = torch.cos((u + s) / (1 + s) * math.pi / 2) ** 2
    return (1 - abar[1:] / abar[:-1]).clamp(max=0.999)

  def time_of_index(self, i):
    """t_i = (i + 1) T / N: where the continuous marginal best matches the DDPM table (the
    std gap is at most ~1.3e-3; at i / (N - 1) it is ~10x larger and t_0 = 0 has sigma = 0)."""
    return (i + 1) * self.T / self.N

  def log_mean_coeff(self, t: torch.Tensor) -> torch.Tensor:
    """log alpha(t) = -int_0^t beta / 2 <= 0, exactly 0 at t = 0 on every CPU: both terms of
    the cosine form go through the same torch kernel in t's dtype (a Python `math.cos` constant
    rounds differently from torch's on some CPUs, leaving +1e-20 at t = 0 and a NaN std), and
    the result is clamped at 0, its maximum."""
    if self.schedule == 'linear':
      lmc = -0.25 * t ** 2 * (self.beta_1 - self.beta_0) - 0.5 * t * self.beta_0
    else:
      s = self.COSINE_S
      log_cos = lambda u: torch.log(torch.cos((u + s) / (1 + s) * math.pi / 2))
      lmc = log_cos(t * self.COSINE_T_MAX) - log_cos(torch.zeros_like(t))
    return lmc.clamp(max=0.0)

  def beta(self, t: torch.Tensor) -> torch.Tensor:
    """beta(t) = -2 d log alpha / dt, `[B]`."""
    if self.schedule == 'linear':
      return self.beta_0 + t * (self.beta_1 - self.beta_0)
    s, u = self.COSINE_S, t * self.COSINE_T_MAX
    return self.COSINE_T_MAX * math.pi / (1 + s) * torch.tan((u + s) / (1 + s) * math.pi / 2)

  def mean_coeff(self, t):
    return torch.exp(self.log_mean_coeff(t))

  def marginal_std(self, t):
    return torch.sqrt(-torch.expm1(2.0 * self.log_mean_coeff(t)))

  def log_snr(self, t):
    lmc = self.log_mean_coeff(t)
    return lmc - 0.5 * torch.log(-torch.expm1(2.0 * lmc))

  def t_from_log_snr(self, lam, iters: int = 60):
    if self.schedule != 'linear':
      return super().t_from_log_snr(lam, iters)
    # alpha^2 = sigmoid(2 lam); solve (b1-b0)/4 t^2 + b0/2 t + lmc = 0 for t >= 0.
    lmc = -0.5 * torch.nn.functional.softplus(-2.0 * lam)
    a, b = (self.beta_1 - self.beta_0) / 4, self.beta_0 / 2
    if a == 0:
      return -lmc / b
    return (-b + torch.sqrt(b * b - 4 * a * lmc)) / (2 * a)

  def sde(self, x, t):
    beta = self.beta(t)
    return -0.5 * bcast(beta, x) * x, torch.sqrt(beta)

  def _make_chain(self) -> DiscreteChain:
    """DDPM: (sqrt(abar_i), sqrt(1 - abar_i))."""
    def kernel(i):
      abar = self.table_on('alphas_cumprod', i.device)[i]
      return torch.sqrt(abar), torch.sqrt(1.0 - abar)
    return DiscreteChain(self, 'ddpm', kernel)


class SubVPSDE(VPSDE):
  """sub-VP SDE (Song et al. 2021, Eq. 12): same drift as VP and
  g = sqrt(beta(t) (1 - exp(-2 int_0^t beta))); the marginal std is 1 - alpha(t)^2.

  It has no discrete chain (`sde.chain` is None): discrete-time training, DDPM/DDIM and
  the ancestral predictor refuse it, as score_sde_pytorch does; the reverse-diffusion
  predictor uses Euler-Maruyama and the Langevin corrector the exact step over T/N.
  """

  name = 'subvpsde'

  def __init__(self, beta_min=0.1, beta_max=20.0, N=1000, schedule='linear'):
    super().__init__(beta_min, beta_max, N, schedule)

  def sde(self, x, t):
    drift, _ = super().sde(x, t)
    discount = -torch.expm1(4.0 * self.log_mean_coeff(t))
    return drift, torch.sqrt(self.beta(t) * discount)

  def marginal_std(self, t):
    return -torch.expm1(2.0 * self.log_mean_coeff(t))

  def log_snr(self, t):
    lmc = self.log_mean_coeff(t)
    return lmc - torch.log(-torch.expm1(2.0 * lmc))

  def t_from_log_snr(self, lam, iters: int = 60):
    return SDE.t_from_log_snr(self, lam, iters)

  def _make_chain(self) -> None:
    return None


def smld_sigmas(sigma_min: float, sigma_max: float, num_scales: int) -> np.ndarray:
  """The SMLD noise levels (Song & Ermon 2019): `num_scales` values geometrically spaced from
  `sigma_max` down to `sigma_min`, float64 `[num_scales]` (score_sde_pytorch's `get_sigmas`,
  the `sigmas` buffer of its networks; `VESDE.discrete_sigmas` holds them in ascending order)."""
  return np.exp(np.linspace(np.log(sigma_max), np.log(sigma_min), num_scales))


class VESDE(_GaussianPrior, SDE):
  """Variance-exploding SDE, the continuous SMLD/NCSN (Song et al. 2021, Eq. 9).

  sigma(t) = sigma_min (sigma_max / sigma_min)^t, f = 0,
  g = sigma(t) sqrt(2 log(sigma_max / sigma_min)). As in the paper's code the marginal std is
  taken to be sigma(t) (the exact one is sqrt(sigma(t)^2 - sigma_min^2)); prior N(0, sigma_max^2).
  """

  name = 'vesde'
  ancestral_variance = 'small'  # the posterior variance: SMLD ancestral noise (Song et al. 2021, Eq. 47)

  def __init__(self, sigma_min=0.01, sigma_max=50.0, N=1000):
    super().__init__(N)
    self.hparams = dict(sigma_min=sigma_min, sigma_max=sigma_max)
    self.sigma_min, self.sigma_max = float(sigma_min), float(sigma_max)
    self.prior_std = self.sigma_max
    self.discrete_sigmas = torch.from_numpy(smld_sigmas(self.sigma_min, self.sigma_max, self.N)[::-1].copy())

  def sigma(self, t):
    return self.sigma_min * (self.sigma_max / self.sigma_min) ** t

  def mean_coeff(self, t):
    return torch.ones_like(t)

  def marginal_std(self, t):
    return self.sigma(t)

  def log_snr(self, t):
    return -torch.log(self.sigma(t))

  def t_from_log_snr(self, lam, iters: int = 60):
    return (-lam - math.log(self.sigma_min)) / math.log(self.sigma_max / self.sigma_min)

  def sde(self, x, t):
    g = self.sigma(t) * math.sqrt(2 * math.log(self.sigma_max / self.sigma_min))
    return torch.zeros_like(x), g

  def _make_chain(self) -> DiscreteChain:
    """SMLD: (1, sigma_i) on the geometric grid."""
    def kernel(i):
      sigma = self.table_on('discrete_sigmas', i.device)[i]
      return torch.ones_like(sigma), sigma
    return DiscreteChain(self, 'smld', kernel)

  def exact_kernel_var(self, t):
    """sigma(t)^2 - sigma_min^2: the SDE started at t = 0 (marginal_std is the paper's sigma(t))."""
    return self.sigma(t) ** 2 - self.sigma_min ** 2

  def score_sde_conventions(self, continuous: bool) -> tuple[str, str]:
    """NCSN-type networks output the score itself, labelled sigma(t) (the index when discrete)."""
    return 'score', ('sigma' if continuous else 'index')

  def index_label(self, t: torch.Tensor) -> torch.Tensor:
    """SMLD stores its sigmas in descending order: label N - 1 - i."""
    return (self.N - 1) - self.index_of_time(t)


SDES = {'vpsde': VPSDE, 'subvpsde': SubVPSDE, 'vesde': VESDE}

__all__ = ['SDE', 'ReverseSDE', 'VPSDE', 'SubVPSDE', 'VESDE', 'SDES']
