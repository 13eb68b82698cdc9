"""GPU throughput of the samplers and the likelihood with a real score network.

Builds `score_sde.models.create_model(config, sde)` from a config file (default
configs/vp_cifar.py; random weights unless --checkpoint), then measures images/s at batch
`--batch` (128) for 1000-step PC (reverse diffusion + Langevin) and for each fast solver at
its recommended NFE, and the likelihood (PF-ODE + Hutchinson, dopri5) in ms per function
evaluation (one network forward plus one vector-Jacobian product) and per image, with
optional bf16 autocast and torch.compile. CUDA unless --quick (a CPU smoke run of a tiny net).

  python benchmarks/sampling_throughput.py --config configs/vp_cifar.py [--bf16] [--compile]
  python benchmarks/sampling_throughput.py --quick
"""
from __future__ import annotations

import argparse
import importlib.util
import os
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# name: (solver, steps, options) at the recommended NFE of each paper / of our benchmark
RUNS = {
    'pc 1000 (rd+langevin)': ('pc', 1000, {}),
    'ddpm 1000': ('ddpm', 1000, {}),
    'ddim 100': ('ddim', 100, {}),
    'heun (EDM) 18 (35 NFE)': ('heun', 18, {}),
    'dpm++ 2M 20': ('dpm_solver', 20, {'order': 2}),
    'dpm++ 3M 20': ('dpm_solver', 20, {'order': 3}),
    'dpm++ 3S 10 (30 NFE)': ('dpm_solver', 10, {'order': 3, 'multistep': False}),
    'sde euler 1000': ('sde', 1000, {}),
}


def parse_args(argv=None):
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument('--config', default='configs/vp_cifar.py', help='a config file with get_config()')
  p.add_argument('--checkpoint', default=None, help='optional checkpoint to load')
  p.add_argument('--batch', type=int, default=128)
  p.add_argument('--bf16', action='store_true', help='bf16 autocast around the network')
  p.add_argument('--compile', action='store_true', help='torch.compile the network')
  p.add_argument('--solvers', nargs='*', default=list(RUNS), help='subset of: ' + ', '.join(RUNS))
  p.add_argument('--likelihood-batch', type=int, default=128)
  p.add_argument('--repeats', type=int, default=1)
  p.add_argument('--quick', action='store_true', help='CPU smoke run: tiny network, batch 2, few solvers')
  args = p.parse_args(argv)
  if args.quick:
    args.batch = args.likelihood_batch = 2
    args.solvers = ['ddim 100', 'dpm++ 3M 20']
  return args


def load_config(path: str):
  spec = importlib.util.spec_from_file_location('bench_config', path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config()


def build_score_fn(args, device):
  """(sde, score_fn [B, C, H, W] x [B] -> [B, C, H, W], image shape) for the config."""
  from score_sde.models import create_model, load_checkpoint
  from score_sde.sdes import get_sde
  config = load_config(args.config)
  if args.quick:
    config.model.nf, config.model.ch_mult, config.model.num_res_blocks = 32, (1, 2), 1
    config.model.attn_resolutions, config.data.image_size = (8,), 16
  sde = get_sde(config)
  if args.checkpoint:
    model = load_checkpoint(args.checkpoint, config, device=device, sde=sde)
  else:
    model = create_model(config, sde)
  model = model.to(device).eval()
  net = torch.compile(model) if args.compile else model

  def score_fn(x, t):
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=args.bf16):
      return net(x, t).float()
  shape = (config.data.num_channels, config.data.image_size, config.data.image_size)
  return sde, score_fn, shape


def _sync():
  if torch.cuda.is_available():
    torch.cuda.synchronize()


def timed(fn, repeats: int):
  _sync()
  t0 = time.perf_counter()
  for _ in range(repeats):
    out = fn()
  _sync()
  return out, (time.perf_counter() - t0) / repeats


def main(argv=None):
  args = parse_args(argv)
  if not torch.cuda.is_available() and not args.quick:
    sys.exit('sampling_throughput.py needs a CUDA GPU (none found; --quick runs a CPU smoke test)')
  from score_sde.likelihood import log_likelihood
  from score_sde.sampling import sample
  device = torch.device('cuda' if torch.cuda.is_available() else 'cpu')
  torch.backends.cuda.matmul.allow_tf32 = True
  torch.backends.cudnn.allow_tf32 = True
  sde, score_fn, shape = build_score_fn(args, device)
  gen = torch.Generator(device=device).manual_seed(0)
  sample(sde, score_fn, (args.batch, *shape), 'ddim', steps=2, generator=gen, device=device)  # warm-up
  print(f'| solver | NFE | images/s | s/batch |  (batch {args.batch}, bf16={args.bf16}, compile={args.compile})')
  print('|---|---|---|---|')
  for name in args.solvers:
    solver, steps, options = RUNS[name]
    res, sec = timed(lambda: sample(sde, score_fn, (args.batch, *shape), solver, steps=steps,
                                    generator=gen, device=device, **options), args.repeats)
    print(f'| {name} | {res.nfe} | {args.batch / sec:.1f} | {sec:.2f} |', flush=True)
  x = torch.rand(args.likelihood_batch, *shape, device=device, generator=gen) * 2 - 1
  res, sec = timed(lambda: log_likelihood(sde, score_fn, x, generator=gen), args.repeats)
  print(f'likelihood (dopri5, Hutchinson, batch {args.likelihood_batch}): {res.nfe} function '
        f'evaluations, {1e3 * sec / res.nfe:.1f} ms per evaluation, {1e3 * sec:.0f} ms per batch, '
        f'{1e3 * sec / args.likelihood_batch:.2f} ms per image')


if __name__ == '__main__':
  main()
