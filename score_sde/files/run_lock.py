"""One writer per workdir: a training holds `<workdir>/train.lock` (the classifier of
--mode train_classifier `<workdir>/classifier/train.lock`) from start to exit.

The lock file is created with O_CREAT | O_EXCL (atomic, also on NFS) and holds its holder as
JSON: host, PID, the process's start time and PID namespace (so that a reused PID or another
container is not taken for the holder), the time and the command line. A second training on
the same workdir stops at once with one line naming the holder. A lock whose process is gone
(on this host, in this PID namespace) is stale and taken over. Under torchrun only rank 0
holds it; tasks started by srun without torchrun (each would train alone) are refused.
"""
from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import sys
import time

from score_sde.errors import UserError

LOCK_NAME = 'train.lock'
EMPTY_GRACE_S = 2.0   # a holder writes its JSON right after creating the file
TORCHRUN_VARS = ('RANK', 'WORLD_SIZE', 'LOCAL_RANK', 'TORCHELASTIC_RUN_ID')


class WorkdirBusy(UserError):
  """Another training holds the workdir's lock."""


def lock_path(workdir: str, task: str = 'score') -> str:
  """The lock of `task`'s training: <workdir>/train.lock or <workdir>/classifier/train.lock."""
  return os.path.join(workdir, *(['classifier'] if task == 'classifier' else []), LOCK_NAME)


def _int(env, name: str) -> int | None:
  try:
    return int(env[name])
  except (KeyError, ValueError):
    return None


def check_launch(env=None) -> None:
  """Refuse tasks started by srun without torchrun (`SLURM_PROCID` set, more than one task,
  no torchrun variables): each would train the same workdir alone."""
  env = os.environ if env is None else env
  if any(env.get(k) for k in TORCHRUN_VARS) or _int(env, 'SLURM_PROCID') is None:
    return
  tasks = _int(env, 'SLURM_STEP_NUM_TASKS') or _int(env, 'SLURM_NTASKS') or 1
  if tasks > 1 or _int(env, 'SLURM_PROCID') > 0:
    raise UserError(
        f"srun started {tasks} tasks (this is task {env['SLURM_PROCID']}) without torchrun; each "
        'would train alone on the same workdir. Launch one task per node that runs torchrun: '
        'srun --ntasks-per-node=1 torchrun --nnodes=$SLURM_NNODES --nproc_per_node=<GPUs per node> '
        '--rdzv_backend=c10d --rdzv_endpoint=<first node>:29500 -m score_sde --mode train ... '
        '(or run a single task)')


def is_rank0(env=None) -> bool:
  """True outside torchrun and on its rank 0 (the process that holds the lock)."""
  env = os.environ if env is None else env
  return (_int(env, 'RANK') or 0) == 0


def _proc_start(pid: int) -> str | None:
  """The start time of process `pid` in clock ticks since boot (/proc; None elsewhere)."""
  try:
    with open(f'/proc/{pid}/stat') as f:
      return f.read().rsplit(')', 1)[1].split()[19]
  except (OSError, IndexError):
    return None


def _pid_namespace() -> str | None:
  try:
    return os.readlink('/proc/self/ns/pid')
  except OSError:
    return None


def _alive(pid: int) -> bool:
  """Whether process `pid` exists (and is not a zombie) on this host."""
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  except PermissionError:
    return True
  try:
    with open(f'/proc/{pid}/stat') as f:
      return f.read().rsplit(')', 1)[1].split()[0] != 'Z'
  except (OSError, IndexError):
    return True


def holder_info() -> dict:
  """What a lock file says about its holder (this process)."""
  return {'host': socket.gethostname(), 'pid': os.getpid(), 'start': _proc_start(os.getpid()),
          'pid_ns': _pid_namespace(), 'since': time.strftime('%Y-%m-%d %H:%M:%S'),
          'command': ' '.join(sys.argv)}


