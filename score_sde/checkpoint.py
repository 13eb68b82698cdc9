"""Checkpoints: atomic, checksummed writes; safe (`weights_only`) reads of our format and of
score_sde_pytorch's (`{'model', 'ema', 'optimizer', 'step'}`, keys prefixed by `module.`).

Our format is the reference's plus extra keys: `{'model', 'ema', 'optimizer', 'step', 'rng',
'loader', 'meta', 'format'}` ('meta' records the SDE, network and conventions), with the EMA in the reference's `{'decay', 'num_updates',
'shadow_params'}` layout, so either library can read the other's weights. A checkpoint is
written to a temporary file in the same folder, fsynced and renamed (so a crash never
leaves a torn file under the real name). Its integrity data travel inside it: 'integrity'
holds a SHA-256 of its contents (every tensor's dtype, shape and bytes, and every other
value, in a canonical order), verified on every load, so a damaged file is refused even
alone. The SHA-256 of the file's bytes is also written beside it (`<name>.sha256`) and
verified when present.
"""
from __future__ import annotations

import glob
import hashlib
import io
import json
import os
import re

import torch

from score_sde.errors import UserError

FORMAT = 'score_sde/1'
_NAME = re.compile(r'checkpoint_(\d+)\.pth$')
TMP_MARK = '.tmp.'


class CheckpointError(UserError, ValueError):
  """A checkpoint that cannot be read or does not match the model (one-line message)."""


def content_digest(obj) -> str:
  """SHA-256 of a checkpoint's contents, independent of how they were serialised."""
  h = hashlib.sha256()
  _feed(h, obj)
  return h.hexdigest()


def _feed(h, obj) -> None:
  if isinstance(obj, torch.Tensor):
    t = obj.detach().cpu().contiguous()
    h.update(f'T{t.dtype}{tuple(t.shape)}'.encode())
    h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b'')
  elif isinstance(obj, dict):
    h.update(f'D{len(obj)}'.encode())
    for k in sorted(obj, key=repr):
      h.update(repr(k).encode())
      _feed(h, obj[k])
  elif isinstance(obj, (list, tuple)):
    h.update(f'L{len(obj)}'.encode())
    for v in obj:
      _feed(h, v)
  else:
    h.update(f'{type(obj).__name__}:{obj!r}'.encode())

def _fsync_dir(path: str) -> None:
  try:
    fd = os.open(path, os.O_RDONLY)
  except OSError:
    return
  try:
    os.fsync(fd)
  finally:
    os.close(fd)


def _atomic_write(path: str, data: bytes) -> None:
  folder = os.path.dirname(os.path.abspath(path))
  os.makedirs(folder, exist_ok=True)
  tmp = f'{path}{TMP_MARK}{os.getpid()}'
  try:
    with open(tmp, 'wb') as f:
      f.write(data)
      f.flush()
      os.fsync(f.fileno())
    os.replace(tmp, path)
  except BaseException:
    if os.path.exists(tmp):  # a full disk or an interruption must not leave partial files
      os.remove(tmp)
    raise
  _fsync_dir(folder)


def save_checkpoint(path: str, state: dict) -> None:
  """Atomically write `state` (tensors, numbers, strings, lists, dicts) to `path`."""
  state = {**state, 'format': FORMAT}
  state['integrity'] = {'sha256': content_digest(state)}
  buf = io.BytesIO()
  torch.save(state, buf)
  data = buf.getvalue()
  _atomic_write(path, data)
  _atomic_write(path + '.sha256', hashlib.sha256(data).hexdigest().encode())


def save_arrays(path: str, **arrays) -> None:
  """Atomically write named NumPy arrays as an .npz file (shards of resumable evaluations)."""
  import numpy as np
  buf = io.BytesIO()
  np.savez(buf, **arrays)
  _atomic_write(path, buf.getvalue())


def save_npy(path: str, array) -> None:
  """Atomically write one NumPy array as .npy."""
  import numpy as np
  buf = io.BytesIO()
  np.save(buf, np.asarray(array), allow_pickle=False)
  _atomic_write(path, buf.getvalue())


def save_json(path: str, obj) -> None:
  """Atomically write `obj` as indented JSON."""
  _atomic_write(path, (json.dumps(obj, indent=2) + '\n').encode())


