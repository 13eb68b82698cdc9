"""Predictor-corrector samplers (Song et al. 2021, Sec. 4.2, Alg. 1-3 and App. G).

The reverse SDE is discretised on the score_sde grid t_j = linspace(T, eps, N) (N = `steps`,
default the SDE's N); at every t_j the corrector runs `n_steps` Langevin iterations, then the
predictor moves to t_{j+1} (the last predictor step goes from eps to 0): `steps` steps.
Predictors and correctors are built once per run and see only `score_fn(x, t)`; everything is
rank-agnostic.
"""
from __future__ import annotations

import torch

from score_sde.sampling.common import LatestX0, Step, check_times
from score_sde.sampling.grids import uniform_grid
from score_sde.sampling.spec import SolverSpec
from score_sde.maths.sdes import SDE
from score_sde.maths.utils import batch_norm2, bcast, full_t, randn_like


class EulerMaruyamaPredictor:
  """x <- x + [f - g^2 s] dt + g sqrt(|dt|) z with dt < 0 (reverse-time Euler-Maruyama)."""

  def __init__(self, sde: SDE, score_fn, on_chain: bool = True, probability_flow: bool = False):
    self.rsde = sde.reverse(score_fn, probability_flow)

  def __call__(self, x, t, dt, generator):
    drift, g = self.rsde.sde(x, t)
    x_mean = x + drift * dt
    return x_mean + bcast(g, x) * (-dt) ** 0.5 * randn_like(x, generator), x_mean


class ReverseDiffusionPredictor:
  """x <- x - f_i + G_i^2 s + G_i z from the forward chain's `discretize` (Song et al. Eq. 46).

  `on_chain`: the grid is the SDE's own N-step chain (its DDPM / SMLD tables, as score_sde);
  otherwise each step uses the exact forward step over the grid interval (any step count)."""

  def __init__(self, sde: SDE, score_fn, on_chain: bool = True, probability_flow: bool = False):
    self.rsde, self.on_chain = sde.reverse(score_fn, probability_flow), on_chain

  def __call__(self, x, t, dt, generator):
    f, G = self.rsde.discretize(x, t, None if self.on_chain else -dt)
    x_mean = x - f
    return x_mean + bcast(G, x) * randn_like(x, generator), x_mean


class AncestralPredictor:
  """Ancestral sampling of the discrete chain x_t = a x_prev + G z: x_mean = (x + G^2 s) / a,
  noise G z for DDPM (VP; Ho et al. 2020, Alg. 2 with the score in place of -eps/sqrt(1 - abar))
  or the posterior's sqrt(r) G z for SMLD (VE; Song et al. 2021, Eq. 47), as `sde.ancestral_variance`
  says. Needs an SDE with a discrete chain."""

  def __init__(self, sde: SDE, score_fn, on_chain: bool = True, probability_flow: bool = False):
    if probability_flow:
      raise ValueError("the ancestral predictor has no probability-flow form; use 'reverse_diffusion'")
    if sde.chain is None:
      raise ValueError(f'the ancestral predictor needs a discrete chain and {type(sde).__name__} '
                       "has none; use 'reverse_diffusion' or 'euler_maruyama'")
    self.sde, self.score_fn, self.on_chain = sde, score_fn, on_chain

  def __call__(self, x, t, dt, generator):
    a, g2, r = self.sde.chain_step(t, None if self.on_chain else -dt)
    x_mean = (x + bcast(g2, x) * self.score_fn(x, t)) / bcast(a, x)
    var = g2 * r if self.sde.ancestral_variance == 'small' else g2
    return x_mean + bcast(torch.sqrt(var), x) * randn_like(x, generator), x_mean


class NonePredictor:
  def __init__(self, sde, score_fn, on_chain: bool = True, probability_flow: bool = False):
    pass

  def __call__(self, x, t, dt, generator):
    return x, x


def _langevin_alpha(sde: SDE, t: torch.Tensor, on_chain: bool, dt: float) -> torch.Tensor:
  """alpha_i of Song et al. Alg. 4/5: a_i^2 of the chain step into t, i.e. 1 - beta_i for VP
  (DDPM table) and 1 for VE; the exact step over T/N for an SDE without a chain (sub-VP)."""
  if not on_chain:
    return sde.chain_step(t, dt)[0] ** 2
  return sde.chain_step(t, None if sde.chain is not None else sde.T / sde.N)[0] ** 2


class LangevinCorrector:
  """Langevin MCMC with step 2 alpha (snr ||z|| / ||s||)^2 (Song et al. 2021, Alg. 4).

  As in score_sde, ||z|| and ||s|| are averaged over the batch before the ratio is taken:
  per-sample ratios are unstable in low dimension, where ||s|| can vanish near a mode.
  """

  def __init__(self, sde: SDE, score_fn, snr: float, n_steps: int, on_chain: bool = True,
               grid_dt: float = 0.0):
    self.sde, self.score_fn, self.snr, self.n_steps = sde, score_fn, snr, n_steps
    self.on_chain, self.grid_dt = on_chain, grid_dt

  def alpha(self, t):
    return _langevin_alpha(self.sde, t, self.on_chain, self.grid_dt)

  def step_size(self, x, t, grad, noise):
    ratio = self.snr * batch_norm2(noise).mean() / batch_norm2(grad).mean().clamp_min(1e-12)
    return 2 * ratio ** 2 * self.alpha(t)

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
    return 2 * (self.snr * self.sde.marginal_std(t)) ** 2 * self.alpha(t)


