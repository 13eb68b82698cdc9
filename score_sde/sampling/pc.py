"""Predictor-corrector samplers (Song et al. 2021, Sec. 4.2, Alg. 1-3 and App. G).

The reverse SDE is discretised on the score_sde grid t_j = linspace(T, eps, N) (N = `steps`);
at every t_j the corrector runs `n_steps` Langevin iterations, then the predictor moves to
t_{j+1} (the last predictor step goes from eps to 0). Predictors and correctors are
built once per run and see only `score_fn(x, t)`; everything is rank-agnostic.
"""
from __future__ import annotations

import torch

from score_sde.sdes import SDE, SubVPSDE, VESDE, VPSDE
from score_sde.utils import batch_norm2, bcast, full_t, randn_like


class EulerMaruyamaPredictor:
  """x <- x + [f - g^2 s] dt + g sqrt(|dt|) z with dt < 0 (reverse-time Euler-Maruyama)."""

  def __init__(self, sde: SDE, score_fn):
    self.rsde = sde.reverse(score_fn)

  def __call__(self, x, t, dt, generator):
    drift, g = self.rsde.sde(x, t)
    x_mean = x + drift * dt
    return x_mean + bcast(g, x) * (-dt) ** 0.5 * randn_like(x, generator), x_mean


class ReverseDiffusionPredictor:
  """x <- x - f_i + G_i^2 s + G_i z from the forward chain's `discretize` (Song et al. Eq. 46)."""

  def __init__(self, sde: SDE, score_fn):
    self.rsde = sde.reverse(score_fn)

  def __call__(self, x, t, dt, generator):
    f, G = self.rsde.discretize(x, t)
    x_mean = x - f
    return x_mean + bcast(G, x) * randn_like(x, generator), x_mean


class AncestralPredictor:
  """Ancestral sampling of the discrete chain: DDPM for VP (Ho et al. 2020, Alg. 2 with the
  score in place of -eps/sqrt(1 - abar)), SMLD for VE (Song et al. 2021, Eq. 47)."""

  def __init__(self, sde: SDE, score_fn):
    if isinstance(sde, SubVPSDE) or not isinstance(sde, (VPSDE, VESDE)):
      raise ValueError('the ancestral predictor is defined for VP and VE SDEs only '
                       "(sub-VP has no discrete chain); use 'reverse_diffusion' or 'euler_maruyama'")
    self.sde, self.score_fn = sde, score_fn

  def __call__(self, x, t, dt, generator):
    sde, i = self.sde, self.sde.step_index(t).cpu()
    score = self.score_fn(x, t)
    if isinstance(sde, VESDE):
      sigma = sde.discrete_sigmas[i]
      prev = torch.where(i == 0, torch.zeros_like(sigma), sde.discrete_sigmas[(i - 1).clamp(min=0)])
      var_step = (sigma ** 2 - prev ** 2).to(x)
      std = torch.sqrt(prev ** 2 * (sigma ** 2 - prev ** 2) / sigma ** 2).to(x)
      x_mean = x + score * bcast(var_step, x)
    else:
      beta = sde.discrete_betas[i].to(x)
      x_mean = (x + bcast(beta, x) * score) / bcast(torch.sqrt(1.0 - beta), x)
      std = torch.sqrt(beta)
    return x_mean + bcast(std, x) * randn_like(x, generator), x_mean


class NonePredictor:
  def __init__(self, sde, score_fn):
    pass

  def __call__(self, x, t, dt, generator):
    return x, x


def _langevin_alpha(sde: SDE, t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
  """alpha_i of Song et al. Alg. 4/5: 1 - beta_i for VP and sub-VP (shared DDPM table), 1 for VE."""
  if isinstance(sde, VPSDE):
    return sde.alphas[sde.step_index(t).cpu()].to(like)
  return torch.ones_like(t)


class LangevinCorrector:
  """Langevin MCMC with step 2 alpha (snr ||z|| / ||s||)^2 (Song et al. 2021, Alg. 4).

  As in score_sde, ||z|| and ||s|| are averaged over the batch before the ratio is taken:
  per-sample ratios are unstable in low dimension, where ||s|| can vanish near a mode.
  """

  def __init__(self, sde: SDE, score_fn, snr: float, n_steps: int):
    self.sde, self.score_fn, self.snr, self.n_steps = sde, score_fn, snr, n_steps

  def step_size(self, x, t, grad, noise):
    ratio = self.snr * batch_norm2(noise).mean() / batch_norm2(grad).mean().clamp_min(1e-12)
    return 2 * ratio ** 2 * _langevin_alpha(self.sde, t, x)

  def __call__(self, x, t, generator):
    x_mean = x
    for _ in range(self.n_steps):
      grad = self.score_fn(x, t)
      noise = randn_like(x, generator)
      step = bcast(self.step_size(x, t, grad, noise), x)
      x_mean = x + step * grad
      x = x_mean + torch.sqrt(2 * step) * noise
    return x, x_mean


class AnnealedLangevinCorrector(LangevinCorrector):
  """Annealed Langevin dynamics (Song & Ermon 2019): step 2 alpha (snr sigma(t))^2."""

  def step_size(self, x, t, grad, noise):
    return 2 * (self.snr * self.sde.marginal_std(t)) ** 2 * _langevin_alpha(self.sde, t, x)


class NoneCorrector:
  def __init__(self, sde, score_fn, snr, n_steps):
    self.n_steps = 0

  def __call__(self, x, t, generator):
    return x, x


PREDICTORS = {'euler_maruyama': EulerMaruyamaPredictor, 'reverse_diffusion': ReverseDiffusionPredictor,
              'ancestral': AncestralPredictor, 'none': NonePredictor}
CORRECTORS = {'langevin': LangevinCorrector, 'ald': AnnealedLangevinCorrector, 'none': NoneCorrector}


def _lookup(table: dict, name: str, kind: str):
  key = (name or 'none').lower()
  if key not in table:
    raise ValueError(f"unknown {kind} '{name}'; choose one of: {', '.join(table)}")
  return table[key]


def pc_sample(sde: SDE, score_fn, x: torch.Tensor, *, steps: int | None = None, eps: float = 1e-3,
              denoise: bool = True, generator=None, predictor: str = 'reverse_diffusion',
              corrector: str = 'langevin', snr: float = 0.16, n_steps: int = 1,
              progress=None) -> torch.Tensor:
  """Run Alg. 1 of Song et al. 2021 from x ~ p_T `[B, ...]` down to t = eps.

  Returns the last predictor's noise-free mean if `denoise` (score_sde's "noise_removal"),
  else the last noisy state. `steps` defaults to `sde.N`; the discrete chains used by the
  reverse-diffusion and ancestral predictors are rebuilt with N = steps.
  """
  steps = steps or sde.N
  sde = sde.with_steps(steps)
  predict = _lookup(PREDICTORS, predictor, 'predictor')(sde, score_fn)
  correct = _lookup(CORRECTORS, corrector, 'corrector')(sde, score_fn, snr, n_steps)
  times = torch.linspace(sde.T, eps, steps, dtype=torch.float64).tolist() + [0.0]
  x_mean = x
  for j in (progress(range(steps)) if progress else range(steps)):
    t = full_t(times[j], x.shape[0], x)
    x, x_mean = correct(x, t, generator)
    x, x_mean = predict(x, t, times[j + 1] - times[j], generator)
  return x_mean if denoise else x