def read_checkpoint(path: str, map_location='cpu') -> dict:
  """Load a checkpoint of either format with `weights_only=True`, verify its checksum and
  strip DataParallel's `module.` prefix. Returns `{'model', 'ema', 'optimizer', 'step', ...}`."""
  if not os.path.isfile(path):
    raise FileNotFoundError(f'checkpoint not found: {path}')
  with open(path, 'rb') as f:
    data = f.read()
  digest_file = path + '.sha256'
  if os.path.isfile(digest_file):
    with open(digest_file) as f:
      expected = f.read().strip()
    if hashlib.sha256(data).hexdigest() != expected:
      raise CheckpointError(f'corrupt checkpoint {path}: SHA-256 does not match {digest_file}')
  try:
    state = torch.load(io.BytesIO(data), map_location=map_location, weights_only=True)
  except Exception as e:  # noqa: BLE001 - any unpickling failure means a bad file
    raise CheckpointError(f'corrupt or unsafe checkpoint {path}: {_load_failure(e)}') from None
  if not isinstance(state, dict) or 'model' not in state:
    raise CheckpointError(f"not a score_sde checkpoint {path}: no 'model' entry")
  integrity = state.pop('integrity', None)
  if isinstance(integrity, dict) and integrity.get('sha256') != content_digest(state):
    raise CheckpointError(f'corrupt checkpoint {path}: its contents do not match the SHA-256 '
                          'stored inside it (damaged on disk or in transfer)')
  state['model'] = strip_prefix(state['model'])
  return state


def _load_failure(e: Exception) -> str:
  """torch.load's failure in the user's terms (never its advice to drop weights_only)."""
  text = str(e)
  if 'Weights only load failed' in text or 'Unsupported global' in text:
    return 'it holds Python objects other than tensors, which are never unpickled (unsafe file)'
  if 'zip archive' in text or 'central directory' in text or 'EOF' in text or 'magic number' in text:
    return 'the file is truncated or is not a PyTorch checkpoint'
  first = text.strip().splitlines()[0] if text.strip() else type(e).__name__
  return first[:200]


def remove_partial_writes(folder: str) -> list[str]:
  """Delete temporary files left in `folder` by writers that were killed or ran out of disk
  (`<name>.tmp.<pid>` whose process is gone). Returns the paths removed."""
  removed = []
  for path in glob.glob(os.path.join(folder, f'*{TMP_MARK}*')):
    pid = path.rsplit(TMP_MARK, 1)[1]
    if pid.isdigit() and int(pid) != os.getpid() and _alive(int(pid)):
      continue
    os.remove(path)
    removed.append(path)
  return removed


def _alive(pid: int) -> bool:
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  except PermissionError:
    return True
  return True


def strip_prefix(state_dict: dict, prefix: str = 'module.') -> dict:
  """Remove a DataParallel/DDP prefix from every key that has it."""
  return {(k[len(prefix):] if k.startswith(prefix) else k): v for k, v in state_dict.items()}


def check_state_dict(module: torch.nn.Module, state_dict: dict, where: str = 'checkpoint') -> None:
  """Raise a one-line CheckpointError naming the first missing/unexpected key or bad shape."""
  own = module.state_dict()
  for k, v in own.items():
    if k not in state_dict:
      raise CheckpointError(f"{where} does not match the model: missing key '{k}'")
    if tuple(state_dict[k].shape) != tuple(v.shape):
      raise CheckpointError(f"{where} does not match the model: '{k}' has shape "
                            f"{tuple(state_dict[k].shape)}, the model expects {tuple(v.shape)}")
  for k in state_dict:
    if k not in own:
      raise CheckpointError(f"{where} does not match the model: unexpected key '{k}'")


def load_weights(module: torch.nn.Module, state_dict: dict, where: str = 'checkpoint') -> None:
  """`load_state_dict(strict=True)` after a readable key/shape check."""
  check_state_dict(module, state_dict, where)
  module.load_state_dict(state_dict, strict=True)


def step_of(path: str) -> int | None:
  """The step in a `checkpoint_<step>.pth` file name (None for other names)."""
  m = _NAME.search(path)
  return int(m.group(1)) if m else None


def list_checkpoints(folder: str) -> list[tuple[int, str]]:
  """`(step, path)` of every `checkpoint_<step>.pth` in folder, sorted by step."""
  paths = glob.glob(os.path.join(folder, 'checkpoint_*.pth'))
  return sorted((step_of(p), p) for p in paths if step_of(p) is not None)


def prune_checkpoints(folder: str, keep: int, protect=lambda step: False) -> None:
  """Delete all but the newest `keep` checkpoints, sparing those `protect(step)` is true for."""
  ckpts = list_checkpoints(folder)
  for step, path in ckpts[:max(len(ckpts) - keep, 0)]:
    if not protect(step):
      for p in (path, path + '.sha256'):
        if os.path.exists(p):
          os.remove(p)
