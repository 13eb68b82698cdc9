"""Do the speed variants train the same model? Loss curves of the real `Trainer` per variant.

Trains a config (default the digits demo, whose data is embedded) from the same seed for
`--steps` steps in each variant (benchmarks.common.TRAIN_VARIANTS: fp32 with TF32 off, bf16
autocast, bf16 + channels_last, ...) and prints a
markdown table of the mean loss per window of `--window` steps, with each variant's difference
from fp32 in units of its standard error: the per-step losses are noisy (a fresh t and noise per
step), so "within noise" means |difference| below about 3 standard errors in every window.
Also the final EMA weights' relative distance from fp32's.

  python benchmarks/loss_curves.py [--config configs/digits.py] [--steps 2000] [--window 250]
      [--variants fp32 bf16 bf16+cl] [--device cpu|cuda]
"""
from __future__ import annotations

import argparse
import math
import os
import sys
import tempfile
import time

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
from benchmarks.common import TRAIN_VARIANTS, apply_train_variant, load_config  # noqa: E402


def curve(args, variant: str):
  """(per-step losses [steps], flat EMA weights, seconds) of one variant."""
  from score_sde.app.build_train import build_trainer
  config = load_config(args.config)
  apply_train_variant(config, variant)
  config.runtime.device, config.data.num_workers = args.device, 0
  with tempfile.TemporaryDirectory() as wd:
    trainer = build_trainer(config, wd)
    t0 = time.perf_counter()
    losses = torch.stack([trainer.train_step()['loss'].detach().float() for _ in range(args.steps)])
    trainer.check_finite()
    sec = time.perf_counter() - t0
    ema = torch.cat([p.detach().float().flatten() for p in trainer.ema.shadow_params])
    trainer.close()
  return losses.cpu(), ema.cpu(), sec


def windows(losses: torch.Tensor, w: int):
  """(mean, standard error) per window of `w` steps."""
  chunks = losses[: len(losses) // w * w].reshape(-1, w)
  return chunks.mean(1), chunks.std(1) / math.sqrt(w)


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument('--config', default=os.path.join(ROOT, 'configs', 'digits.py'))
  p.add_argument('--steps', type=int, default=2000)
  p.add_argument('--window', type=int, default=250)
  p.add_argument('--variants', nargs='*', default=['fp32', 'bf16', 'bf16+cl'], choices=list(TRAIN_VARIANTS))
  p.add_argument('--device', default='cuda' if torch.cuda.is_available() else 'cpu')
  args = p.parse_args(argv)
  runs = {v: curve(args, v) for v in dict.fromkeys(['fp32'] + args.variants)}
  ref_mean, ref_se = windows(runs['fp32'][0], args.window)
  print('| steps | ' + ' | '.join(runs) + f' |  (mean loss per window; variants: change from fp32 in % and in standard errors; {args.device})')
  print('|---' * (len(runs) + 1) + '|')
  for i in range(len(ref_mean)):
    cells = [f'{ref_mean[i]:.4f}']
    for v in list(runs)[1:]:
      m, se = windows(runs[v][0], args.window)
      z = (m[i] - ref_mean[i]) / torch.sqrt(se[i] ** 2 + ref_se[i] ** 2)
      cells.append(f'{m[i]:.4f} ({100 * (m[i] / ref_mean[i] - 1):+.2f}%, {z:+.2f} SE)')
    print(f'| {(i + 1) * args.window} | ' + ' | '.join(cells) + ' |')
  ref_w = runs['fp32'][1]
  for v, (_, w, sec) in runs.items():
    print(f'{v}: {args.steps / sec:.1f} steps/s, EMA weights |w - w_fp32| / |w_fp32| = '
          f'{(w - ref_w).norm() / ref_w.norm():.2e}')


if __name__ == '__main__':
  main()
