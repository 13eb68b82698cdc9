"""Atomic file writes that cannot be redirected: a temporary file in the target folder, created
with O_CREAT | O_EXCL | O_NOFOLLOW under an unpredictable name (`.<name>.tmp.<pid>.<random>`),
written, fsynced and renamed onto the real name. A file or symlink planted in the folder is never
opened or written through, and the rename replaces whatever is at the real name (a link itself,
not its target). Only our own temporary files, whose writer is gone, are ever cleaned up.
"""
from __future__ import annotations

import contextlib
import errno
import math
import os
import re
import secrets
import stat

import numpy as np

TMP_MARK = '.tmp.'
# our temporary files: .<name>.tmp.<pid>.<12 hex digits>; and those of earlier versions
_TEMP = re.compile(r'\.(?P<base>.+)\.tmp\.(?P<pid>\d+)\.[0-9a-f]{12}')
_OLD_TEMP = re.compile(r'checkpoint_\d+\.pth(\.sha256)?\.tmp\.(?P<pid>\d+)')


def _fsync_dir(path: str) -> None:
  try:
    fd = os.open(path, os.O_RDONLY)
  except OSError:
    return
  try:
    os.fsync(fd)
  finally:
    os.close(fd)


def create_temp(folder: str, base: str) -> tuple[int, str]:
  """A new empty file `.<base>.tmp.<pid>.<random>` in `folder`, opened for writing with
  O_CREAT | O_EXCL | O_NOFOLLOW (never an existing file or a planted link). Returns (fd, path)."""
  flags = (os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, 'O_NOFOLLOW', 0)
           | getattr(os, 'O_CLOEXEC', 0) | getattr(os, 'O_BINARY', 0))
  for _ in range(100):
    path = os.path.join(folder, f'.{base[:100]}{TMP_MARK}{os.getpid()}.{secrets.token_hex(6)}')
    try:
      return os.open(path, flags, 0o666), path
    except FileExistsError:
      continue
  raise FileExistsError(errno.EEXIST, 'no free temporary file name', folder)


def probe_writable(folder: str) -> None:
  """Create `folder` if needed and write, then remove, a probe file in it (O_EXCL |
  O_NOFOLLOW: never through a planted link); OSError if that cannot be done."""
  os.makedirs(folder, exist_ok=True)
  fd, probe = create_temp(folder, 'write_test')
  try:
    os.write(fd, b'ok')
  finally:
    os.close(fd)
    os.remove(probe)


@contextlib.contextmanager
def atomic_file(path: str):
  """A binary file object whose contents replace `path` atomically (fsynced, then renamed onto
  it) when the block ends without an error; on an error the temporary file is removed."""
  folder = os.path.dirname(os.path.abspath(path))
  os.makedirs(folder, exist_ok=True)
  fd, tmp = create_temp(folder, os.path.basename(path))
  try:
    with os.fdopen(fd, 'wb') as f:
      yield f
      f.flush()
      os.fsync(f.fileno())
    os.replace(tmp, path)  # replaces a link at `path` itself, never writes through it
  except BaseException:  # a full disk or an interruption must not leave partial files
    with contextlib.suppress(OSError):
      os.remove(tmp)
    raise
  _fsync_dir(folder)


def atomic_write(path: str, data: bytes) -> None:
  """Atomically replace `path` by `data`."""
  with atomic_file(path) as f:
    f.write(data)


def remove_partial_writes(folder: str) -> list[str]:
  """Delete the temporary files left in `folder` by our writers that were killed or ran out of
  disk (`.<name>.tmp.<pid>.<random>`, or an earlier version's `checkpoint_<n>.pth.tmp.<pid>`,
  whose process is gone; regular files only). Any other file is left alone. Returns the
  paths removed."""
  removed = []
  try:
    names = sorted(os.listdir(folder))
  except OSError:
    return removed
  for name in names:
    m = _TEMP.fullmatch(name) or _OLD_TEMP.fullmatch(name)
    if m is None:
      continue
    pid, path = int(m.group('pid')), os.path.join(folder, name)
    if pid != os.getpid() and _alive(pid):
      continue
    with contextlib.suppress(OSError):
      if stat.S_ISREG(os.lstat(path).st_mode):
        os.remove(path)
        removed.append(path)
  return removed


def _alive(pid: int) -> bool:
  if pid <= 0:
    return False
  try:
    os.kill(pid, 0)
  except (ProcessLookupError, OverflowError):
    return False
  except PermissionError:
    return True
  return True


def finite_json(obj, where: str = '', bad: list | None = None):
  """`obj` with non-finite floats replaced by None (their key paths appended to `bad`)."""
  if isinstance(obj, dict):
    return {k: finite_json(v, f'{where}.{k}' if where else str(k), bad) for k, v in obj.items()}
  if isinstance(obj, np.ndarray):
    obj = obj.tolist()
  if isinstance(obj, (list, tuple)):
    return [finite_json(v, f'{where}[{i}]', bad) for i, v in enumerate(obj)]
  if isinstance(obj, np.generic):
    obj = obj.item()
  if isinstance(obj, float) and not math.isfinite(obj):
    if bad is not None:
      bad.append(where or '(value)')
    return None
  return obj