def is_stale(holder: dict) -> bool:
  """The holder's process is gone: same host and PID namespace, and no process with its PID
  (or one started at another time, i.e. a reused PID). A holder elsewhere is never stale."""
  if holder.get('host') != socket.gethostname() or holder.get('pid_ns') != _pid_namespace():
    return False
  pid = holder.get('pid')
  if not isinstance(pid, int) or not _alive(pid):
    return True
  return holder.get('start') is not None and _proc_start(pid) not in (None, holder['start'])


def _read(path: str) -> tuple[str, dict | None]:
  """(text, holder) of a lock file; holder None if it is not (yet) complete JSON."""
  with open(path) as f:
    text = f.read()
  try:
    holder = json.loads(text)
  except ValueError:
    return text, None
  return text, holder if isinstance(holder, dict) else None


def _busy(path: str, holder: dict | None) -> WorkdirBusy:
  if holder is None:
    return WorkdirBusy(f'{path} exists but names no holder; if no training runs on this '
                       'workdir, delete it and start again')
  where = f"pid {holder.get('pid')} on host {holder.get('host')}"
  gone = ('' if holder.get('host') == socket.gethostname() else
          ' (on another host: if that process is gone, delete the lock and start again)')
  return WorkdirBusy(f"another training holds {path}: {where}, since {holder.get('since')}"
                     f"{gone}; wait for it, stop it, or use another --workdir")


def _remove_stale(path: str, stale_text: str) -> None:
  """Remove the lock if it still holds `stale_text` (renamed aside first, so that of two
  processes taking over the same stale lock, one removes it and the other sees the new one)."""
  aside = f'{path}.stale.{os.getpid()}'
  try:
    os.rename(path, aside)
  except FileNotFoundError:
    return
  with open(aside) as f:
    moved = f.read()
  if moved != stale_text:  # another process took it over first: put its lock back
    with contextlib.suppress(OSError):
      os.link(aside, path)
  os.unlink(aside)


def acquire(path: str) -> str:
  """Create the lock file `path` for this process (taking over a stale one); returns its
  text. WorkdirBusy (one line, naming the holder) if another live process holds it."""
  mine = json.dumps(holder_info())
  os.makedirs(os.path.dirname(path) or '.', exist_ok=True)
  deadline = time.monotonic() + EMPTY_GRACE_S
  for _ in range(1000):
    try:
      fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    except FileExistsError:
      try:
        text, holder = _read(path)
      except FileNotFoundError:
        continue  # released meanwhile
      except OSError as e:
        raise UserError(f'cannot read the lock file {path}: {e.strerror}') from None
      if holder is None and time.monotonic() < deadline:
        time.sleep(0.05)  # its holder is writing it
        continue
      if holder is None or not is_stale(holder):
        raise _busy(path, holder) from None
      logging.warning('taking over the stale lock %s of pid %s on %s (that process is gone)',
                      path, holder.get('pid'), holder.get('host'))
      try:
        _remove_stale(path, text)
      except OSError as e:
        raise UserError(f'cannot remove the stale lock {path}: {e.strerror}') from None
      continue
    except OSError as e:
      raise UserError(f'cannot create the lock file {path}: {e.strerror}') from None
    with os.fdopen(fd, 'w') as f:
      f.write(mine)
      f.flush()
      os.fsync(f.fileno())
    return mine
  raise WorkdirBusy(f'could not take {path}: other processes keep taking it over')


def release(path: str, text: str) -> None:
  """Delete the lock file if it is still this process's (`text` from acquire)."""
  with contextlib.suppress(OSError):
    with open(path) as f:
      if f.read() != text:
        return
    os.unlink(path)


@contextlib.contextmanager
def hold(workdir: str, task: str = 'score', env=None):
  """Hold `task`'s lock of `workdir` for the duration of the block (rank 0 only under
  torchrun; check_launch first). Released on exit, exceptions included."""
  check_launch(env)
  if not is_rank0(env):
    yield None
    return
  path = lock_path(workdir, task)
  text = acquire(path)
  try:
    yield path
  finally:
    release(path, text)
