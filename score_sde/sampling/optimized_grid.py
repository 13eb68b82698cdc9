"""Optimized time grids: the K + 1 times of a K-step solver that minimise the discretisation
error of the model's own probability-flow ODE, in the spirit of "Align Your Steps" (Sabour,
Fidler & Kreis 2024, arXiv:2404.14507) and GITS (Chen et al. 2024, "On the Trajectory
Regularity of ODE-based Diffusion Sampling", arXiv:2405.11326).

Objective: over a pilot batch of prior draws x_T `[P, ...]` (fixed seed), the distance
between the solver's endpoint at eps (no Tweedie step) and a fine reference solve of the same
x_T (dopri5 at tolerance `ref_tol`): loss 'log' (default) is the mean of log ||err||^2 (a
geometric mean, aimed at the typical sample), 'mse' the mean of ||err||^2, and 'balanced' the
mean of the two logs, (mean log ||err||^2 + log mean ||err||^2) / 2. The geometric mean alone
buys the typical trajectory at the expense of the few near a boundary between modes, and can
leave the sample distribution worse than the log-SNR grid's (issue 26). The arithmetic mean is
the squared RMS error, an upper bound of the squared W2 distance between the solver's and the
exact PF-ODE's distributions (the pairing by x_T is one coupling): 'balanced' keeps the
distribution in the objective (on the 16-d benchmark mixture it lowered both the median and
the sliced W2 of unipc at 4-10 NFE, but gave dpm_solver 3M a smaller median gain). Whatever
the loss, the guard (`GridTuning.guard`, on by default; `grid_guard`) checks the tuned grid's
distribution against the log-SNR grid's on fresh draws and pulls it back towards log-SNR
where it is worse, so the tuned grid never trades the distribution for the median.

Parametrisation and search: the half log-SNR of the k-th time is lambda_k = lambda_T +
(lambda_eps - lambda_T) w(k / K), w a monotone piecewise-linear map through M + 1 knots
(u_j = j / M, w_j), w_0 = 0, w_M = 1; w = identity is the logSNR grid, the start. Coarse to
fine, M = 2, 4, 8, ... up to min(K, max_knots), each level starting from the last level's
map, `passes` sweeps of coordinate-wise golden-section search (`iters` evaluations) move each
interior knot between its neighbours (the bracket shrinks 4x per pass), keeping a move only if
it lowers the objective. (Moving all K points at once from the start gets stuck in poor local
minima; the coarse levels move whole regions first.) Cost: one reference solve, then
1 + passes * iters * sum_levels (M - 1) solver runs of K steps on the pilot batch; defaults
(passes 2, iters 10, max_knots 16): K = 10: 400 runs (4k NFE on P = 64 draws), K >= 16: 520
runs (K = 20: 10.4k NFE, K = 100: 52k NFE); the guard adds a reference solve of `guard` draws
and at most 5 solver runs on them. Deterministic given `seed`.

The reference PF-ODE solves of the pilot and guard batches are kept in memory per model key
(the last 8), so the grids of several NFE share them.

Results are cached per (model key, SDE, solver and its options, K, eps, data shape, tuning) in
memory and, with `cache_dir`, in `<cache_dir>/optimized_grids.json` (validated when read back,
written under a lock: `score_sde.sampling.grid_cache`).
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import weakref

import torch

from score_sde.sampling import grid_cache
from score_sde.sampling.grid_cache import CACHE_FILE
from score_sde.sampling.grid_guard import guard_grid, reference_endpoints
from score_sde.sampling.grids import KernelAt, time_grid, times_of_lambdas
from score_sde.sampling.spec import REGISTRY, RegistryView
from score_sde.maths.sdes import SDE

TUNABLE = RegistryView(lambda spec: spec.fn, keep=lambda spec: spec.tunable)  # {name: fn}, live


def grid_options(solver: str) -> tuple[str, ...]:
  """The options of a tunable `solver` that shape its discretisation error (all but `grid`)."""
  return tuple(k for k in REGISTRY[solver].option_names if k != 'grid')


LOSSES = ('log', 'mse', 'balanced')
_MEMORY: dict[str, list[float]] = {}


@dataclasses.dataclass(frozen=True)
class GridTuning:
  """How `optimized_grid` tunes and caches. key: the model's cache key (None: a fingerprint of
  the score function's parameters if it is an nn.Module, else the result is not cached);
  cache_dir: folder of the JSON cache ('' or None: memory only); loss: the objective (LOSSES);
  guard: draws of the distribution guard (`grid_guard`; 0: none)."""
  key: str | None = None
  cache_dir: str | None = None
  pilot_batch: int = 64
  passes: int = 2
  iters: int = 10
  max_knots: int = 16
  loss: str = 'log'
  ref_tol: float = 1e-7
  seed: int = 0
  guard: int = 256

  def __post_init__(self):
    if self.loss not in LOSSES:
      raise ValueError(f"unknown grid loss '{self.loss}'; choose one of: {', '.join(LOSSES)}")
    if min(self.pilot_batch, self.passes, self.iters, self.max_knots - 1) < 1 or self.iters < 2:
      raise ValueError(f'bad GridTuning {self}: pilot_batch, passes >= 1, iters, max_knots >= 2')
    if isinstance(self.guard, bool) or not isinstance(self.guard, int) or self.guard < 0:
      raise ValueError(f'bad GridTuning guard = {self.guard!r}: the guard batch, an integer >= 0 (0: no guard)')


_DIGESTS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # module -> (versions, digest)


def model_fingerprint(*modules, extra: str = '') -> str:
  """A short hash of the parameters and buffers of the given nn.Modules (and `extra`).

  Each module's digest is kept until one of its tensors is replaced or changed in place
  (torch's version counters), so repeated calls (one per eval shard, say) copy no weights to
  the host."""
  h = hashlib.sha1(extra.encode())
  for module in modules:
    state = module.state_dict()
    versions = tuple((name, t.data_ptr(), t._version) for name, t in state.items())
    known = _DIGESTS.get(module)
    if known is None or known[0] != versions:
      known = _DIGESTS[module] = (versions, _digest(state))
    h.update(known[1].encode())
  return h.hexdigest()[:16]


def _digest(state: dict) -> str:
  """SHA-1 of a state dict's names and raw bytes (copies every tensor to the host)."""
  h = hashlib.sha1()
  for name, tensor in state.items():
    h.update(name.encode())
    h.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())  # 0-d too
  return h.hexdigest()


