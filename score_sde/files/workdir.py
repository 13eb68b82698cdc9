"""Where a run keeps its checkpoints in the workdir, and which of them to resume or trust.

The newest checkpoint is the one with the largest step stored inside it (`checkpoint.
list_checkpoints` reads each file's step once, without its tensors): a renamed copy never
passes for a newer state, and anything named like a checkpoint that is not a regular file
(a dangling link, a folder, a FIFO) is skipped with a warning.
"""
from __future__ import annotations

import math
import os

from score_sde.errors import UserError
from score_sde.files import checkpoint as ckpt
from score_sde.files.atomic import probe_writable

TASKS = ('score', 'classifier')


def ckpt_dir(workdir: str, task: str = 'score') -> str:
  """<workdir>/checkpoints for the score model, <workdir>/classifier/checkpoints for the noisy
  classifier of classifier guidance."""
  return os.path.join(workdir, *(['classifier'] if task == 'classifier' else []), 'checkpoints')


def latest_checkpoint(workdir: str, task: str = 'score') -> tuple[int, str] | None:
  """(stored step, path) of the newest checkpoint of the workdir, or None."""
  found = ckpt.list_checkpoints(ckpt_dir(workdir, task))
  return found[-1] if found else None


def last_good_checkpoint(workdir: str, task: str = 'score') -> str | None:
  """The newest checkpoint that reads and whose recorded loss, weights and EMA weights are
  finite (None if there is none)."""
  for _, path in reversed(ckpt.list_checkpoints(ckpt_dir(workdir, task))):
    try:
      state = ckpt.read_checkpoint(path)
    except (ckpt.CheckpointError, OSError):
      continue
    loss = state.get('loss', 0.0)
    finite_loss = loss is None or (isinstance(loss, (int, float)) and math.isfinite(loss))
    if finite_loss and ckpt.non_finite_weights(state) is None:
      return path
  return None


def grid_cache_in(sampling, workdir: str) -> None:
  """Optimized time grids are cached in <workdir>/grids unless `sampling.grid_cache_dir` (the
  config's sampling section, set here) is set."""
  if sampling.grid == 'optimized' and not sampling.grid_cache_dir:
    sampling.grid_cache_dir = os.path.join(workdir, 'grids')


def ensure_writable(folder: str, what: str) -> str:
  """Create `folder` if needed and check that a file can be written in it, before any work
  whose result would be lost; a one-line UserError otherwise. Returns the folder."""
  try:
    probe_writable(folder)
  except OSError as e:
    blocker = _file_in_path(folder)
    if blocker is not None:
      raise UserError(f'cannot write {what} in {folder}: {blocker} is a file, not a directory') from None
    raise UserError(f'cannot write {what} in {folder}: {e.strerror or e}') from None
  return folder


def _file_in_path(folder: str) -> str | None:
  """The first component of `folder` that exists and is not a directory, if any."""
  path = os.path.abspath(folder)
  parts = []
  while path and path != os.path.dirname(path):
    parts.append(path)
    path = os.path.dirname(path)
  for p in reversed(parts):
    if os.path.exists(p) and not os.path.isdir(p):
      return p
  return None


def write_output(path: str, writer) -> None:
  """`writer(path)`, with a failed write (full disk, say) as a one-line UserError."""
  try:
    writer(path)
  except OSError as e:
    raise UserError(f'cannot write {path}: {e.strerror or e}') from None
