"""Few-step sampling (4-20 NFE) on the trained digits demo model (issue 26).

For each method and NFE: the median (and RMS) per-sample L2 distance, over n prior draws x_T,
between the solver's endpoint at eps (no Tweedie step) and a tight dopri5 solve of the model's
own PF-ODE from the same x_T (rtol = atol = 1e-7), and a distribution measure: the sliced W2
(256 directions) of the Tweedie-denoised endpoints (the same map for every row, outside the
NFE count) against n samples of the 1000-step `pc` sampler (reverse diffusion, no corrector;
other draws); the row 'exact PF-ODE' is the dopri5 endpoints themselves, the best any ODE solver
can do. Optimized grids are tuned with a reduced `GridTuning` (below) on other draws.

  python main.py --mode train --config configs/digits.py --workdir /tmp/digits_demo
  python benchmarks/few_step_digits.py --workdir /tmp/digits_demo [--n 500] [--nfes 4 5 6 8 10 20]
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from benchmarks.common import load_config  # noqa: E402
from score_sde.data import datasets  # noqa: E402
from score_sde.app.eval_model import load_eval_model  # noqa: E402
from score_sde.sampling import GridTuning, sample  # noqa: E402
from score_sde.sampling.common import tweedie_denoise  # noqa: E402
from score_sde.sampling.grid_guard import sliced_gap  # noqa: E402
from score_sde.sampling.grid_guard import reference_endpoints  # noqa: E402

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'results')
EPS = 1e-3
# reduced tuning for a CPU (the defaults: pilot 64, 2 passes of 10, 16 knots, guard 256)
TUNING = GridTuning(pilot_batch=32, passes=1, iters=6, max_knots=8, guard=128)
OLD_TUNING = GridTuning(pilot_batch=32, passes=1, iters=6, max_knots=8, loss='log', guard=0)


def methods(moments):
  """name: (solver, options, tuning or None, NFE -> steps)."""
  afs = dict(first_step='analytic', data_mean=moments[0], data_var=moments[1])
  same, plus1 = (lambda nfe: nfe), (lambda nfe: nfe + 1)
  return {
      'dpm++ 3M, log-SNR': ('dpm_solver', dict(order=3), None, same),
      'unipc bh2 2, log-SNR': ('unipc', dict(order=2), None, same),
      'unipc bh2 2, optimized (old: log loss, no guard)': ('unipc', dict(order=2, grid='optimized'), OLD_TUNING, same),
      'unipc bh2 2, optimized (balanced + guard)': ('unipc', dict(order=2, grid='optimized'), TUNING, same),
      'ipndm 3 + AFS, log-SNR': ('ipndm', dict(max_order=3, **afs), None, plus1),
      'ipndm 3 + AFS, optimized': ('ipndm', dict(max_order=3, grid='optimized', **afs), TUNING, plus1),
  }


def data_moments(config):
  """Per-pixel mean and variance `[1, 8, 8]` of the training digits in model space ([-1, 1])."""
  ds = datasets.load_split(config.data, 'train')
  x = datasets.get_data_scaler(config.data)(ds.data.float() / 255.0)
  return x.mean(0), x.var(0)


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument('--workdir', default='/tmp/digits_demo')
  p.add_argument('--n', type=int, default=500)
  p.add_argument('--nfes', type=int, nargs='+', default=[4, 5, 6, 8, 10, 20])
  p.add_argument('--pc-steps', type=int, default=1000)
  p.add_argument('--methods', nargs='+', default=None, help='rows to run (default all)')
  p.add_argument('--out', default=os.path.join(RESULTS, 'few_step_digits.md'))
  args = p.parse_args(argv)
  torch.set_num_threads(1)
  config = load_config('digits')
  config.runtime.device = 'cpu'
  model, ckpt = load_eval_model(config, args.workdir)
  sde, shape = model.sde, (1, config.data.image_size, config.data.image_size)
  key = f'digits:{os.path.abspath(ckpt)}'
  x_T = sde.prior_sampling((args.n,) + shape, torch.Generator().manual_seed(99))
  t0 = time.time()
  with torch.no_grad():
    exact = reference_endpoints(sde, model, x_T, EPS, 1e-7)
    pc = sample(sde, model, (args.n,) + shape, 'pc', steps=args.pc_steps, corrector='none',
                generator=torch.Generator().manual_seed(7)).x

    def measure(x):
      return sliced_gap(tweedie_denoise(sde, model, x, EPS), pc)
    floor = measure(exact)
  print(f'# references in {time.time() - t0:.0f} s; exact PF-ODE sW2 vs pc = {floor:.4f}', flush=True)
  lines = [f'# Few-step sampling on the digits demo model ({os.path.basename(ckpt)}), n = {args.n}', '',
           f'Median / RMS L2 distance to the dopri5 (rtol 1e-7) PF-ODE endpoint of the same x_T, and sliced W2 '
           f'of the denoised samples against {args.pc_steps}-step pc samples (exact PF-ODE: {floor:.4f}).', '',
           '| method | NFE | median | RMS | sW2 | sW2 / exact | s |', '|---|---|---|---|---|---|---|']
  for name, (solver, opts, tuning, steps_of) in methods(data_moments(config)).items():
    if args.methods and name not in args.methods:
      continue
    for nfe in args.nfes:
      t0 = time.time()
      tuning_k = tuning and dataclasses.replace(tuning, key=key)
      with torch.no_grad():
        res = sample(sde, model, None, solver, steps=steps_of(nfe), x_init=x_T, denoise=False,
                     grid_tuning=tuning_k, **opts)
        d = (res.x - exact).reshape(args.n, -1).norm(dim=1)
        sw2 = measure(res.x)
      lines.append(f'| {name} | {res.nfe} | {float(d.median()):.2e} | {float(d.pow(2).mean().sqrt()):.2e} | '
                   f'{sw2:.4f} | {sw2 / floor:.2f} | {time.time() - t0:.0f} |')
      print(lines[-1], flush=True)
  os.makedirs(os.path.dirname(args.out), exist_ok=True)
  with open(args.out, 'w') as f:
    f.write('\n'.join(lines) + '\n')


if __name__ == '__main__':
  main()
