"""`SolverSpec`: everything the library knows about a solver, declared once next to its
function, and the registry that `SOLVERS`, `solver_options`, `optimized_grid.TUNABLE`, the
CLI's option plumbing (`score_sde.app.generate`), `config_check`'s choices and
`benchmarks/samplers.py` are derived from.

A solver function is `fn(sde, score_fn, x [B, ...], *, ts, callback, progress, <the common
arguments it uses>, <its options>) -> x [B, ...]`: it walks the times `ts` (T down to the end)
that `sampling.sample` resolved, and calls `callback(Step(i, t, x, denoised))` after step i.
Its keyword parameters other than the common ones are its options; `SolverSpec.options` is
the dataclass of them, with the function's defaults (one declaration: the signature).
Adding a solver: write its function and SPEC in its module, and one `register` line.
"""
from __future__ import annotations

import dataclasses
import inspect
import typing
from collections.abc import Mapping
from typing import Any, Callable

from score_sde.sampling.common import Times, check_options, check_times
from score_sde.maths.sdes import SDE

# sample()'s arguments a solver may take (`SolverSpec.uses`), and those every solver takes
COMMON = ('steps', 'eps', 'denoise', 'generator')
ALWAYS = ('ts', 'callback', 'progress')


@dataclasses.dataclass(frozen=True)
class SolverSpec:
  """One solver. name: its key in `SOLVERS`; fn: the function (see the module docstring).

  grid: `(sde, steps, eps, opts) -> steps + 1 times` from T down, the grid its `steps` walk;
  grid_doc says which in words. choices: `{option: allowed values}` of its options that are
  choices. default_steps: steps when none are given (None: the SDE's N).
  nfe: `(steps, opts, denoise) -> score evaluations` of a run over steps + 1 times (None when
  not known in advance: adaptive methods). denoised: what `Step.denoised` holds. uses: which
  of COMMON it takes (the others are not passed). tunable: grid='optimized' can tune its
  grid. zero_end: its times may end at 0. stochastic: `(opts) -> whether it draws noise`.
  options (derived): the dataclass of the function's options with their defaults.
  """
  name: str
  fn: Callable
  grid: Callable[[SDE, int, float, Any], list]
  grid_doc: str
  nfe: Callable[[int, Any, bool], 'int | None']
  denoised: str
  choices: dict = dataclasses.field(default_factory=dict)
  default_steps: int | None = None
  uses: tuple[str, ...] = ('denoise', 'generator')
  tunable: bool = False
  zero_end: bool = False
  stochastic: Callable[[Any], bool] = lambda opts: True
  options: type = dataclasses.field(init=False)

  def __post_init__(self):
    bad = set(self.uses) - set(COMMON)
    if bad:
      raise ValueError(f"SolverSpec '{self.name}': uses {sorted(bad)}, not among {COMMON}")
    object.__setattr__(self, 'options', _options_class(self.fn, self.name))

  @property
  def option_names(self) -> tuple[str, ...]:
    """The solver's own keyword options (the fields of `options`)."""
    return tuple(f.name for f in dataclasses.fields(self.options))

  def parse(self, options: dict):
    """`options` (keywords of sample()) as an `options` instance; a one-line ValueError for
    one the solver does not take. `ts` and `callback` are sample()'s, not options."""
    check_options(self.name, options, self.option_names + ('ts', 'callback'))
    return self.options(**{k: v for k, v in options.items() if k not in ('ts', 'callback')})

  def steps(self, sde: SDE, steps: int | None) -> int:
    """`steps`, or the default when None / 0."""
    return steps or (self.default_steps or sde.N)

  def times(self, sde: SDE, steps: int | None = None, eps: float = 1e-3, ts=None, opts=None) -> Times:
    """Explicit `ts` checked (strictly decreasing within (0, T], or [0, T] if zero_end), or
    the solver's grid of `steps` (default `default_steps`) from T to eps for `opts`; `Times`
    already resolved are returned as they are."""
    if isinstance(ts, Times):
      return ts
    if ts is not None:
      return Times(check_times(sde, ts, allow_zero_end=self.zero_end))
    return Times(self.grid(sde, self.steps(sde, steps), eps, opts if opts is not None else self.options()))

  def steps_for_nfe(self, budget: int, opts=None, denoise: bool = True) -> int:
    """The most steps whose NFE is at most `budget` (0 if even one step costs more)."""
    opts = opts if opts is not None else self.options()
    best = 0
    for steps in range(1, budget + 2):  # budget + 1: a solver may save an evaluation (ipndm)
      nfe = self.nfe(steps, opts, denoise)
      if nfe is None or nfe > budget:
        break
      best = steps
    return best

  def common(self, **values) -> dict:
    """The common arguments `values` (steps, eps, denoise, generator) the solver takes."""
    return {k: v for k, v in values.items() if k in self.uses}


def _options_class(fn, name: str) -> type:
  """A frozen dataclass of fn's keyword parameters other than COMMON and ALWAYS, typed by
  fn's annotations, with fn's defaults."""
  hints = typing.get_type_hints(fn)
  fields = [(p.name, hints.get(p.name, Any), dataclasses.field(default=p.default))
            for p in inspect.signature(fn).parameters.values()
            if p.kind is p.KEYWORD_ONLY and p.name not in COMMON + ALWAYS]
  cls_name = ''.join(part.capitalize() for part in name.split('_')) + 'Options'
  return dataclasses.make_dataclass(cls_name, fields, frozen=True)


REGISTRY: dict[str, SolverSpec] = {}


def register(spec: SolverSpec) -> SolverSpec:
  """Add `spec` under spec.name (a ValueError if the name is taken)."""
  if spec.name in REGISTRY:
    raise ValueError(f"a solver named '{spec.name}' is already registered")
  REGISTRY[spec.name] = spec
  return spec


def unregister(name: str) -> None:
  REGISTRY.pop(name, None)


def solver_spec(solver: str) -> SolverSpec:
  """The spec of `solver` (case-insensitive); a one-line ValueError naming the choices."""
  key = solver.lower() if isinstance(solver, str) else solver
  if key not in REGISTRY:
    raise ValueError(f"unknown solver '{solver}'; choose one of: {', '.join(REGISTRY)}")
  return REGISTRY[key]


class RegistryView(Mapping):
  """A live read-only view `{name: value(spec)}` of the registered specs that pass `keep`."""

  def __init__(self, value, keep=lambda spec: True):
    self._value, self._keep = value, keep

  def _specs(self):
    return {n: s for n, s in REGISTRY.items() if self._keep(s)}

  def __getitem__(self, name):
    spec = self._specs()[name]
    return self._value(spec)

  def __iter__(self):
    return iter(self._specs())

  def __len__(self):
    return len(self._specs())

  def __repr__(self):
    return f'{type(self).__name__}({list(self)})'


__all__ = ['SolverSpec', 'register', 'unregister', 'solver_spec', 'REGISTRY', 'RegistryView', 'COMMON']
