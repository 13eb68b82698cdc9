"""iPNDM (Zhang & Chen 2023, "Fast Sampling of Diffusion Models with Exponential Integrator",
the improved pseudo-numerical multistep method of their DEIS study; as run by Zhou et al. 2024,
AMED, and Zheng et al. 2023, DPM-Solver-v3), with an optional analytical first step (Dockhorn
et al. 2022, GENIE, "AFS").

The probability-flow ODE in EDM's variables (Karras et al. 2022) x~ = x / alpha(t) and
sigma_e = sigma(t) / alpha(t) = exp(-lambda) is dx~/dsigma_e = eps(x~) = (x~ - D(x~)) / sigma_e,
D the x0 prediction (Tweedie, from the score). Linear multistep (Adams-Bashforth) in sigma_e:
  x~_{i+1} = x~_i + (sigma_{i+1} - sigma_i) sum_j c_j eps_{i-j},
with the lower orders while the history fills up (warm-up: 1, 2, ... up to `max_order`).
`coefficients='fixed'` are the constant-step AB weights of iPNDM ([1], [3, -1]/2,
[23, -16, 5]/12, [55, -59, 37, -9]/24), of order max_order on a grid uniform in sigma_e and
second order on the log-SNR grid (steps that vary smoothly); 'variable' integrates the
Lagrange interpolant of the history over the actual steps (iPNDM_v), of order max_order on any
grid (from t = T, where x~ is nearly linear in sigma_e, the low-order warm-up costs little;
tests/test_few_step.py measures both). At 4-10 NFE the fixed weights are far better (on the 16-d benchmark mixture the variable
ones extrapolate over steps whose length grows geometrically in sigma_e), and max_order 3 beat
the paper's 4 there (benchmarks/results/samplers_few_step.md): the defaults.

Analytical first step (`first_step='analytic'`): the first evaluation, at t = T, is replaced by
the x0 prediction of Gaussian data N(data_mean, data_var) in closed form: the exact score of
x_t = alpha x0 + sigma z is s = -(x - alpha m) / (alpha^2 v + v_k(t)) (v_k: the kernel's exact
variance), and D = (x + sigma^2 s) / alpha; for VP at T it is m + alpha v (x - alpha m) /
(alpha^2 v + sigma^2) ~ m (alpha(T) ~ 7e-3): near exact for any data whose mean and covariance
are m and v, and one NFE saved. data_var: a float, a tensor of x's per-sample shape (diagonal),
or `[D, D]` (full covariance, for data `[B, D]`).
NFE = steps (- 1 with the analytical first step) (+ 1 for the final Tweedie step if `denoise`).
"""
from __future__ import annotations

import torch

from score_sde.maths.conventions import x0_from_score
from score_sde.sampling.common import Step, tweedie_denoise
from score_sde.sampling.grids import GRIDS, KernelAt, time_grid
from score_sde.sampling.spec import SolverSpec
from score_sde.maths.sdes import SDE
from score_sde.maths.utils import full_t

ORDERS = (1, 2, 3, 4)
COEFFICIENTS = ('fixed', 'variable')
FIRST_STEPS = ('model', 'analytic')
FIXED = ((1.0,), (1.5, -0.5), (23 / 12, -16 / 12, 5 / 12), (55 / 24, -59 / 24, 37 / 24, -9 / 24))
_GL_NODES = (-0.8611363115940526, -0.3399810435848563, 0.3399810435848563, 0.8611363115940526)
_GL_WEIGHTS = (0.3478548451374538, 0.6521451548625461, 0.6521451548625461, 0.3478548451374538)


def ab_coefficients(nodes: list[float], target: float) -> list[float]:
  """Variable-step Adams-Bashforth weights c_j: (1/h) * integral over [nodes[0], target] of
  the Lagrange basis polynomial of nodes[j] (nodes: the newest first; h = target - nodes[0]).
  4-point Gauss-Legendre quadrature: exact for up to 4 nodes."""
  a, h = nodes[0], target - nodes[0]
  out = []
  for j, nj in enumerate(nodes):
    total = 0.0
    for z, w in zip(_GL_NODES, _GL_WEIGHTS):
      s = a + 0.5 * h * (z + 1.0)
      basis = 1.0
      for m, nm in enumerate(nodes):
        if m != j:
          basis *= (s - nm) / (nj - nm)
      total += 0.5 * w * basis
    out.append(total)
  return out