def knot_lambdas(knots: list[float], steps: int, lam_t: float, lam_e: float) -> list[float]:
  """lambda_k, k = 0..steps, of the piecewise-linear warp through (j / M, knots[j])."""
  m = len(knots) - 1
  out = []
  for k in range(steps + 1):
    u = k * m / steps
    j = min(int(u), m - 1)
    w = knots[j] + (u - j) * (knots[j + 1] - knots[j])
    out.append(lam_t + (lam_e - lam_t) * w)
  return out


def knot_levels(steps: int, max_knots: int) -> list[int]:
  """The knot counts M of the coarse-to-fine search: 2, 4, 8, ... up to min(steps, max_knots)."""
  top, levels, m = min(steps, max_knots), [], 2
  while m < top:
    levels.append(m)
    m *= 2
  return levels + [top] if top >= 2 else []


def _golden(f, lo: float, hi: float, x0: float, f0: float, iters: int):
  """Golden-section search of f on [lo, hi] with `iters` evaluations; the best (f, x) seen,
  (f0, x0) included (so a move never makes f worse)."""
  g = (math.sqrt(5) - 1) / 2
  a, b = lo, hi
  c, d = b - g * (b - a), a + g * (b - a)
  fc, fd = f(c), f(d)
  best = min((f0, x0), (fc, c), (fd, d))
  for _ in range(iters - 2):
    if fc < fd:
      b, d, fd = d, c, fc
      c = b - g * (b - a)
      fc = f(c)
      best = min(best, (fc, c))
    else:
      a, c, fc = c, d, fd
      d = a + g * (b - a)
      fd = f(d)
      best = min(best, (fd, d))
  return best


