"""GPU throughput of the samplers and the likelihood with a real score network.

Builds `score_sde.app.build.create_model(config, sde)` from a config file (default
configs/vp_cifar.py; random weights unless --checkpoint) and prints two markdown tables:

* sampling at batch `--batch` (128): for each solver and variant, ms per step and images/s.
  Solvers with 1000 steps (PC, DDPM, Euler-Maruyama) are timed over `--long-steps` (100) steps
  of the same per-step cost and images/s is given for 1000 steps (batch / (1000 x s per step));
  the fast solvers run their full step count.
* the likelihood (PF-ODE + Hutchinson, dopri5, rtol = atol = 1e-5) at `--likelihood-batch`:
  NFE, ms per function evaluation (one network forward plus one vector-Jacobian product), ms
  per image, and the mean bits/dim change from fp32 on the same dequantised batch and probe.

Variants: fp32 (TF32 off), tf32, bf16 / fp16 (autocast of the network; TF32 on), each with
'+graphs' for `runtime.cuda_graphs` (score_sde.sampling.graphed) and '+compile' for torch.compile of the
network. CUDA unless --quick (a CPU smoke run of a tiny net).

  python benchmarks/sampling_throughput.py [--config configs/vp_cifar.py] [--checkpoint ckpt]
      [--variants fp32 tf32 bf16 bf16+graphs] [--likelihood-variants fp32 tf32 fp16 bf16]
  python benchmarks/sampling_throughput.py --quick
"""
from __future__ import annotations

import argparse
import os
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from benchmarks.common import load_config  # noqa: E402

# name: (solver, steps, options) at the recommended NFE of each paper / of our benchmark
RUNS = {
    'pc 1000 (rd+langevin)': ('pc', 1000, {}),
    'pc 1000 (em, no corrector)': ('pc', 1000, {'predictor': 'euler_maruyama', 'corrector': 'none'}),
    'ddpm 1000': ('ddpm', 1000, {}),
    'ddim 100': ('ddim', 100, {}),
    'heun (EDM) 18 (35 NFE)': ('heun', 18, {}),
    'dpm++ 2M 20': ('dpm_solver', 20, {'order': 2}),
    'dpm++ 3M 20': ('dpm_solver', 20, {'order': 3}),
    'unipc bh2-3 20': ('unipc', 20, {'order': 3}),
}
PRECISIONS = {'fp32': (None, False), 'tf32': (None, True), 'bf16': (torch.bfloat16, True),
              'fp16': (torch.float16, True)}


def parse_args(argv=None):
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument('--config', default='configs/vp_cifar.py', help='a config file with get_config()')
  p.add_argument('--checkpoint', default=None, help='optional checkpoint to load')
  p.add_argument('--batch', type=int, default=128)
  p.add_argument('--long-steps', type=int, default=100, help='steps timed for the 1000-step solvers')
  p.add_argument('--solvers', nargs='*', default=list(RUNS), help='subset of: ' + ', '.join(RUNS))
  p.add_argument('--variants', nargs='*', default=['fp32', 'tf32', 'bf16', 'bf16+graphs'])
  p.add_argument('--likelihood-variants', nargs='*', default=['fp32', 'tf32', 'fp16', 'bf16'])
  p.add_argument('--likelihood-batch', type=int, default=128)
  p.add_argument('--quick', action='store_true', help='CPU smoke run: tiny network, batch 2')
  args = p.parse_args(argv)
  if args.quick:
    args.batch = args.likelihood_batch = 2
    args.long_steps = 3
    args.variants = [v for v in args.variants if v in ('fp32', 'bf16+graphs')]
    args.likelihood_variants = [v for v in args.likelihood_variants if v in ('fp32', 'fp16')]
  return args


def build_model(args, device):
  """(model, image shape) for the config: the ScoreModel, eval mode, on `device`."""
  from score_sde.app.build import create_model
  from score_sde.app.loading import load_checkpoint
  from score_sde.app.build import build_sde
  config = load_config(args.config)
  if args.quick:
    config.model.nf, config.model.ch_mult, config.model.num_res_blocks = 32, (1, 2), 1
    config.model.attn_resolutions, config.data.image_size = (8,), 16
  sde = build_sde(config)
  model = load_checkpoint(args.checkpoint, config, device=device, sde=sde) if args.checkpoint \
      else create_model(config, sde)
  model = model.to(device).eval()
  return model, (config.data.num_channels, config.data.image_size, config.data.image_size)


