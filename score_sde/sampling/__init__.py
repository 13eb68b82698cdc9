"""`sample(sde, score_fn, shape, solver, ...)`: every sampler behind one interface.

`SOLVERS` maps a solver name to `fn(sde, score_fn, x, *, steps, eps, denoise, generator,
progress, **options) -> x0`; each takes any `score_fn(x, t)` and runs on x's device.
"""
from __future__ import annotations

import inspect
import numbers

import torch

from score_sde.sampling.common import CountingScore, SampleResult, check_options, check_steps_and_shape
from score_sde.sampling.ddim import ddim_sample, ddpm_sample
from score_sde.sampling.dpm_solver import dpm_solver_sample
from score_sde.sampling.heun import edm_sample
from score_sde.sampling.ode import ode_sample
from score_sde.sampling import optimized_grid as _optimized  # the module keeps its name
from score_sde.sampling.optimized_grid import TUNABLE, GridTuning
from score_sde.sampling.pc import CORRECTORS, PREDICTORS, pc_sample
from score_sde.sampling.sde_solver import sde_sample
from score_sde.sampling.unipc import unipc_sample
from score_sde.sdes import SDE

SOLVERS = {
    'pc': pc_sample,
    'ode': ode_sample,
    'ddpm': ddpm_sample,
    'ddim': ddim_sample,
    'heun': edm_sample,
    'dpm_solver': dpm_solver_sample,
    'sde': sde_sample,
    'unipc': unipc_sample,
}

_COMMON = ('steps', 'eps', 'denoise', 'generator', 'progress')
# solvers that take callback(i, t, x, denoised) and explicit times ts (ddpm / ddim: times of
# their chain's table indices)
WITH_CALLBACK = ('dpm_solver', 'unipc', 'heun', 'pc', 'sde', 'ode', 'ddpm', 'ddim')


def solver_options(solver: str) -> tuple[str, ...]:
  """The solver-specific keyword options that `solver` accepts."""
  params = inspect.signature(SOLVERS[solver]).parameters
  return tuple(p for p in params if p not in _COMMON + ('sde', 'score_fn', 'x'))


def sample(sde: SDE, score_fn, shape, solver: str = 'pc', *, steps: int | None = None,
           generator: torch.Generator | None = None, device=None, eps: float = 1e-3,
           denoise: bool = True, x_init: torch.Tensor | None = None, progress=None,
           return_trajectory: bool = False, grid_tuning: GridTuning | None = None,
           **options) -> SampleResult:
  """Draw samples by integrating the reverse SDE / probability-flow ODE from T to eps.

  Args:
    sde: the forward SDE.
    score_fn: `score_fn(x [B, ...], t [B]) -> [B, ...]`, network-backed or analytic.
    shape: `[B, ...]` of the samples.
    solver: a key of `SOLVERS`.
    steps: number of steps (solver-specific default, usually `sde.N`).
    generator: a `torch.Generator` for reproducible noise (its device is used for draws).
    device: where x lives (default: x_init's, else the generator's, else CPU).
    eps: the final time (Song et al. use 1e-3 for sampling).
    denoise: finish with the noise-free mean (Tweedie / score_sde's noise removal).
    x_init: start from this x_T instead of a prior draw.
    progress: optional wrapper such as `tqdm.tqdm` for step loops.
    return_trajectory: keep the state after every step in `.trajectory` (solvers in
      WITH_CALLBACK, which also take `callback(i, t, x, denoised)` and explicit times `ts`).
    grid_tuning: how `grid='optimized'` (dpm_solver, unipc) is tuned and cached (cache key,
      JSON cache folder, pilot batch; see `score_sde.sampling.optimized_grid`). The tuning
      runs `score_fn` on its own pilot batch, outside the NFE count; a score_fn bound to
      per-sample labels needs ts=optimized_grid(...) computed with a pilot-sized one instead.
    options: solver-specific keywords (see `solver_options(solver)`).
  Returns:
    SampleResult with `.x` `[B, ...]`, `.nfe` and `.trajectory` (a list, or None).
  Raises:
    ValueError (one line) for a bad input: a batch of 0 or a size < 1 in `shape`, steps < 1,
    eps outside [0, T), explicit `ts` that are not finite and strictly decreasing within (0, T],
    a score_fn whose output does not have x's shape (checked on its first evaluation).
  """
  key = solver.lower()
  if key not in SOLVERS:
    raise ValueError(f"unknown solver '{solver}'; choose one of: {', '.join(SOLVERS)}")
  check_options(key, options, solver_options(key))
  check_steps_and_shape(steps, shape if x_init is None else None)
  if isinstance(eps, bool) or not (isinstance(eps, numbers.Real) and 0 <= eps < sde.T):
    raise ValueError(f'eps = {eps!r}: must be a number in [0, T = {sde.T})')
  if x_init is not None:
    x = x_init.to(device) if device is not None else x_init
    check_steps_and_shape(None, x.shape)
  else:
    device = device or (generator.device if generator is not None else 'cpu')
    x = sde.prior_sampling(tuple(shape), generator, device).to(device)
  if options.get('grid') == 'optimized' and options.get('ts') is None and key in TUNABLE:
    with torch.no_grad():
      ts = _optimized.optimized_grid(sde, score_fn, key, steps or 20, eps, tuple(x.shape[1:]),
                                     options=options, tuning=grid_tuning, device=x.device, dtype=x.dtype)
    options = {**options, 'grid': 'logsnr', 'ts': ts}
  trajectory = None
  if return_trajectory:
    if key not in WITH_CALLBACK:
      raise ValueError(f"return_trajectory needs one of: {', '.join(WITH_CALLBACK)}; got '{solver}'")
    trajectory, user_callback = [x.clone()], options.get('callback')

    def keep(i, t, state, denoised):
      trajectory.append(state.clone())
      if user_callback is not None:
        user_callback(i, t, state, denoised)
    options = {**options, 'callback': keep}
  counter = CountingScore(score_fn)
  with torch.no_grad():
    x = SOLVERS[key](sde, counter, x, steps=steps, eps=eps, denoise=denoise,
                     generator=generator, progress=progress, **options)
  return SampleResult(x=x, nfe=counter.nfe, trajectory=trajectory)


__all__ = ['sample', 'SampleResult', 'SOLVERS', 'PREDICTORS', 'CORRECTORS', 'solver_options', 'GridTuning']
