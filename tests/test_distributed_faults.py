"""torchrun under faults: bad rank variables and missing peers are one-line errors within
seconds (not a 30-minute hang), and a stop signal is agreed by the ranks within about a second
whatever training.log_freq is, so a checkpoint at the interrupted step is saved before torchrun's
grace period ends."""
import datetime
import os
import signal
import socket
import subprocess
import sys
import time

import pytest
import torch
import torch.distributed as torch_dist

from score_sde.files import checkpoint as ckpt
from score_sde.runtime import distributed
from score_sde.errors import UserError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TORCHRUN_ENV = ('RANK', 'WORLD_SIZE', 'LOCAL_RANK', 'LOCAL_WORLD_SIZE', 'MASTER_ADDR', 'MASTER_PORT')


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    return s.getsockname()[1]


@pytest.fixture
def torchrun_env(monkeypatch):
  """Sets a torchrun environment (MASTER_ADDR / MASTER_PORT filled in) and forbids any
  rendezvous unless a test re-allows it, so an unchecked value fails fast instead of hanging."""
  def set_env(**values):
    for k in TORCHRUN_ENV:
      monkeypatch.delenv(k, raising=False)
    for k, v in {'MASTER_ADDR': '127.0.0.1', 'MASTER_PORT': str(_free_port()), **values}.items():
      monkeypatch.setenv(k, v)
  def no_rendezvous(*args, **kwargs):
    raise AssertionError('a rendezvous was attempted with invalid torchrun variables')
  monkeypatch.setattr(torch_dist, 'init_process_group', no_rendezvous)
  monkeypatch.setattr(torch_dist, 'rendezvous', no_rendezvous)
  return set_env


# ---------------------------------------------------------------- range checks before rendezvous
@pytest.mark.parametrize('env,names', [
    (dict(RANK='5', WORLD_SIZE='2'), 'RANK=5, WORLD_SIZE=2'),
    (dict(RANK='-1', WORLD_SIZE='2'), 'RANK=-1, WORLD_SIZE=2'),
    (dict(RANK='2', WORLD_SIZE='2'), 'RANK=2, WORLD_SIZE=2'),
    (dict(RANK='0', WORLD_SIZE='0'), 'RANK=0, WORLD_SIZE=0'),
    (dict(RANK='0', WORLD_SIZE='-3'), 'WORLD_SIZE=-3'),
    (dict(RANK='one', WORLD_SIZE='2'), "RANK='one'"),
    (dict(RANK='0', WORLD_SIZE='2.5'), "WORLD_SIZE='2.5'"),
    (dict(RANK='0', WORLD_SIZE='2', LOCAL_RANK='-1'), 'LOCAL_RANK=-1'),
    (dict(RANK='1', WORLD_SIZE='2', LOCAL_RANK='2'), 'LOCAL_RANK=2'),
    (dict(RANK='1', WORLD_SIZE='4', LOCAL_RANK='2', LOCAL_WORLD_SIZE='2'), 'LOCAL_RANK=2'),
    (dict(RANK='0', WORLD_SIZE='2', MASTER_PORT='99999'), 'MASTER_PORT=99999'),
    (dict(RANK='0', WORLD_SIZE='2', MASTER_PORT='http'), "MASTER_PORT='http'"),
])
def test_bad_torchrun_variables_are_one_line_before_any_rendezvous(torchrun_env, env, names):
  torchrun_env(**env)
  start = time.time()
  with pytest.raises(UserError) as info:
    distributed.setup(torch.device('cpu'))
  assert names in str(info.value) and '\n' not in str(info.value)
  assert time.time() - start < 5


def test_local_rank_beyond_the_gpus_of_this_machine_is_one_line(torchrun_env, monkeypatch):
  torchrun_env(RANK='1', WORLD_SIZE='2', LOCAL_RANK='1')
  monkeypatch.setattr(torch.cuda, 'device_count', lambda: 1)
  monkeypatch.setattr(torch.cuda, 'set_device', lambda d: pytest.fail(f'set_device({d})'))
  with pytest.raises(UserError, match='LOCAL_RANK=1: LOCAL_RANK names a GPU but this machine has 1'):
    distributed.setup(torch.device('cuda'))


def test_single_process_torchrun_environment_needs_no_rendezvous(torchrun_env):
  torchrun_env(RANK='0', WORLD_SIZE='1', LOCAL_RANK='0')
  assert not distributed.setup(torch.device('cpu')).enabled


# ---------------------------------------------------------------- missing peers
def test_rendezvous_timeout_is_about_a_minute():
  assert datetime.timedelta(seconds=30) <= distributed.RENDEZVOUS_TIMEOUT <= datetime.timedelta(minutes=2)
  assert distributed.COLLECTIVE_TIMEOUT >= datetime.timedelta(minutes=10)


@pytest.mark.parametrize('rank', ['0', '1'])  # rank 0 waits for its peer; rank 1 for the master
def test_missing_peer_is_one_line_after_the_rendezvous_timeout(monkeypatch, rank):
  for k in TORCHRUN_ENV:
    monkeypatch.delenv(k, raising=False)
  port = _free_port()
  for k, v in dict(RANK=rank, WORLD_SIZE='2', LOCAL_RANK=rank, MASTER_ADDR='127.0.0.1',
                   MASTER_PORT=str(port)).items():
    monkeypatch.setenv(k, v)
  start = time.time()
  with pytest.raises(UserError, match=f'rank {rank} of 2 could not join the process group at '
                                      f'127.0.0.1:{port} within 1 s'):
    distributed.setup(torch.device('cpu'), rendezvous_timeout=datetime.timedelta(seconds=1))
  assert time.time() - start < 15
  assert not torch_dist.is_initialized()


