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

Temporary files are made by score_sde.files.atomic (O_EXCL | O_NOFOLLOW, unpredictable names: a
link planted in the folder is never written through). The newest checkpoint of a folder is the
one with the largest step stored inside it, not in its name (`list_checkpoints`).
"""
from __future__ import annotations

import glob
import hashlib
import io
import json
import logging
import os
import re
import stat
import warnings

import torch

from score_sde.files.atomic import TMP_MARK, atomic_file, finite_json, remove_partial_writes  # noqa: F401
from score_sde.errors import UserError

FORMAT = 'score_sde/1'
_NAME = re.compile(r'checkpoint_(\d+)\.pth$')


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


def _atomic_write(path: str, data: bytes) -> None:
  with atomic_file(path) as f:
    f.write(data)


def save_checkpoint(path: str, state: dict) -> None:
  """Atomically write `state` (tensors, numbers, strings, lists, dicts) to `path`."""
  state = {**state, 'format': FORMAT}
  state['integrity'] = {'sha256': content_digest(state)}
  buf = io.BytesIO()
  torch.save(state, buf)
  data = buf.getvalue()
  _atomic_write(path, data)
  _atomic_write(path + '.sha256', hashlib.sha256(data).hexdigest().encode())


def save_arrays(path: str, compressed: bool = False, **arrays) -> None:
  """Atomically write named NumPy arrays as an .npz file (shards of resumable evaluations;
  `compressed`: np.savez_compressed, for the outputs of --mode sample / inpaint)."""
  import numpy as np
  buf = io.BytesIO()
  (np.savez_compressed if compressed else np.savez)(buf, **arrays)
  _atomic_write(path, buf.getvalue())


def save_npy(path: str, array) -> None:
  """Atomically write one NumPy array as .npy."""
  import numpy as np
  buf = io.BytesIO()
  np.save(buf, np.asarray(array), allow_pickle=False)
  _atomic_write(path, buf.getvalue())


def save_json(path: str, obj) -> None:
  """Atomically write `obj` as indented JSON. Non-finite floats (JSON has no NaN or Infinity)
  are written as null, with a warning naming their keys; NumPy scalars and arrays as numbers
  and lists."""
  bad: list[str] = []
  clean = finite_json(obj, '', bad)
  if bad:
    warnings.warn(f'{path}: non-finite values written as null: {", ".join(bad)}', stacklevel=2)
  _atomic_write(path, (json.dumps(clean, indent=2, allow_nan=False) + '\n').encode())


def read_checkpoint(path: str, map_location='cpu') -> dict:
  """Load a checkpoint of either format with `weights_only=True`, verify its checksum and
  strip DataParallel's `module.` prefix. Returns `{'model', 'ema', 'optimizer', 'step', ...}`."""
  data = _read_regular(path)
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
  step = state.get('step', 0)
  if isinstance(step, torch.Tensor) and step.numel() == 1 and not step.is_floating_point():
    step = state['step'] = int(step)
  if isinstance(step, bool) or not isinstance(step, int) or step < 0:
    raise CheckpointError(f'bad checkpoint {path}: it records step {step!r}, not an integer >= 0 '
                          '(a damaged or hand-edited file; delete it or move it away)')
  state['model'] = strip_prefix(state['model'])
  return state


def _read_regular(path: str) -> bytes:
  """The bytes of `path`, which must be a regular file (a FIFO or a device is never waited
  on: it is opened non-blocking and refused)."""
  try:
    fd = os.open(path, os.O_RDONLY | getattr(os, 'O_NONBLOCK', 0) | getattr(os, 'O_BINARY', 0))
  except (FileNotFoundError, NotADirectoryError):
    raise FileNotFoundError(f'checkpoint not found: {path}') from None
  except IsADirectoryError:
    raise CheckpointError(f'not a checkpoint {path}: it is a directory') from None
  if not stat.S_ISREG(os.fstat(fd).st_mode):
    os.close(fd)
    raise CheckpointError(f'not a checkpoint {path}: not a regular file (a folder, a FIFO or a device)')
  with os.fdopen(fd, 'rb') as f:
    return f.read()


def _load_failure(e: Exception) -> str:
  """torch.load's failure in the user's terms (never its advice to drop weights_only)."""
  text = str(e)
  if 'Weights only load failed' in text or 'Unsupported global' in text:
    return 'it holds Python objects other than tensors, which are never unpickled (unsafe file)'
  if 'zip archive' in text or 'central directory' in text or 'EOF' in text or 'magic number' in text:
    return 'the file is truncated or is not a PyTorch checkpoint'
  first = text.strip().splitlines()[0] if text.strip() else type(e).__name__
  return first[:200]


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