def search_knots(objective, knots: list[float], passes: int, iters: int):
  """Coordinate-wise golden-section descent of objective(knots) over the interior knots,
  each between its neighbours; returns (best knots, best value)."""
  knots, best = list(knots), objective(knots)
  for p in range(passes):
    shrink = 0.9 / 4 ** p  # pass 0 searches (nearly) the whole gap, later passes near the knot
    for j in range(1, len(knots) - 1):
      lo = knots[j] - shrink * (knots[j] - knots[j - 1])
      hi = knots[j] + shrink * (knots[j + 1] - knots[j])

      def at(w, j=j):
        return objective(knots[:j] + [w] + knots[j + 1:])
      best, knots[j] = _golden(at, lo, hi, knots[j], best, iters)
  return knots, best


def _jsonable(value):
  """An option value as JSON: tensors (data moments, say) by shape and a hash of their bytes."""
  if torch.is_tensor(value):
    t = value.detach().cpu().double().contiguous()
    return f'tensor{list(t.shape)}:{hashlib.sha1(t.numpy().tobytes()).hexdigest()[:12]}'
  return value


def cache_key(model_key: str, sde: SDE, solver: str, options: dict, steps: int, eps: float,
              shape, tuning: GridTuning) -> str:
  opts = {k: _jsonable(options[k]) for k in sorted(options) if k in grid_options(solver)}
  sde_id = f'{type(sde).__name__}{sorted(getattr(sde, "hparams", {}).items())}'
  guard = f',guard={tuning.guard}' if tuning.guard else ''
  return (f'{model_key}|{sde_id}|{solver}|{json.dumps(opts, sort_keys=True)}|K={steps}|eps={eps!r}|'
          f'shape={list(shape)}|P={tuning.pilot_batch},passes={tuning.passes},iters={tuning.iters},'
          f'knots={tuning.max_knots},loss={tuning.loss},tol={tuning.ref_tol!r},seed={tuning.seed}{guard}')


def _resolve_key(score_fn, tuning: GridTuning) -> str | None:
  if tuning.key is not None:
    return tuning.key
  return model_fingerprint(score_fn) if isinstance(score_fn, torch.nn.Module) else None


def endpoint_loss(err2: torch.Tensor, loss: str) -> torch.Tensor:
  """The tuning objective of the squared endpoint errors err2 `[P]` (see the module docstring):
  'log' mean(log err2), 'mse' mean(err2), 'balanced' (mean(log err2) + log mean(err2)) / 2."""
  if loss == 'mse':
    return err2.mean()
  geometric = err2.clamp_min(1e-30).log().mean()
  return geometric if loss == 'log' else 0.5 * (geometric + err2.mean().clamp_min(1e-30).log())


