"""Forward SDEs dx = f(x, t) dt + g(t) dw of Song et al. 2021 (ICLR), Sec. 3.4 and App. B.

Every SDE is rank-agnostic: `x` is `[B, ...]` of any rank (`[B, 2]` toys, `[B, C, H, W]`
images) and `t` is a `[B]` float tensor in `[0, T]`, T = 1. Per-sample coefficients such as
the diffusion g(t) and the marginal std are returned with shape `[B]`.

Besides the methods of the paper's interface (sde, marginal_prob, prior_sampling,
prior_logp, discretize, reverse), every SDE exposes the scalar schedule of its Gaussian
perturbation kernel x_t = alpha(t) x_0 + sigma(t) z: `mean_coeff(t)` = alpha(t) and
`marginal_std(t)` = sigma(t), and its half log-SNR `log_snr(t)` = log(alpha/sigma) with the
inverse `t_from_log_snr` (used by DPM-Solver, Lu et al. 2022).
"""
from __future__ import annotations

import abc
import math

import torch

from score_sde.utils import bcast, batch_sum, num_dims, randn


class SDE(abc.ABC):
  """Abstract forward SDE on t in [0, T] with N discretisation steps."""

  T: float = 1.0

  def __init__(self, N: int):
    self.N = int(N)

  # -- the schedule -------------------------------------------------------------------
  @abc.abstractmethod
  def mean_coeff(self, t: torch.Tensor) -> torch.Tensor:
    """alpha(t), `[B] -> [B]`: the mean of x_t given x_0 is alpha(t) x_0."""

  @abc.abstractmethod
  def marginal_std(self, t: torch.Tensor) -> torch.Tensor:
    """sigma(t), `[B] -> [B]`: the std of x_t given x_0."""

  @abc.abstractmethod
  def sde(self, x: torch.Tensor, t: torch.Tensor):
    """Drift f(x, t) (shaped like x) and diffusion g(t) (`[B]`)."""

  @abc.abstractmethod
  def prior_sampling(self, shape, generator=None, device=None) -> torch.Tensor:
    """A draw from p_T of the given shape `[B, ...]`."""

  @abc.abstractmethod
  def prior_logp(self, z: torch.Tensor) -> torch.Tensor:
    """log p_T(z) in nats, `[B, ...] -> [B]`."""

  # -- derived quantities ----------------------------------------------------------------
  def marginal_prob(self, x: torch.Tensor, t: torch.Tensor):
    """Mean (shaped like x) and std (`[B]`) of the perturbation kernel p_0t(x_t | x_0 = x)."""
    return bcast(self.mean_coeff(t), x) * x, self.marginal_std(t)

  def log_snr(self, t: torch.Tensor) -> torch.Tensor:
    """Half log signal-to-noise ratio lambda(t) = log(alpha(t) / sigma(t)), decreasing in t."""
    return torch.log(self.mean_coeff(t)) - torch.log(self.marginal_std(t))

  def t_from_log_snr(self, lam: torch.Tensor, iters: int = 60) -> torch.Tensor:
    """Inverse of `log_snr` by bisection on [0, T] (subclasses override with closed forms)."""
    lo = torch.zeros_like(lam)
    hi = torch.full_like(lam, self.T)
    for _ in range(iters):
      mid = (lo + hi) / 2
      above = self.log_snr(mid) > lam  # log_snr decreases: the root lies later in time
      lo = torch.where(above, mid, lo)
      hi = torch.where(above, hi, mid)
    return (lo + hi) / 2

  def discretize(self, x: torch.Tensor, t: torch.Tensor):
    """One step of the discrete chain x_{i+1} = x_i + f_i + G_i z_i (Song et al. 2021, Eq. 45).

    Default: Euler-Maruyama with dt = T/N. Returns f shaped like x and G of shape `[B]`.
    """
    dt = self.T / self.N
    drift, diffusion = self.sde(x, t)
    return drift * dt, diffusion * math.sqrt(dt)

  def reverse(self, score_fn, probability_flow: bool = False) -> 'ReverseSDE':
    """The reverse-time SDE (Anderson 1982) or the probability-flow ODE (Song et al. Eq. 13)."""
    return ReverseSDE(self, score_fn, probability_flow)

  def step_index(self, t: torch.Tensor) -> torch.Tensor:
    """Index i = floor(t (N-1) / T) of the discrete chain at time t, `[B]` (as score_sde).

    On the sampling grid t_j = linspace(T, eps, N)[j] this is exactly N - 1 - j; a 1e-4
    tolerance absorbs float32 rounding at the grid points.
    """
    return torch.floor(t * (self.N - 1) / self.T + 1e-4).long().clamp(0, self.N - 1)

  def with_steps(self, N: int) -> 'SDE':
    """The same SDE with an N-step discrete chain (for samplers run with fewer steps)."""
    return self if int(N) == self.N else type(self)(**{**self.hparams, 'N': int(N)})


