"""The device and the mixed-precision context a run uses (config.runtime)."""
from __future__ import annotations

import os

import torch

from score_sde.errors import UserError


def get_device(config) -> torch.device:
  """The configured device; also applies `runtime.deterministic` (deterministic kernels)."""
  if config.runtime.deterministic:
    os.environ.setdefault('CUBLAS_WORKSPACE_CONFIG', ':4096:8')  # needed by deterministic cuBLAS
    torch.use_deterministic_algorithms(True)
    torch.backends.cudnn.benchmark = False
  want = config.runtime.device
  if want == 'auto':
    return torch.device('cuda' if torch.cuda.is_available() else 'cpu')
  if want.startswith('cuda') and not torch.cuda.is_available():
    raise UserError(f"config.runtime.device is '{want}' but CUDA is not available")
  return torch.device(want)


def autocast(config, device: torch.device):
  """bf16 autocast when config.runtime.amp == 'bf16' (weights and optimizer stay fp32)."""
  return torch.autocast(device.type, dtype=torch.bfloat16, enabled=config.runtime.amp == 'bf16')