def network_for(model, variant: str):
  """(network, autocast dtype or None) of a variant name such as 'bf16+compile'; sets TF32."""
  parts = variant.split('+')
  dtype, tf32 = PRECISIONS[parts[0]]
  torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = tf32
  return (torch.compile(model) if 'compile' in parts else model), dtype


def score_for(model, variant: str, device):
  """The sampler's score_fn of a variant: autocast, compile, CUDA graphs ('bf16+graphs')."""
  from score_sde.sampling.graphed import GraphedScore
  net, dtype = network_for(model, variant)

  def score_fn(x, t):
    with torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
      return net(x, t).float()
  return GraphedScore(score_fn) if 'graphs' in variant.split('+') else score_fn


def timed(fn):
  if torch.cuda.is_available():
    torch.cuda.synchronize()
  t0 = time.perf_counter()
  out = fn()
  if torch.cuda.is_available():
    torch.cuda.synchronize()
  return out, time.perf_counter() - t0


def sampling_table(args, model, shape, device):
  from score_sde.sampling import sample
  gen = torch.Generator(device=device).manual_seed(0)
  print(f'| solver | variant | NFE | ms/step | images/s |  (batch {args.batch}; 1000-step solvers '
        f'timed over {args.long_steps} steps)')
  print('|---|---|---|---|---|')
  for variant in args.variants:
    score_fn = score_for(model, variant, device)
    sample(model.sde, score_fn, (args.batch, *shape), 'ddim', steps=3, generator=gen, device=device)  # warm-up
    for name in args.solvers:
      solver, steps, options = RUNS[name]
      run_steps = args.long_steps if steps == 1000 else steps
      res, sec = timed(lambda: sample(model.sde, score_fn, (args.batch, *shape), solver, steps=run_steps,
                                      generator=gen, device=device, **options))
      per_step = sec / run_steps
      print(f'| {name} | {variant} | {res.nfe * steps // run_steps} | {1e3 * per_step:.2f} | '
            f'{args.batch / (per_step * steps):.1f} |', flush=True)


def likelihood_table(args, model, shape, device):
  from score_sde.maths.likelihood import bits_per_dim, log_likelihood
  g = torch.Generator(device=device).manual_seed(1)
  x = (torch.randint(0, 256, (args.likelihood_batch, *shape), generator=g, device=device).float()
       + torch.rand(args.likelihood_batch, *shape, generator=g, device=device)) / 128 - 1
  print(f'\n| likelihood variant | NFE | ms/evaluation | ms/image | bits/dim - fp32 |  (batch {args.likelihood_batch})')
  print('|---|---|---|---|---|')
  ref = None
  for variant in args.likelihood_variants:
    net, dtype = network_for(model, variant)
    amp = {None: 'none', torch.float16: 'fp16', torch.bfloat16: 'bf16'}[dtype]
    res, sec = timed(lambda: log_likelihood(model.sde, net, x, amp=amp,
                                            generator=torch.Generator(device=device).manual_seed(2)))
    bpd = bits_per_dim(res.logp, x.shape).mean().item()
    ref = bpd if ref is None else ref
    print(f'| {variant} | {res.nfe} | {1e3 * sec / res.nfe:.1f} | {1e3 * sec / len(x):.2f} | '
          f'{bpd - ref:+.4f} |', flush=True)


def main(argv=None):
  args = parse_args(argv)
  if not torch.cuda.is_available() and not args.quick:
    sys.exit('sampling_throughput.py needs a CUDA GPU (none found; --quick runs a CPU smoke test)')
  device = torch.device('cuda' if torch.cuda.is_available() else 'cpu')
  model, shape = build_model(args, device)
  print(f'device: {torch.cuda.get_device_name() if device.type == "cuda" else "cpu"}; config {args.config}')
  if args.solvers and args.variants:
    sampling_table(args, model, shape, device)
  if args.likelihood_variants:
    likelihood_table(args, model, shape, device)


if __name__ == '__main__':
  main()