def gaussian_x0(sde: SDE, x: torch.Tensor, t: float, data_mean=0.0, data_var=1.0) -> torch.Tensor:
  """The x0 prediction `[B, ...]` at the float time t of Gaussian data N(data_mean, data_var)
  from x `[B, ...]`, in closed form (see the module docstring): exact for such data."""
  tt = full_t(t, x.shape[0], x)
  alpha, std = sde.mean_coeff(tt)[0], sde.marginal_std(tt)[0]
  v_k = sde.exact_kernel_var(tt)[0]
  m = torch.as_tensor(data_mean, dtype=x.dtype, device=x.device)
  v = torch.as_tensor(data_var, dtype=x.dtype, device=x.device)
  try:
    r = x - alpha * m
    if v.ndim == 2 and x.ndim == 2 and v.shape[0] == v.shape[1] == x.shape[1] and v.shape[0] > 1:
      cov = alpha ** 2 * v + v_k * torch.eye(v.shape[0], dtype=x.dtype, device=x.device)
      score = -torch.linalg.solve(cov, r.T).T
    else:
      score = (-r / (alpha ** 2 * v + v_k)).expand_as(x)
  except RuntimeError:
    raise ValueError(f'data_mean {tuple(m.shape)} / data_var {tuple(v.shape)} do not fit samples of shape '
                     f'{tuple(x.shape[1:])}: give floats, tensors of that shape, or data_var [D, D]') from None
  return x0_from_score(x, score, alpha, std)


def _eps(x_tilde, denoised, sigma_e):
  return (x_tilde - denoised) / sigma_e


def ipndm_sample(sde: SDE, score_fn, x: torch.Tensor, *, steps: int | None = None, eps: float = 1e-3,
                 denoise: bool = True, max_order: int = 3, coefficients: str = 'fixed',
                 grid: str = 'logsnr', first_step: str = 'model', data_mean: float | torch.Tensor = 0.0,
                 data_var: float | torch.Tensor = 1.0, ts=None, callback=None, progress=None) -> torch.Tensor:
  """iPNDM from x_T `[B, ...]` at ts[0] over the decreasing times `ts` (default the named `grid`
  of `steps`, default 10, intervals to eps), Adams-Bashforth of order up to `max_order` (1-4)
  in sigma_e with lower-order warm-up, `coefficients` fixed (iPNDM) or variable (iPNDM_v);
  `first_step` 'analytic' replaces the model at ts[0] by the Gaussian closed form of
  (data_mean, data_var) (`gaussian_x0`). Then Tweedie at ts[-1] if `denoise`. `callback(Step)`
  after each step (see SPEC.denoised). Deterministic: it takes no generator."""
  if max_order not in ORDERS:
    raise ValueError(f'max_order must be 1, 2, 3 or 4, got {max_order!r}')
  if coefficients not in COEFFICIENTS:
    raise ValueError(f"unknown coefficients '{coefficients}'; choose one of: {', '.join(COEFFICIENTS)}")
  if first_step not in FIRST_STEPS:
    raise ValueError(f"unknown first_step '{first_step}'; choose one of: {', '.join(FIRST_STEPS)}")
  ts = SPEC.times(sde, steps, eps, ts, SPEC.options(grid=grid))
  steps = len(ts) - 1
  k = KernelAt(sde)
  alphas, sigmas = k.alpha(list(ts)), k.sigma(list(ts))
  sig_e = [s / a for s, a in zip(sigmas, alphas)]
  if first_step == 'analytic':
    d = gaussian_x0(sde, x, ts[0], data_mean, data_var)
  else:
    d = tweedie_denoise(sde, score_fn, x, ts[0])
  epss = [_eps(x / alphas[0], d, sig_e[0])]
  idx = range(1, steps + 1)
  for i in (progress(idx) if progress else idx):
    order = min(max_order, len(epss))
    if coefficients == 'fixed':
      c = FIXED[order - 1]
    else:
      c = ab_coefficients(sig_e[i - order:i][::-1], sig_e[i])
    slope = sum(cj * e for cj, e in zip(c, epss[::-1]))
    x = alphas[i] * (x / alphas[i - 1] + (sig_e[i] - sig_e[i - 1]) * slope)
    d = None
    if i < steps:
      d = tweedie_denoise(sde, score_fn, x, ts[i])
      epss = (epss + [_eps(x / alphas[i], d, sig_e[i])])[-max_order:]
    if callback is not None:
      callback(Step(i, ts[i], x, d))
  return tweedie_denoise(sde, score_fn, x, ts[-1]) if denoise else x


SPEC = SolverSpec(
    'ipndm', ipndm_sample, grid=lambda sde, steps, eps, o: time_grid(sde, steps, eps, o.grid),
    default_steps=10, grid_doc='the named `grid` (logsnr, time_uniform, karras) from T to eps, or optimized',
    nfe=lambda steps, o, denoise: steps - (o.first_step == 'analytic') + denoise, uses=('denoise',),
    denoised="x0 prediction at the step's end t_i (None at the last step)", stochastic=lambda o: False,
    tunable=True, choices={'max_order': ORDERS, 'coefficients': COEFFICIENTS, 'grid': GRIDS + ('optimized',),
                           'first_step': FIRST_STEPS})


__all__ = ['ipndm_sample', 'gaussian_x0', 'ab_coefficients', 'SPEC', 'ORDERS', 'COEFFICIENTS', 'FIRST_STEPS']
