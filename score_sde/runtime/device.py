"""The device, CPU threads and mixed-precision context a run uses (the `config.runtime` section,
which the functions here take as `runtime`)."""
from __future__ import annotations

import os

import torch

from score_sde.errors import UserError


AMP_MODES = ('none', 'bf16')


def get_device(runtime) -> torch.device:
  """The configured device; also applies `runtime.deterministic` (deterministic kernels)."""
  if runtime.deterministic:
    os.environ.setdefault('CUBLAS_WORKSPACE_CONFIG', ':4096:8')  # needed by deterministic cuBLAS
    torch.use_deterministic_algorithms(True)
    torch.backends.cudnn.benchmark = False
  want = runtime.device
  if want == 'auto':
    return torch.device('cuda' if torch.cuda.is_available() else 'cpu')
  if want.startswith('cuda') and not torch.cuda.is_available():
    raise UserError(f"config.runtime.device is '{want}' but CUDA is not available")
  return torch.device(want)


def configure_threads(runtime) -> int:
  """Apply runtime.num_threads to torch's CPU thread pool and return the count in use.

  0 (auto): one thread on a CPU run, unless OMP_NUM_THREADS is set (then torch's choice is
  kept); a CUDA run keeps torch's default. On a shared 2-core machine the digits demo trained
  at ~14 steps/s on one thread whether or not another busy process ran, while two threads
  fell to ~1 step/s next to one (the second thread spin-waits for a descheduled partner);
  the command line also sets OMP_WAIT_POLICY=PASSIVE unless given, which removes most of
  that collapse for runs that ask for more threads."""
  n = runtime.num_threads
  if n == 0:
    want = runtime.device
    cpu = want == 'cpu' or (want == 'auto' and not torch.cuda.is_available())
    if os.environ.get('OMP_NUM_THREADS') or not cpu:
      return torch.get_num_threads()
    n = 1
  torch.set_num_threads(n)
  return n


def autocast(amp: str, device: torch.device):
  """bf16 autocast when `amp` (runtime.amp) is 'bf16' (weights and optimizer stay fp32)."""
  return torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp == 'bf16')
