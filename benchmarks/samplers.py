"""Sampler accuracy vs NFE on Gaussian mixtures with exact scores (VP SDE).

For each solver and NFE budget: sliced-Wasserstein-2 to a large exact reference sample, the
mean and covariance errors against the mixture's analytic moments, and, for deterministic
solvers, the RMS and the median of the per-sample L2 distance to the exact PF-ODE endpoint from
the same x_T (dopri5 at rtol = atol = 1e-9, float64), taken at the same point the solver ends
at: at eps for solvers run with denoise=False, after the same Tweedie step otherwise (so the
distance measures discretisation error only). The floor is the SW2 of fresh exact samples of
the same size against the reference. Rows 'optimized' use grid='optimized' tuned on a pilot
batch of other prior draws (its tuning time is in the s column, its NFE is not counted).
Writes benchmarks/results/samplers{suffix}.{md,png} with the issue's targets for d = 16.

  python benchmarks/samplers.py [--n 20000] [--quick] [--solvers NAME ...] [--dims 16]
"""
from __future__ import annotations

import argparse
import dataclasses
import math
import os
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from score_sde.maths.analytic import GaussianMixture  # noqa: E402
from score_sde.sampling import GridTuning, sample, solver_spec  # noqa: E402
from score_sde.sampling.common import tweedie_denoise  # noqa: E402
from score_sde.sampling.ode import ode_integrate, probability_flow_drift  # noqa: E402
from score_sde.maths.sdes import VPSDE  # noqa: E402

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'results')
NFES = (10, 20, 35, 50, 100, 1000)

TUNE = '_tuning'  # an options key of a row: GridTuning fields that differ from TUNING's

# name: (solver, options, smallest NFE that makes sense); the steps of an NFE budget and
# whether a row is deterministic come from the solver's SolverSpec (its NFE formula and noise)
SOLVER_SPECS = {
    'ddpm': ('ddpm', {}, 10),
    'ddim': ('ddim', {}, 10),
    'heun (EDM)': ('heun', {}, 10),
    'heun churn': ('heun', {'s_churn': 40.0}, 20),
    # DPM-Solver++ stops at eps = 1e-3 without the Tweedie step (sigma(eps) ~ 0.01), as Lu et al.
    'dpm++ 2M': ('dpm_solver', {'order': 2, 'denoise': False}, 4),
    'dpm++ 3M': ('dpm_solver', {'order': 3, 'denoise': False}, 4),
    'dpm++ 3M karras': ('dpm_solver', {'order': 3, 'grid': 'karras', 'denoise': False}, 10),
    'dpm++ 3S': ('dpm_solver', {'order': 3, 'multistep': False, 'denoise': False}, 10),
    'unipc bh2 3': ('unipc', {'order': 3, 'denoise': False}, 4),
    'unipc bh1 3': ('unipc', {'order': 3, 'variant': 'bh1', 'denoise': False}, 10),
    'unipc bh2 2': ('unipc', {'order': 2, 'denoise': False}, 4),
    'dpm++ 3M optimized': ('dpm_solver', {'order': 3, 'grid': 'optimized', 'denoise': False}, 4),
    'unipc bh2 3 optimized': ('unipc', {'order': 3, 'grid': 'optimized', 'denoise': False}, 4),
    # few-step rows (issue 26): the optimized grid before (log loss, no guard) and after, and
    # iPNDM with the analytical first step (the mixture's mean and covariance, from run_problem)
    'unipc bh2 2 optimized (old)': ('unipc', {'order': 2, 'grid': 'optimized', 'denoise': False,
                                              TUNE: {'loss': 'log', 'guard': 0}}, 4),
    'unipc bh2 2 optimized': ('unipc', {'order': 2, 'grid': 'optimized', 'denoise': False}, 4),
    'unipc bh2 2 optimized balanced': ('unipc', {'order': 2, 'grid': 'optimized', 'denoise': False,
                                                 TUNE: {'loss': 'balanced'}}, 4),
    'dpm++ 3M optimized (old)': ('dpm_solver', {'order': 3, 'grid': 'optimized', 'denoise': False,
                                                TUNE: {'loss': 'log', 'guard': 0}}, 4),
    'ipndm 3': ('ipndm', {'max_order': 3, 'denoise': False}, 4),
    'ipndm 3 + AFS': ('ipndm', {'max_order': 3, 'first_step': 'analytic', 'denoise': False}, 4),
    'ipndm 3 + AFS optimized': ('ipndm', {'max_order': 3, 'first_step': 'analytic', 'grid': 'optimized',
                                          'denoise': False}, 4),
    'sde euler': ('sde', {}, 20),
    'pc rd+langevin': ('pc', {'snr': 0.01}, 100),
}


