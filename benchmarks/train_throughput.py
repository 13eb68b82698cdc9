"""Training throughput (steps/s) and peak memory of the real `Trainer` for each CIFAR config and
speed variant, on random uint8 data (no dataset needed) and random initial weights.

Variants (the `runtime.*` / `optim.*` keys that switch the fast paths on):
  fp32            as shipped (TF32 off);
  tf32            TF32 matmuls / convolutions;
  bf16            runtime.amp = bf16 autocast;
  bf16+cl         ... + runtime.channels_last;
  bf16+cl+compile ... + runtime.compile (torch.compile of the model), fused Adam (optim.fused).

Every variant runs `--warmup` steps, then `--steps` timed steps with one host sync at the end
(the training step itself makes none; see tests/test_no_host_sync.py). Prints a markdown table.

  python benchmarks/train_throughput.py [--configs vp_cifar subvp_cifar ve_cifar ddpm_cifar]
      [--variants fp32 bf16 ...] [--batch 128] [--steps 50] [--device cuda]
  python benchmarks/train_throughput.py --quick       # CPU smoke run: tiny nets, 3 steps
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from unittest import mock

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
from benchmarks.common import TRAIN_VARIANTS, apply_train_variant, load_config  # noqa: E402

VARIANTS = TRAIN_VARIANTS
CONFIGS = ('vp_cifar', 'subvp_cifar', 've_cifar', 'ddpm_cifar')


def random_data(config, n: int = 512):
  """An in-memory dataset of random uint8 images of the config's shape."""
  from score_sde.data.readers import InMemoryDataset
  d = config.data
  g = torch.Generator().manual_seed(0)
  images = torch.randint(0, 256, (n, d.num_channels, d.image_size, d.image_size), generator=g, dtype=torch.uint8)
  return InMemoryDataset(images, torch.zeros(n, dtype=torch.long), random_flip=d.random_flip)


def configure(name: str, variant: str, args):
  config = load_config(name)
  apply_train_variant(config, variant)
  config.runtime.device = args.device
  config.training.batch_size = args.batch
  config.data.num_workers = 0
  if args.quick:  # a tiny network of the same family, for a CPU smoke run
    config.model.nf, config.model.ch_mult, config.model.num_res_blocks = 32, (1, 2), 1
    config.model.attn_resolutions, config.data.image_size = (8,), 16
  return config


def sync(device: str) -> None:
  if device.startswith('cuda'):
    torch.cuda.synchronize()


def measure(name: str, variant: str, args) -> dict:
  """steps/s and peak memory (GiB; CUDA only) of `args.steps` training steps."""
  from score_sde.app.build_train import build_trainer
  config = configure(name, variant, args)
  with tempfile.TemporaryDirectory() as wd, \
       mock.patch('score_sde.training.trainer._load_train_data', lambda c: random_data(c)):
    trainer = build_trainer(config, wd)
    try:
      for _ in range(args.warmup):
        trainer.train_step()
      sync(args.device)
      if args.device.startswith('cuda'):
        torch.cuda.reset_peak_memory_stats()
      t0 = time.perf_counter()
      for _ in range(args.steps):
        metrics = trainer.train_step()
      trainer.check_finite()
      sync(args.device)
      sec = time.perf_counter() - t0
      peak = torch.cuda.max_memory_allocated() / 2 ** 30 if args.device.startswith('cuda') else float('nan')
      return {'steps_per_s': args.steps / sec, 'peak_gib': peak, 'loss': float(metrics['loss'])}
    finally:
      trainer.close()


def parse_args(argv=None):
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument('--configs', nargs='*', default=list(CONFIGS))
  p.add_argument('--variants', nargs='*', default=list(VARIANTS), help='subset of: ' + ', '.join(VARIANTS))
  p.add_argument('--batch', type=int, default=128)
  p.add_argument('--steps', type=int, default=50)
  p.add_argument('--warmup', type=int, default=10)
  p.add_argument('--device', default='cuda' if torch.cuda.is_available() else 'cpu')
  p.add_argument('--quick', action='store_true', help='CPU smoke run: tiny networks, batch 4, 3 steps')
  args = p.parse_args(argv)
  if args.quick:
    args.batch, args.steps, args.warmup = 4, 3, 1
    args.variants = [v for v in args.variants if 'compile' not in v]
  return args


def main(argv=None):
  args = parse_args(argv)
  dev = torch.cuda.get_device_name() if args.device.startswith('cuda') else 'CPU'
  print(f'| config | variant | steps/s | peak GiB | loss |  ({dev}, batch {args.batch}, {args.steps} steps)')
  print('|---|---|---|---|---|')
  for name in args.configs:
    for variant in args.variants:
      try:
        r = measure(name, variant, args)
      except Exception as e:  # noqa: BLE001 -- one failed variant (a compile error, say) must not end the run
        print(f'| {name} | {variant} | failed: {type(e).__name__}: {str(e).splitlines()[0][:120]} | | |', flush=True)
        continue
      print(f"| {name} | {variant} | {r['steps_per_s']:.2f} | {r['peak_gib']:.2f} | {r['loss']:.4g} |", flush=True)


if __name__ == '__main__':
  main()