class NoneCorrector:
  def __init__(self, sde, score_fn, snr, n_steps, on_chain=True, grid_dt=0.0):
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


def pc_grid(sde: SDE, steps: int, eps: float) -> list[float]:
  """score_sde's PC grid: linspace(T, eps, steps) then 0 (the last predictor step), steps + 1 times."""
  return uniform_grid(sde, steps - 1, eps) + [0.0]


def build_pc(sde: SDE, score_fn, steps: int, eps: float, predictor: str, corrector: str,
             snr: float, n_steps: int, probability_flow: bool = False, ts=None):
  """(predict, correct, times) for `steps` PC steps on `pc_grid`, or on explicit times `ts`.

  On score_sde's own grid of N steps (`pc_grid(sde, sde.N, eps)`, to 1e-12) the predictor and
  the corrector's alpha_i use the SDE's discrete chain, exactly as score_sde; otherwise the
  exact Gaussian step over each grid interval, so that any step count gives a valid chain (an
  N-step DDPM table with N < beta_max has beta > 1). A one-step grid's corrector uses T - eps.
  """
  times = pc_grid(sde, steps, eps) if ts is None else check_times(sde, ts, allow_zero_end=True)
  steps = len(times) - 1
  if steps == sde.N:
    chain = pc_grid(sde, sde.N, eps)
    if max(abs(a - b) for a, b in zip(times, chain)) < 1e-12:
      times = chain
  on_chain = steps == sde.N and times == pc_grid(sde, steps, eps)
  grid_dt = times[0] - times[1] if steps > 1 else sde.T - eps
  predict = _lookup(PREDICTORS, predictor, 'predictor')(sde, score_fn, on_chain, probability_flow)
  correct = _lookup(CORRECTORS, corrector, 'corrector')(sde, score_fn, snr, n_steps, on_chain, grid_dt)
  return predict, correct, times


def pc_sample(sde: SDE, score_fn, x: torch.Tensor, *, steps: int | None = None, eps: float = 1e-3,
              denoise: bool = True, generator=None, predictor: str = 'reverse_diffusion',
              corrector: str = 'langevin', snr: float = 0.16, n_steps: int = 1,
              probability_flow: bool = False, ts=None, callback=None, progress=None) -> torch.Tensor:
  """Run Alg. 1 of Song et al. 2021 from x ~ p_T `[B, ...]` down to t = eps.

  `probability_flow`: the predictor integrates the probability-flow ODE (no noise), as
  score_sde's `sampling.probability_flow`; the corrector is unchanged.

  `ts`: the decreasing times (steps + 1 of them, the last may be 0; default `pc_grid` of
  `steps`, default N): the corrector runs at ts[j], the predictor steps ts[j] -> ts[j + 1].
  `callback(Step)` after predictor step i (1..steps), at t = ts[i] (see SPEC.denoised).

  Returns the last predictor's noise-free mean if `denoise` (score_sde's "noise_removal"),
  else the last noisy state (see `build_pc` for step counts other than N).
  """
  ts = SPEC.times(sde, steps, eps, ts)
  latest = LatestX0(sde, score_fn) if callback is not None else score_fn
  predict, correct, times = build_pc(sde, latest, len(ts) - 1, eps, predictor, corrector, snr,
                                     n_steps, probability_flow, ts)
  steps = len(times) - 1
  x_mean = x
  for j in (progress(range(steps)) if progress else range(steps)):
    t = full_t(times[j], x.shape[0], x)
    x, x_mean = correct(x, t, generator)
    x, x_mean = predict(x, t, times[j + 1] - times[j], generator)
    if callback is not None:
      callback(Step(j + 1, times[j + 1], x, latest.denoised()))
  return x_mean if denoise else x


def _nfe(steps: int, o, denoise: bool) -> int:
  """One score evaluation per predictor step and n_steps per corrector visit ('none': 0)."""
  per_step = ((o.predictor or 'none').lower() != 'none') + o.n_steps * ((o.corrector or 'none').lower() != 'none')
  return steps * per_step


SPEC = SolverSpec(
    'pc', pc_sample, grid=lambda sde, steps, eps, o: pc_grid(sde, steps, eps),
    grid_doc="score_sde's: linspace(T, eps, steps) then 0 (steps predictor steps, the last eps -> 0)",
    nfe=_nfe, denoised="x0 prediction (Tweedie) of the step's latest score evaluation; None if it made none",
    uses=('eps', 'denoise', 'generator'), zero_end=True,
    choices={'predictor': tuple(PREDICTORS), 'corrector': tuple(CORRECTORS)},
    stochastic=lambda o: (o.corrector or 'none').lower() != 'none' or (
        (o.predictor or 'none').lower() != 'none' and not o.probability_flow))