class ReverseSDE:
  """dx = [f - g^2 s] dt + g dw_bar, or the PF-ODE dx = [f - g^2 s / 2] dt (diffusion 0).

  `sde` and `discretize` return reverse-time coefficients that are integrated with a
  negative time step (Euler-Maruyama) or subtracted (reverse diffusion).
  """

  def __init__(self, forward: SDE, score_fn, probability_flow: bool):
    self.forward = forward
    self.score_fn = score_fn
    self.probability_flow = probability_flow
    self.T, self.N = forward.T, forward.N

  def _combine(self, x, t, f, g):
    weight = 0.5 if self.probability_flow else 1.0
    drift = f - bcast(g ** 2, x) * self.score_fn(x, t) * weight
    return drift, (torch.zeros_like(g) if self.probability_flow else g)

  def sde(self, x: torch.Tensor, t: torch.Tensor):
    """Reverse drift f - g^2 s (x 1/2 for the ODE) and diffusion g (0 for the ODE)."""
    f, g = self.forward.sde(x, t)
    return self._combine(x, t, f, g)

  def discretize(self, x: torch.Tensor, t: torch.Tensor):
    """Reverse discrete step: rev_f = f - G^2 s (x 1/2), rev_G = G (0 for the ODE)."""
    f, G = self.forward.discretize(x, t)
    return self._combine(x, t, f, G)


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

  COSINE_S = 0.008
  COSINE_T_MAX = 0.9946

  def __init__(self, beta_min=0.1, beta_max=20.0, N=1000, schedule='linear'):
    super().__init__(N)
    self.hparams = dict(beta_min=beta_min, beta_max=beta_max, schedule=schedule)
    if schedule not in ('linear', 'cosine'):
      raise ValueError(f"unknown VP schedule '{schedule}'; choose 'linear' or 'cosine'")
    self.beta_0, self.beta_1, self.schedule = float(beta_min), float(beta_max), schedule
    self.discrete_betas = self._discrete_betas()
    self.alphas = 1.0 - self.discrete_betas
    self.alphas_cumprod = torch.cumprod(self.alphas, dim=0)
    self.sqrt_alphas_cumprod = torch.sqrt(self.alphas_cumprod)
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

  def log_mean_coeff(self, t: torch.Tensor) -> torch.Tensor:
    """log alpha(t) = -int_0^t beta / 2."""
    if self.schedule == 'linear':
      return -0.25 * t ** 2 * (self.beta_1 - self.beta_0) - 0.5 * t * self.beta_0
    s, u = self.COSINE_S, t * self.COSINE_T_MAX
    c0 = math.log(math.cos(s / (1 + s) * math.pi / 2))
    return torch.log(torch.cos((u + s) / (1 + s) * math.pi / 2)) - c0

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

  def discretize(self, x, t):
    """DDPM chain: x_{i+1} = sqrt(1 - beta_i) x_i + sqrt(beta_i) z, i = round(t (N-1))."""
    i = self.step_index(t).cpu()
    beta = self.discrete_betas[i].to(x.device, x.dtype)
    alpha = self.alphas[i].to(x.device, x.dtype)
    return bcast(torch.sqrt(alpha), x) * x - x, torch.sqrt(beta)


class SubVPSDE(VPSDE):
  """sub-VP SDE (Song et al. 2021, Eq. 12): same drift as VP and
  g = sqrt(beta(t) (1 - exp(-2 int_0^t beta))); the marginal std is 1 - alpha(t)^2.

  It shares VP's discrete DDPM table, which the Langevin corrector's step size uses (the
  reference implementation crashes there because sub-VP lacks that table).
  """

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

  def discretize(self, x, t):
    """Euler-Maruyama discretisation (the paper defines no discrete sub-VP chain)."""
    return SDE.discretize(self, x, t)


class VESDE(_GaussianPrior, SDE):
  """Variance-exploding SDE, the continuous SMLD/NCSN (Song et al. 2021, Eq. 9).

  sigma(t) = sigma_min (sigma_max / sigma_min)^t, f = 0,
  g = sigma(t) sqrt(2 log(sigma_max / sigma_min)). As in the paper's code the marginal std is
  taken to be sigma(t) (the exact one is sqrt(sigma(t)^2 - sigma_min^2)); prior N(0, sigma_max^2).
  """

  def __init__(self, sigma_min=0.01, sigma_max=50.0, N=1000):
    super().__init__(N)
    self.hparams = dict(sigma_min=sigma_min, sigma_max=sigma_max)
    self.sigma_min, self.sigma_max = float(sigma_min), float(sigma_max)
    self.prior_std = self.sigma_max
    self.discrete_sigmas = torch.exp(torch.linspace(
        math.log(self.sigma_min), math.log(self.sigma_max), self.N, dtype=torch.float64))

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

  def discretize(self, x, t):
    """SMLD chain: x_{i+1} = x_i + sqrt(sigma_{i+1}^2 - sigma_i^2) z on the geometric grid."""
    i = self.step_index(t).cpu()
    sigma = self.discrete_sigmas[i]
    prev = torch.where(i == 0, torch.zeros_like(sigma), self.discrete_sigmas[(i - 1).clamp(min=0)])
    G = torch.sqrt(sigma ** 2 - prev ** 2).to(x.device, x.dtype)
    return torch.zeros_like(x), G


SDES = {'vpsde': VPSDE, 'subvpsde': SubVPSDE, 'vesde': VESDE}


def get_sde(config) -> SDE:
  """Build the SDE named by `config.training.sde` from `config.model`'s schedule keys."""
  name = config.training.sde.lower()
  m = config.model
  if name == 'vesde':
    return VESDE(m.sigma_min, m.sigma_max, m.num_scales)
  if name in SDES:
    return SDES[name](m.beta_min, m.beta_max, m.num_scales, m.schedule)
  raise ValueError(f"unknown SDE '{config.training.sde}'; choose one of: {', '.join(SDES)}")