def tune_grid(sde: SDE, score_fn, solver: str, steps: int, eps: float, x_T: torch.Tensor,
              options: dict, tuning: GridTuning, ref: torch.Tensor | None = None,
              memo: str | None = None) -> tuple[list[float], float, float]:
  """The optimized grid for pilot draws x_T `[P, ...]` (no cache), checked by the guard if
  `tuning.guard` (`grid_guard`): (ts, the search's best objective, the logSNR grid's). ref: the
  PF-ODE endpoints of x_T (default: solved here); memo: the model's key under which the guard
  batch's reference solve is kept in memory (None: not kept)."""
  run = REGISTRY[solver].fn  # any solver that walks explicit `ts` (optimized_grid checks TUNABLE)
  opts = {k: v for k, v in options.items() if k in grid_options(solver)}
  if ref is None:
    ref = reference_endpoints(sde, score_fn, x_T, eps, tuning.ref_tol)
  lam_t, lam_e = KernelAt(sde).lam(sde.T), KernelAt(sde).lam(eps)

  def objective(knots):
    ts = times_of_lambdas(sde, knot_lambdas(knots, steps, lam_t, lam_e), eps)
    with torch.no_grad():
      x = run(sde, score_fn, x_T, ts=ts, denoise=False, **opts)
    err = endpoint_loss((x - ref).reshape(x.shape[0], -1).double().pow(2).sum(1), tuning.loss)
    return float(err) if torch.isfinite(err) else math.inf

  knots = [0.0, 1.0]
  base = best = objective(knots)
  for m in knot_levels(steps, tuning.max_knots):  # coarse to fine, each level from the last
    knots = knot_lambdas(knots, m, 0.0, 1.0)
    knots, best = search_knots(objective, knots, tuning.passes, tuning.iters)
  ts = times_of_lambdas(sde, knot_lambdas(knots, steps, lam_t, lam_e), eps)
  if tuning.guard:
    with torch.no_grad():
      ts = guard_grid(sde, score_fn, solver, ts, eps, x_T.shape[1:], opts, tuning, x_T.device, x_T.dtype, memo)[0]
  return ts, best, base


def optimized_grid(sde: SDE, score_fn, solver: str, steps: int, eps: float, shape, *,
                   options: dict | None = None, tuning: GridTuning | None = None,
                   device=None, dtype=torch.float32) -> list[float]:
  """The steps + 1 times (T down to eps) of the optimized grid of `solver` (one of TUNABLE:
  dpm_solver, unipc, ipndm; of its `options`, those of `grid_options(solver)` count) for
  `score_fn(x [B, ...], t [B])` on data of per-sample `shape`, from the caches or tuned on
  `tuning.pilot_batch` prior draws `[P, *shape]` (see the module docstring for the cost)."""
  if solver not in TUNABLE:
    raise ValueError(f"grid='optimized' is for the solvers {', '.join(TUNABLE)}; got '{solver}'")
  tuning = tuning or GridTuning()
  options = options or {}
  model_key = _resolve_key(score_fn, tuning)
  key = None if model_key is None else cache_key(model_key, sde, solver, options, steps, eps, shape, tuning)
  if key is not None and key in _MEMORY:
    return list(_MEMORY[key])
  if key is not None and tuning.cache_dir:
    stored = grid_cache.lookup(tuning.cache_dir, key, steps, float(sde.T), eps)  # None if bad
    if stored is not None:
      _MEMORY[key] = stored
      return list(stored)
  if steps < 2:
    return time_grid(sde, steps, eps, 'logsnr')
  if key is not None and tuning.cache_dir:
    grid_cache.check_writable(tuning.cache_dir)  # fail before the tuning, not after
  gen = torch.Generator(device=device or 'cpu').manual_seed(tuning.seed)
  x_T = sde.prior_sampling((tuning.pilot_batch,) + tuple(shape), gen, device or 'cpu').to(dtype)
  memo = None if model_key is None else f'{model_key}|{type(sde).__name__}{sorted(getattr(sde, "hparams", {}).items())}'
  ref = reference_endpoints(sde, score_fn, x_T, eps, tuning.ref_tol,
                            memo and f'{memo}|pilot|{list(x_T.shape)}|{eps!r}|{tuning.ref_tol!r}|{tuning.seed}|{dtype}')
  ts = tune_grid(sde, score_fn, solver, steps, eps, x_T, options, tuning, ref, memo)[0]
  if key is not None:
    _MEMORY[key] = ts
    if tuning.cache_dir:
      grid_cache.merge(tuning.cache_dir, key, ts)
  return list(ts)


__all__ = ['optimized_grid', 'tune_grid', 'GridTuning', 'model_fingerprint', 'search_knots',
           'knot_lambdas', 'TUNABLE', 'CACHE_FILE', 'grid_options']
