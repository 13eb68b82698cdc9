"""`sample(sde, score_fn, shape, solver, ...)`: every sampler behind one interface.

Each solver is declared once, by the `SolverSpec` next to its function (`sampling.spec`), and
registered below with one line; `SOLVERS` maps a name to the function, `solver_spec(name)` to
the spec. `sample` resolves the times the solver walks (`steps`, a named or optimized `grid`,
or explicit `ts`) in one place, `resolve_times`, and hands the solver `ts`; each solver takes
any `score_fn(x, t)` and runs on x's device.
"""
from __future__ import annotations

import numbers

import torch

from score_sde.sampling import ddim, dpm_solver, heun, ode, pc, sde_solver, unipc
from score_sde.sampling import ipndm
from score_sde.sampling import optimized_grid as _optimized  # the module keeps its name
from score_sde.sampling.common import CountingScore, SampleResult, Step, check_steps_and_shape, step_callback
from score_sde.sampling.optimized_grid import GridTuning
from score_sde.sampling.pc import CORRECTORS, PREDICTORS
from score_sde.sampling.spec import RegistryView, SolverSpec, register, solver_spec, unregister
from score_sde.maths.conventions import ScoreFn
from score_sde.maths.sdes import SDE

register(pc.SPEC)
register(ode.SPEC)
register(ddim.DDPM_SPEC)
register(ddim.DDIM_SPEC)
register(heun.SPEC)
register(dpm_solver.SPEC)
register(sde_solver.SPEC)
register(unipc.SPEC)
register(ipndm.SPEC)

SOLVERS = RegistryView(lambda spec: spec.fn)  # {name: solver function}, live


def solver_options(solver: str) -> tuple[str, ...]:
  """The solver-specific keyword options that `solver` accepts (its options, ts, callback)."""
  return solver_spec(solver).option_names + ('ts', 'callback')


def resolve_times(sde: SDE, score_fn: ScoreFn, solver: str, shape, *, steps: int | None = None,
                  eps: float = 1e-3, ts=None, tuning: GridTuning | None = None, device=None,
                  dtype=torch.float32, **options) -> list[float]:
  """The times `[T, ..., end]` (steps + 1 floats) that `solver` walks: explicit `ts` (checked),
  the optimized grid (`grid='optimized'`, tuned with `score_fn` on data of per-sample `shape`
  and cached as `tuning` says; `optimized_grid`), or the solver's own grid of `steps`
  (default: its spec's) down to eps."""
  spec = solver_spec(solver)
  if ts is None and options.get('grid') == 'optimized' and spec.tunable:
    with torch.no_grad():
      return _optimized.optimized_grid(sde, score_fn, spec.name, spec.steps(sde, steps), eps, tuple(shape),
                                       options=options, tuning=tuning, device=device, dtype=dtype)
  return spec.times(sde, steps, eps, ts, spec.parse(options))


def sample(sde: SDE, score_fn: ScoreFn, shape, solver: str = 'pc', *, steps: int | None = None,
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
    steps: number of solver steps (default: the solver's, `solver_spec(solver).default_steps`,
      the SDE's N if None); the spec's `grid_doc` says which grid they walk.
    generator: a `torch.Generator` for reproducible noise (its device is used for draws).
    device: where x lives (default: x_init's, else the generator's, else CPU).
    eps: the final time (Song et al. use 1e-3 for sampling); the chain solvers ddpm / ddim
      end at the data instead.
    denoise: finish with the noise-free mean (Tweedie / score_sde's noise removal); not used
      by ddpm / ddim, whose last step returns the x0 prediction.
    x_init: start from this x_T instead of a prior draw.
    progress: optional wrapper such as `tqdm.tqdm` for step loops.
    return_trajectory: keep the state after every step in `.trajectory`.
    grid_tuning: how `grid='optimized'` (solvers with a tunable spec: dpm_solver, unipc) is
      tuned and cached (cache key, JSON cache folder, pilot batch; see
      `score_sde.sampling.optimized_grid`). The tuning runs `score_fn` on its own pilot batch,
      outside the NFE count; a score_fn bound to per-sample labels needs
      ts=resolve_times(...) computed with a pilot-sized one instead.
    options: the solver's options (`solver_options(solver)`), and `ts` (explicit decreasing
      times, x at ts[0]) and `callback` (called after every step with a `Step(i, t, x,
      denoised)` record, or with its four fields if it takes more than one argument).
  Returns:
    SampleResult with `.x` `[B, ...]`, `.nfe` and `.trajectory` (a list, or None).
  Raises:
    ValueError (one line) for a bad input: an unknown solver or option, a batch of 0 or a size
    < 1 in `shape`, steps < 1, eps outside [0, T), explicit `ts` that are not finite and
    strictly decreasing within (0, T], a score_fn whose output does not have x's shape
    (checked on its first evaluation).
  """
  spec = solver_spec(solver)
  opts = spec.parse(options)
  check_steps_and_shape(steps, shape if x_init is None else None)
  if isinstance(eps, bool) or not (isinstance(eps, numbers.Real) and 0 <= eps < sde.T):
    raise ValueError(f'eps = {eps!r}: must be a number in [0, T = {sde.T})')
  if x_init is not None:
    x = x_init.to(device) if device is not None else x_init
    check_steps_and_shape(None, x.shape)
  else:
    device = device or (generator.device if generator is not None else 'cpu')
    x = sde.prior_sampling(tuple(shape), generator, device).to(device)
  grid_options = {k: v for k, v in options.items() if k != 'callback'}
  ts = resolve_times(sde, score_fn, spec.name, x.shape[1:], steps=steps, eps=eps, tuning=grid_tuning,
                     device=x.device, dtype=x.dtype, **grid_options)
  callback, trajectory = step_callback(options.get('callback')), None
  if return_trajectory:
    trajectory, user_callback = [x.clone()], callback

    def callback(step: Step):
      trajectory.append(step.x.clone())
      if user_callback is not None:
        user_callback(step)
  counter = CountingScore(score_fn)
  common = spec.common(steps=spec.steps(sde, steps), eps=eps, denoise=denoise, generator=generator)
  fields = {name: getattr(opts, name) for name in spec.option_names}
  with torch.no_grad():
    x = spec.fn(sde, counter, x, ts=ts, callback=callback, progress=progress, **common, **fields)
  return SampleResult(x=x, nfe=counter.nfe, trajectory=trajectory)


__all__ = ['sample', 'resolve_times', 'SampleResult', 'Step', 'SOLVERS', 'SolverSpec', 'solver_spec',
           'register', 'unregister', 'PREDICTORS', 'CORRECTORS', 'solver_options', 'GridTuning']