def row_plan(solver: str, options: dict, nfe: int):
  """(steps, deterministic) of a row: the most steps within the NFE budget by the solver's NFE
  formula, and whether it draws no noise (`SolverSpec.nfe`, `SolverSpec.stochastic`)."""
  spec = solver_spec(solver)
  opts = spec.parse({k: v for k, v in options.items() if k not in ('denoise', TUNE)})
  return spec.steps_for_nfe(nfe, opts, options.get('denoise', True)), not spec.stochastic(opts)


def make_mixture(dim: int, k: int, seed: int = 0) -> GaussianMixture:
  """k well-separated components (means at radius 3, unequal weights 1..k, stds 0.2-0.5)."""
  g = torch.Generator().manual_seed(seed)
  if dim == 2:
    ang = torch.arange(k, dtype=torch.float64) * 2 * math.pi / k
    means = 3.0 * torch.stack([ang.cos(), ang.sin()], 1)
  else:
    means = torch.randn(k, dim, generator=g, dtype=torch.float64)
    means = 3.0 * means / means.norm(dim=1, keepdim=True)
  stds = 0.2 + 0.3 * torch.rand(k, dim, generator=g, dtype=torch.float64)
  weights = torch.arange(1, k + 1, dtype=torch.float64)
  return GaussianMixture(means, stds ** 2, weights)


def sliced_w2(x: torch.Tensor, ref: torch.Tensor, proj: torch.Tensor, ref_sorted=None) -> float:
  """SW2 between x `[n, D]` and ref `[m, D]` (m a multiple of n is best) over unit
  directions proj `[L, D]`: sqrt(mean over directions of the 1-D W2^2 between quantiles).
  `ref_sorted`: the sorted projections of ref `[m, L]`, if already computed."""
  proj = proj.double()
  px = torch.sort(x.double() @ proj.T, dim=0).values
  pr = torch.sort(ref.double() @ proj.T, dim=0).values if ref_sorted is None else ref_sorted
  n, m = px.shape[0], pr.shape[0]
  idx = ((torch.arange(n, dtype=torch.float64) + 0.5) * m / n).long().clamp(max=m - 1)
  return float(((px - pr[idx]) ** 2).mean().sqrt())


def moment_errors(x: torch.Tensor, mix: GaussianMixture):
  """|mean - mu| (L2) and ||cov - Sigma||_F against the analytic mixture moments."""
  mean, cov = mix.moments()
  x = x.double()
  return float((x.mean(0) - mean).norm()), float((torch.cov(x.T) - cov).norm())


def pf_ode_endpoint(sde, score_fn, x_T: torch.Tensor, eps: float = 1e-3):
  """Exact PF-ODE endpoints from x_T (dopri5, rtol = atol = 1e-9, float64): {False: at eps,
  True: after the Tweedie step at eps}, keyed by the solver's `denoise`."""
  x = ode_integrate(probability_flow_drift(sde, score_fn), x_T.double(), sde.T, eps,
                    rtol=1e-9, atol=1e-9)
  return {False: x.float(), True: tweedie_denoise(sde, score_fn, x, eps).float()}


# the optimized grids of the 'optimized' rows: tuned on 128 prior draws of seed 0 (the
# benchmark's x_T use seed 99), up to 32 knots (NFE 100 needs the finer warp)
TUNING = GridTuning(pilot_batch=128, max_knots=32)