# ---------------------------------------------------------------- stop signals under DDP
class _Clock:
  def __init__(self):
    self.now = 0.0

  def __call__(self):
    return self.now


def test_stop_agreement_checks_about_once_a_period_and_never_per_step(monkeypatch):
  """Rank 0's schedule of checks (the collective is the identity here): the interval grows to
  ~period / step time, at most doubling, and a flag is acted on at the next check."""
  from score_sde.training import stop_signals
  clock, calls, now = _Clock(), [], [0]
  monkeypatch.setattr(stop_signals.time, 'monotonic', clock)
  def reduce(value, dist):
    calls.append(now[0])
    return value.clone()
  monkeypatch.setattr(stop_signals.distributed, 'max_over_ranks', reduce)
  agree = stop_signals.StopAgreement(distributed.Dist(0, 2), torch.device('cpu'), period_s=1.0)
  def check(step, flag):
    now[0] = step
    clock.now = step * 1e-3   # 1 ms per step: about every 1000 steps once settled
    return agree(step, flag)
  assert not any(check(step, False) for step in range(3000))
  gaps = [b - a for a, b in zip(calls, calls[1:])]
  assert gaps[:6] == [1, 2, 4, 8, 16, 32] and all(500 <= g <= 1000 for g in gaps[10:])
  assert len(calls) < 20
  stopped = next(step for step in range(3000, 6000) if check(step, True))
  assert stopped == calls[-1] and stopped - 3000 <= 1000   # within a period of the signal
  assert stop_signals.StopAgreement(distributed.Dist(), torch.device('cpu'))(5, True)


def _torchrun_train(workdir, *overrides) -> subprocess.Popen:
  env = dict(os.environ, PYTHONPATH=ROOT, OMP_NUM_THREADS='1')
  for k in TORCHRUN_ENV:
    env.pop(k, None)
  args = ['main.py', '--config', 'configs/toy_gmm.py', '--workdir', workdir, '--mode', 'train',
          '--config.model.hidden=32', '--config.model.depth=1', '--config.training.batch_size=64',
          '--config.data.toy_size=400', '--config.training.n_iters=100000000',
          '--config.training.log_freq=100000000', '--config.training.snapshot_freq=100000000',
          '--config.training.snapshot_freq_for_preemption=100000000', '--config.runtime.device=cpu',
          *overrides]
  cmd = [sys.executable, '-m', 'torch.distributed.run', '--standalone', '--nproc_per_node=2', *args]
  return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                          stderr=subprocess.PIPE, text=True)


def _children(pid: int) -> list[int]:
  found = []
  for entry in os.listdir('/proc'):
    try:
      with open(f'/proc/{entry}/stat') as f:
        if entry.isdigit() and int(f.read().rsplit(')', 1)[1].split()[1]) == pid:
          found.append(int(entry))
    except (OSError, ValueError, IndexError):
      pass
  return sorted(found)


def _kill(proc: subprocess.Popen) -> str:
  """SIGKILL torchrun and its ranks (they run in sessions of their own); its stderr."""
  for pid in _children(proc.pid):
    try:
      os.kill(pid, signal.SIGKILL)
    except OSError:
      pass
  proc.kill()
  return proc.communicate(timeout=30)[1]


def _wait_for_training(proc, workdir) -> None:
  """Until rank 0 opened TensorBoard (the loop starts next), then 2 s of steps."""
  logs, deadline = os.path.join(workdir, 'tensorboard'), time.time() + 120
  while not (os.path.isdir(logs) and os.listdir(logs)):
    if proc.poll() is not None or time.time() > deadline:
      pytest.fail(f'training did not start: {_kill(proc)[-2000:]}')
    time.sleep(0.1)
  time.sleep(2)


def _assert_saved_at_the_interrupted_step(proc, workdir, signalled_at) -> None:
  try:
    _, err = proc.communicate(timeout=60)
  except subprocess.TimeoutExpired:
    err = _kill(proc)
  waited = time.time() - signalled_at
  lines = [l for l in err.splitlines() if 'stopped by SIGTERM at step ' in l]
  assert len(lines) == 2, err[-3000:]                      # both ranks stopped on their own
  steps = {int(l.split(' at step ')[1].split(';')[0]) for l in lines}
  assert len(steps) == 1, lines                            # ... at the same step
  step = steps.pop()
  path = os.path.join(workdir, 'checkpoints', f'checkpoint_{step}.pth')
  assert step > 0 and f'saved {path}' in lines[0]
  assert ckpt.read_checkpoint(path)['step'] == step
  assert waited < 20, f'{waited:.0f} s from the signal to the exit'


def test_sigterm_to_torchrun_saves_the_current_step_whatever_log_freq(tmp_path):
  workdir = str(tmp_path / 'run')
  proc = _torchrun_train(workdir)
  _wait_for_training(proc, workdir)
  proc.send_signal(signal.SIGTERM)   # torchrun forwards it to both ranks, SIGKILL 30 s later
  _assert_saved_at_the_interrupted_step(proc, workdir, time.time())


@pytest.mark.slow
@pytest.mark.skipif(not os.path.isdir('/proc'), reason='finds the ranks through /proc')
def test_sigterm_to_one_rank_stops_every_rank_at_the_same_step(tmp_path):
  workdir = str(tmp_path / 'run')
  proc = _torchrun_train(workdir)
  _wait_for_training(proc, workdir)
  ranks = _children(proc.pid)
  assert len(ranks) == 2, ranks
  os.kill(ranks[-1], signal.SIGTERM)  # one rank only: the other learns it from the agreement
  _assert_saved_at_the_interrupted_step(proc, workdir, time.time())
