"""What the benchmark scripts share: loading a config file, and switching a training speed
variant on (the `runtime.*` / `optim.*` keys, plus TF32, which PyTorch sets globally)."""
from __future__ import annotations

import importlib.util
import os

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

TRAIN_VARIANTS = {  # name: (runtime.amp, channels_last, compile (+ fused Adam), tf32)
    'fp32': ('none', False, False, False),
    'tf32': ('none', False, False, True),
    'bf16': ('bf16', False, False, True),
    'bf16+cl': ('bf16', True, False, True),
    'bf16+cl+compile': ('bf16', True, True, True),
}


def load_config(path_or_name: str):
  """`get_config()` of a config file: a path, or a bare name in configs/ ('vp_cifar')."""
  path = path_or_name if path_or_name.endswith('.py') else os.path.join(ROOT, 'configs', path_or_name + '.py')
  spec = importlib.util.spec_from_file_location(os.path.basename(path)[:-3], path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config()


def apply_train_variant(config, variant: str) -> None:
  """Set `config` (and the global TF32 switches) for a TRAIN_VARIANTS entry."""
  amp, cl, comp, tf32 = TRAIN_VARIANTS[variant]
  config.runtime.amp, config.runtime.channels_last, config.runtime.compile = amp, cl, comp
  config.optim.fused = comp
  torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = tf32