def run_problem(dim, k, args, proj_seed=0):
  """All solvers x NFEs on one mixture; returns (rows, floor)."""
  sde, mix = VPSDE(), make_mixture(dim, k, args.mixture_seed)
  score_fn = mix.score_fn(sde)
  gen = torch.Generator().manual_seed(1234)
  ref = mix.sample(args.ref_factor * args.n, gen)
  proj = torch.randn(args.projections, dim, generator=torch.Generator().manual_seed(proj_seed))
  proj = proj / proj.norm(dim=1, keepdim=True)
  ref_sorted = torch.sort(ref.double() @ proj.double().T, dim=0).values  # once, not per row
  floor = [sliced_w2(mix.sample(args.n, gen), ref, proj, ref_sorted) for _ in range(2)]
  x_T = sde.prior_sampling((args.n, dim), torch.Generator().manual_seed(99))
  m_ode = min(args.n, args.ode_points)
  t0 = time.time()
  exact = pf_ode_endpoint(sde, score_fn, x_T[:m_ode])
  print(f'# d={dim}: exact PF-ODE endpoints in {time.time() - t0:.1f}s', flush=True)
  rows = []
  for name, (solver, options, min_nfe) in SOLVER_SPECS.items():
    if args.solvers and name not in args.solvers:
      continue
    for nfe in args.nfes:
      steps, deterministic = row_plan(solver, options, nfe)
      if nfe < min_nfe or steps < 1:
        continue
      t0 = time.time()
      opts = {k: v for k, v in options.items() if k != TUNE}
      if opts.get('first_step') == 'analytic':  # the data's moments: exact for this mixture
        opts['data_mean'], opts['data_var'] = (m.float() for m in mix.moments())
      tuning = dataclasses.replace(TUNING, key=f'benchmark-d{dim}-m{args.mixture_seed}', **options.get(TUNE, {}))
      res = sample(sde, score_fn, None, solver, steps=steps, x_init=x_T,
                   generator=torch.Generator().manual_seed(nfe), grid_tuning=tuning, **opts)
      x = res.x
      dist = (x[:m_ode] - exact[options.get('denoise', True)]).norm(dim=1) if deterministic else None
      rows.append(dict(dim=dim, solver=name, nfe=res.nfe, sw2=sliced_w2(x, ref, proj, ref_sorted),
                       mean_err=moment_errors(x, mix)[0], cov_err=moment_errors(x, mix)[1],
                       ode_rms=None if dist is None else float(dist.pow(2).mean().sqrt()),
                       ode_median=None if dist is None else float(dist.median()),
                       seconds=time.time() - t0))
      print(_row(rows[-1], sum(floor) / 2), flush=True)
  return rows, sum(floor) / 2


def _row(r, floor):
  ode = '-' if r['ode_rms'] is None else f"{r['ode_rms']:.2e}"
  med = '-' if r.get('ode_median') is None else f"{r['ode_median']:.2e}"
  return (f"| {r['dim']} | {r['solver']} | {r['nfe']} | {r['sw2']:.4f} | {r['sw2'] / floor:.2f} | "
          f"{r['mean_err']:.4f} | {r['cov_err']:.4f} | {ode} | {med} | {r['seconds']:.1f} |")


# the targets on the 16-d mixture: (NFE, what, bound)
TARGETS = ((10, 'SW2 / floor', 1.05), (20, 'median PF-ODE endpoint error', 1e-3),
           (100, 'median PF-ODE endpoint error', 1e-5),
           # issue 26 (few steps)
           (5, 'median PF-ODE endpoint error', 2e-2), (5, 'SW2 / floor', 1.5),
           (8, 'median PF-ODE endpoint error', 5e-3), (8, 'SW2 / floor', 1.05))


