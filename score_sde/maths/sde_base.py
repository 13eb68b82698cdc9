"""The abstract forward SDE, its reverse-time SDE / probability-flow ODE, and the discrete chain
interface every sampler asks for (index <-> time, kernel, one step). Concrete SDEs: `sdes.py`."""
from __future__ import annotations

import abc
import functools
import math

import torch

from score_sde.maths.chain import DiscreteChain
from score_sde.maths.utils import bcast, cached_to, noisy


class SDE(abc.ABC):
  """Abstract forward SDE on t in [0, T] with N discretisation steps."""

  T: float = 1.0
  name: str = ''   # key in sdes.SDES

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

  def perturb(self, x0: torch.Tensor, t: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """x_t = alpha(t) x0 + sigma(t) z `[B, ...]`, a draw of the perturbation kernel p_0t."""
    return noisy(self.mean_coeff(t), self.marginal_std(t), x0, z)

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

  def discretize(self, x: torch.Tensor, t: torch.Tensor, dt: float | None = None):
    """One step of the discrete chain x_{i+1} = x_i + f_i + G_i z_i (Song et al. 2021, Eq. 45).

    dt=None: the SDE's own N-step chain (`chain_step`), or Euler-Maruyama with dt = T/N for an
    SDE without one. dt > 0: the exact step from t - dt to t. Returns f shaped like x and G `[B]`.
    """
    if dt is None and self.chain is None:
      dt = self.T / self.N
      drift, diffusion = self.sde(x, t)
      return drift * dt, diffusion * math.sqrt(dt)
    a, g2, _ = self.chain_step(t.to(x.dtype), dt)
    return bcast(a, x) * x - x, torch.sqrt(g2)

  def reverse(self, score_fn, probability_flow: bool = False) -> 'ReverseSDE':
    """The reverse-time SDE (Anderson 1982) or the probability-flow ODE (Song et al. Eq. 13)."""
    return ReverseSDE(self, score_fn, probability_flow)

  def index_label(self, t: torch.Tensor) -> torch.Tensor:
    """The integer label a discrete-time network was trained with at time t (the chain index)."""
    return self.index_of_time(t)

  # -- the discrete chain: one index <-> time mapping, kernel and step ------------------------
  def time_of_index(self, i):
    """t_i = i T / (N - 1): the time of chain index i (int, float or tensor). On this grid
    SMLD's geometric sigmas equal the continuous sigma(t) exactly."""
    return i * self.T / (self.N - 1)

  def index_of_time(self, t: torch.Tensor) -> torch.Tensor:
    """Chain index i = floor(t (N-1) / T) at times t `[B]` (long `[B]`), score_sde's mapping;
    `index_of_time(time_of_index(i)) == i` for every SDE.

    On the PC grid t_j = linspace(T, eps, N)[j] this is exactly N - 1 - j; a 1e-4 tolerance
    absorbs float32 rounding at the grid points.
    """
    return torch.floor(t * (self.N - 1) / self.T + 1e-4).long().clamp(0, self.N - 1)

  @functools.cached_property
  def chain(self) -> 'DiscreteChain | None':
    """The SDE's discrete chain (`score_sde.maths.chain`: DDPM for VP, SMLD for VE), None for an
    SDE without one (sub-VP)."""
    return self._make_chain()

  def _make_chain(self) -> 'DiscreteChain | None':
    return None

  @property
  def has_discrete_chain(self) -> bool:
    """`sde.chain is not None`."""
    return self.chain is not None

  def table_on(self, name: str, device) -> torch.Tensor:
    """The float64 table attribute `name` (e.g. DDPM's alphas_cumprod) on `device`, copied once
    per device, so that indexing it with device indices needs no host round trip."""
    return cached_to(self, name, device)

  def discrete_kernel(self, i: torch.Tensor):
    """`sde.chain.kernel(i)`: (alpha_i, sigma_i) float64 `[B]` of the chain's kernel
    x_i = alpha_i x_0 + sigma_i z (i = -1 is the data: (1, 0)); None when the SDE has no chain."""
    return None if self.chain is None else self.chain.kernel(i)

  def exact_kernel_var(self, t: torch.Tensor) -> torch.Tensor:
    """The exact variance of x_t given x_0, `[B]` (sigma(t)^2 unless the SDE approximates it)."""
    return self.marginal_std(t) ** 2

  def chain_step(self, t: torch.Tensor, dt: float | None = None):
    """(a, G^2, r) `[B]` of one forward step x_t = a x_prev + G z into time t, where
    r = sigma_prev^2 / sigma_t^2 (the posterior variance is r G^2).

    dt=None: the SDE's own N-step chain at index `index_of_time(t)` (DDPM / SMLD tables; needs
    `discrete_kernel`). dt > 0: the exact Gaussian step of the continuous kernel from t - dt to
    t (valid for any number of steps, e.g. a PC sampler run with fewer steps than N).
    """
    if dt is None:
      if self.chain is None:
        raise ValueError(f'{type(self).__name__} has no discrete chain')
      return tuple(v.to(t.device, t.dtype) for v in self.chain.step(self.index_of_time(t)))
    t64 = t.double()
    s = (t64 - dt).clamp_min(0.0)
    a_t, s_t = self.mean_coeff(t64), self.marginal_std(t64)
    a_s, s_s = self.mean_coeff(s), self.marginal_std(s)
    a = a_t / a_s
    g2 = (s_t ** 2 - a ** 2 * s_s ** 2).clamp_min(0.0)
    r = s_s ** 2 / s_t ** 2
    return tuple(v.to(t.device, t.dtype) for v in (a, g2, r))

  def with_steps(self, N: int) -> 'SDE':
    """The same SDE with an N-step discrete chain."""
    return self if int(N) == self.N else type(self)(**{**self.hparams, 'N': int(N)})

  def describe(self) -> dict:
    """`{'name': key of SDES, **hyper-parameters, 'N': N}`: what a checkpoint records."""
    return {'name': self.name, **self.hparams, 'N': self.N}

  def score_sde_conventions(self, continuous: bool) -> tuple[str, str]:
    """(parameterization, time label) of score_sde_pytorch's networks for this SDE
    (its `get_score_fn`): VP-type networks predict eps, labelled 999 t (index when discrete)."""
    return 'eps', ('t999' if continuous else 'index')


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

  def discretize(self, x: torch.Tensor, t: torch.Tensor, dt: float | None = None):
    """Reverse discrete step: rev_f = f - G^2 s (x 1/2), rev_G = G (0 for the ODE)."""
    f, G = self.forward.discretize(x, t, dt)
    return self._combine(x, t, f, G)
