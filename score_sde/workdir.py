"""Where a run keeps its checkpoints in the workdir, and which of them to resume or trust."""
from __future__ import annotations

import math
import os

import torch

from score_sde import checkpoint as ckpt

TASKS = ('score', 'classifier')


def ckpt_dir(workdir: str, task: str = 'score') -> str:
  """<workdir>/checkpoints for the score model, <workdir>/classifier/checkpoints for the noisy
  classifier of classifier guidance."""
  return os.path.join(workdir, *(['classifier'] if task == 'classifier' else []), 'checkpoints')


def latest_checkpoint(workdir: str, task: str = 'score') -> tuple[int, str] | None:
  found = ckpt.list_checkpoints(ckpt_dir(workdir, task))
  return found[-1] if found else None


def last_good_checkpoint(workdir: str, task: str = 'score') -> str | None:
  """The newest checkpoint whose recorded loss and weights are finite (None if there is none)."""
  for _, path in reversed(ckpt.list_checkpoints(ckpt_dir(workdir, task))):
    try:
      state = ckpt.read_checkpoint(path)
    except (ckpt.CheckpointError, OSError):
      continue
    loss = state.get('loss', 0.0)
    if (loss is None or math.isfinite(loss)) and all(
        torch.isfinite(v).all() for v in state['model'].values() if v.is_floating_point()):
      return path
  return None
