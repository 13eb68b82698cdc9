"""Guided sampling that stays in range (issue 26): a class-conditional digits model sampled
with classifier-free guidance at scales w, few-NFE solvers, with and without x0 clipping or
dynamic thresholding (`score_sde.sampling.thresholding`).

For each (w, solver, NFE, x0 mode): the fraction of pixels outside the data range [0, 1] (at
all, and by more than 0.1: the digits' background sits at 0, where tiny excursions are common),
and how often a digits classifier (scikit-learn LogisticRegression on the 8x8 digits, the data
the model was trained on, fit on its train split) gives the requested class (the samples
clamped to [0, 1], as a saved image would be). Samples: `--n` with one block per class
(`generate.class_labels_for`), the same seed in every cell. Prints a Markdown table.

  python main.py --mode train --config configs/digits_cond.py --workdir /tmp/dc   # first
  python benchmarks/guidance_range.py --workdir /tmp/dc [--n 500] [--scales 1 3 8] [--nfes 10 20]
"""
from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from benchmarks.common import load_config  # noqa: E402
from score_sde.app.generate import generate, class_labels_for  # noqa: E402
from score_sde.app.eval_model import load_eval_model  # noqa: E402
from score_sde.sampling import solver_spec  # noqa: E402

MODES = {'none': dict(clip_x0=False, threshold=0.0), 'clip': dict(clip_x0=True, threshold=0.0),
         'thresh .995': dict(clip_x0=False, threshold=0.995)}


def digits_classifier():
  """(classifier, held-out accuracy): a LogisticRegression on the digits' 8x8 pixels / 16
  (our data scale [0, 1]), fit on the first 1500 (the test split is the last 297)."""
  from sklearn.datasets import load_digits
  from sklearn.linear_model import LogisticRegression
  d = load_digits()
  x, y = d.images.reshape(len(d.images), -1) / 16.0, d.target
  rng = np.random.default_rng(0)
  order = rng.permutation(len(y))
  train, test = order[:1500], order[1500:]
  clf = LogisticRegression(max_iter=2000, C=1.0).fit(x[train], y[train])
  return clf, float(clf.score(x[test], y[test]))


def run_cell(config, model, clf, solver: str, nfe: int, w: float, mode: str, n: int):
  """(fraction of pixels outside [0, 1], outside by > 0.1, classifier accuracy on the requested
  labels, NFE)."""
  s = config.sampling
  s.guidance_scale, s.clip_x0, s.threshold = w, MODES[mode]['clip_x0'], MODES[mode]['threshold']
  spec = solver_spec(solver)
  s.steps = spec.steps_for_nfe(nfe, spec.options(), s.noise_removal)
  labels = class_labels_for(config, n, 'cpu')
  with torch.no_grad():
    x, used = generate(config, model, n, solver, seed=0, class_labels=labels)
  outside = float(((x < 0) | (x > 1)).float().mean())
  far = float(((x < -0.1) | (x > 1.1)).float().mean())
  pred = clf.predict(x.clamp(0, 1).reshape(n, -1).numpy())
  return outside, far, float((pred == labels.numpy()).mean()), used // -(-n // s.batch_size)


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  p.add_argument('--workdir', default='/tmp/dc', help='the trained digits_cond run')
  p.add_argument('--config', default='digits_cond')
  p.add_argument('--n', type=int, default=500)
  p.add_argument('--scales', type=float, nargs='+', default=[1.0, 3.0, 8.0])
  p.add_argument('--nfes', type=int, nargs='+', default=[10, 20])
  p.add_argument('--solvers', nargs='+', default=['ddim', 'dpm_solver', 'unipc'])
  args = p.parse_args(argv)
  config = load_config(args.config)
  config.runtime.device, config.sampling.batch_size, config.sampling.label = 'cpu', args.n, -1
  model, ckpt = load_eval_model(config, args.workdir)
  clf, acc = digits_classifier()
  print(f'model: {ckpt}; classifier held-out accuracy on real digits: {acc:.3f}; n = {args.n}')
  print('\n| w | solver | NFE | ' + ' | '.join(f'{m}: out / out>.1 / acc' for m in MODES) + ' |')
  print('|---|---|---|' + '---|' * len(MODES))
  start = time.time()
  for w in args.scales:
    for solver in args.solvers:
      for nfe in args.nfes:
        cells = [run_cell(config, model, clf, solver, nfe, w, m, args.n) for m in MODES]
        row = ' | '.join(f'{o:.1%} / {f:.1%} / {a:.1%}' for o, f, a, _ in cells)
        print(f'| {w:g} | {solver} | {cells[0][3]} | {row} |', flush=True)
  print(f'\nout: fraction of pixels outside [0, 1]; out>.1: outside [-0.1, 1.1]; acc: the classifier '
        f'gives the requested class. {time.time() - start:.0f} s')
  return 0


if __name__ == '__main__':
  sys.exit(main())