def target_lines(rows, floor):
  """One line per target: the best row at that NFE (NFE + 1 for a final Tweedie step, which
  none of the rows below takes) and whether it meets the bound."""
  lines = []
  for nfe, what, bound in TARGETS:
    key = (lambda r: r['sw2'] / floor) if what.startswith('SW2') else (lambda r: r['ode_median'])
    cands = [r for r in rows if r['nfe'] == nfe and key(r) is not None]
    if not cands:
      continue
    best = min(cands, key=key)
    ok = 'met' if key(best) <= bound else 'NOT met'
    lines.append(f'- NFE {nfe}: {what} <= {bound:g}: best {key(best):.3g} ({best["solver"]}): {ok}')
  return lines


def write_markdown(results, args, path):
  lines = [f'# Sampler accuracy on Gaussian mixtures (VP SDE, exact score), n = {args.n}, '
           f'reference n = {args.ref_factor * args.n}, {args.projections} projections', '']
  for dim, (rows, floor) in results.items():
    lines += [f'## d = {dim}: SW2 floor (exact samples of size n vs reference) = {floor:.4f}', '',
              '| d | solver | NFE | SW2 | SW2/floor | mean err | cov err (F) | RMS to exact PF-ODE '
              '| median to exact PF-ODE | s |', '|---|---|---|---|---|---|---|---|---|---|']
    lines += [_row(r, floor) for r in rows] + ['']
    if dim == 16:
      lines += ["Targets (issues 16 and 26) on this mixture:", ''] + target_lines(rows, floor) + ['']
  text = '\n'.join(lines)
  with open(path, 'w') as f:
    f.write(text)
  return text


def plot(results, path):
  try:
    import matplotlib
  except ImportError:  # Pillow fallback, from the markdown table written beside the plot
    from benchmarks.plot_png import main as plot_markdown
    md = path[:-4] + '.md'
    if os.path.exists(md):
      plot_markdown(md)
    return
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt
  fig, axes = plt.subplots(1, len(results), figsize=(6 * len(results), 4.5), squeeze=False)
  for ax, (dim, (rows, floor)) in zip(axes[0], results.items()):
    for name in dict.fromkeys(r['solver'] for r in rows):
      pts = sorted((r['nfe'], r['sw2']) for r in rows if r['solver'] == name)
      if pts:
        ax.plot(*zip(*pts), marker='o', label=name)
    ax.axhline(floor, color='k', ls='--', label='floor')
    ax.set(xscale='log', yscale='log', xlabel='NFE', ylabel='sliced W2', title=f'd = {dim}')
  axes[0][-1].legend(fontsize=7)
  fig.tight_layout()
  fig.savefig(path, dpi=120)


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument('--n', type=int, default=20000, help='samples per solver run')
  p.add_argument('--ref-factor', type=int, default=10, help='reference size = ref_factor * n')
  p.add_argument('--projections', type=int, default=512)
  p.add_argument('--ode-points', type=int, default=2000, help='points for the PF-ODE RMS')
  p.add_argument('--nfes', type=int, nargs='+', default=list(NFES))
  p.add_argument('--dims', type=int, nargs='+', default=[2, 16])
  p.add_argument('--quick', action='store_true', help='n=2000, NFE 10/20/50, d=2 and 16')
  p.add_argument('--out', default=RESULTS)
  p.add_argument('--suffix', default='', help='appended to the output file names')
  p.add_argument('--mixture-seed', type=int, default=0, help='seed of the mixture (0: the one of the tables)')
  p.add_argument('--solvers', nargs='+', default=None, help=f'rows to run (default all): {list(SOLVER_SPECS)}')
  args = p.parse_args(argv)
  if args.quick:
    args.n, args.nfes, args.ode_points, args.projections = 2000, [10, 20, 50], 500, 256
  torch.set_num_threads(1)
  os.makedirs(args.out, exist_ok=True)
  results = {d: run_problem(d, 8 if d == 2 else 16, args) for d in args.dims}
  print(write_markdown(results, args, os.path.join(args.out, f'samplers{args.suffix}.md')))
  plot(results, os.path.join(args.out, f'samplers{args.suffix}.png'))


if __name__ == '__main__':
  main()