def _is_regular(path: str) -> bool:
  try:
    return stat.S_ISREG(os.stat(path).st_mode)
  except OSError:  # a dangling link, say
    return False


_STORED: dict[tuple, tuple[int, bool] | None] = {}   # file version -> (stored step, ours)
_WARNED: set[str] = set()


def _warn_once(message: str) -> None:
  if message not in _WARNED:
    _WARNED.add(message)
    logging.warning(message)


def stored_step(path: str) -> tuple[int, bool] | None:
  """(the step recorded inside checkpoint `path`, whether it is in our format), or None when
  that cannot be read (the full read says why). Only the file's index and pickle are read
  (`torch.load(mmap=True)` maps the tensors without reading them), once per file version."""
  try:
    st = os.stat(path)
  except OSError:
    return None
  key = (os.path.abspath(path), st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)
  if key not in _STORED:
    try:
      state = torch.load(path, map_location='cpu', weights_only=True, mmap=True)
      step = state.get('step') if isinstance(state, dict) else None
      step = int(step) if isinstance(step, (int, torch.Tensor)) and not isinstance(step, bool) else None
      step = None if step is None or step < 0 else step  # a bad step: the full read refuses it
      _STORED[key] = None if step is None else (step, state.get('format') == FORMAT)
    except Exception:  # noqa: BLE001 - an unreadable file sorts by its name
      _STORED[key] = None
  return _STORED[key]


def list_checkpoints(folder: str) -> list[tuple[int, str]]:
  """`(step, path)` of every `checkpoint_<n>.pth` in folder, sorted by the step stored inside
  it: a file name is not trusted (a renamed copy sorts by what it holds; of two files with one
  step, the one whose name agrees is the newer). A file of ours whose name disagrees with its
  step, and anything named like a checkpoint that is not a regular file (a dangling link, a
  folder, a FIFO; skipped), are reported as a warning. A file whose step cannot be read sorts
  by its name (reading it fully says what is wrong)."""
  found = []
  for path in glob.glob(os.path.join(glob.escape(folder), 'checkpoint_*.pth')):
    named = step_of(path)
    if named is None:
      continue
    if not _is_regular(path):
      _warn_once(f'skipping {path}: not a regular file (a dangling link, a folder or a FIFO)')
      continue
    stored = stored_step(path)
    step = named if stored is None else stored[0]
    if stored is not None and stored[1] and step != named:
      _warn_once(f'{path} holds step {step}, not {named} as its name says (a renamed copy?); '
                 f'it is ordered by step {step}')
    found.append((step, step == named, named, path))
  return [(step, path) for step, _, _, path in sorted(found)]


def prune_checkpoints(folder: str, keep: int, protect=lambda step: False) -> None:
  """Delete all but the newest `keep` checkpoints (by stored step), sparing those `protect(step)`
  is true for. Only files whose name agrees with their stored step (those we wrote) count or
  are deleted: a renamed or foreign file is never pruned."""
  ckpts = [(step, path) for step, path in list_checkpoints(folder) if step_of(path) == step]
  for step, path in ckpts[:max(len(ckpts) - keep, 0)]:
    if not protect(step):
      for p in (path, path + '.sha256'):
        if os.path.exists(p):
          os.remove(p)


def non_finite_weights(state: dict) -> str | None:
  """Which weights of a checkpoint state are not finite ("model weights ('key')" or "EMA weights
  (tensor i)"), or None when every floating tensor of 'model' and the EMA is finite."""
  ema = [v for v in ((state.get('ema') or {}).get('shadow_params') or []) if _floating(v)]
  named = {**{('model', k): v for k, v in (state.get('model') or {}).items()},
           **{('ema', i): v for i, v in enumerate(ema)}}
  bad = first_non_finite(named)
  if bad is None:
    return None
  return f"model weights ('{bad[1]}')" if bad[0] == 'model' else f'EMA weights (tensor {bad[1]} of {len(ema)})'


def first_non_finite(named: dict):
  """The key of the first floating tensor of `named` (e.g. a state_dict) holding a NaN / inf,
  or None when all are finite (one host sync in that case)."""
  floating = {k: v for k, v in named.items() if _floating(v)}
  if not floating or bool(torch.stack([torch.isfinite(v).all() for v in floating.values()]).all()):
    return None
  return next(k for k, v in floating.items() if not torch.isfinite(v).all())


def _floating(v) -> bool:
  return isinstance(v, torch.Tensor) and v.is_floating_point()
