"""One writer per workdir (score_sde.files.run_lock): a second training on a workdir stops at once
naming the holder, a stale lock is taken over, only torchrun's rank 0 holds the lock, and tasks
started by srun without torchrun are refused."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time

import pytest

from score_sde.files import run_lock
from score_sde.errors import UserError
from conftest import run_main, start_main

TOY = ['--config', 'configs/toy_gmm.py', '--config.model.hidden=16', '--config.model.depth=1',
       '--config.training.batch_size=16', '--config.data.toy_size=200', '--config.training.log_freq=5',
       '--config.training.snapshot_freq_for_preemption=5', '--config.training.snapshot_freq=100000',
       '--config.training.snapshot_sampling=False']


def _write_lock(path, **holder):
  info = dict(run_lock.holder_info(), **holder)
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with open(path, 'w') as f:
    json.dump(info, f)
  return info


def _dead_pid() -> int:
  proc = subprocess.Popen([sys.executable, '-c', 'pass'])
  proc.wait(timeout=60)
  return proc.pid


def test_second_training_stops_at_once_naming_the_holder(tmp_path):
  wd = str(tmp_path / 'run')
  first = start_main('--mode', 'train', '--workdir', wd, *TOY, '--config.training.n_iters=1000000')
  try:
    deadline = time.monotonic() + 240
    ckpts = os.path.join(wd, 'checkpoints')
    while not (os.path.isdir(ckpts) and any(f.endswith('.pth') for f in os.listdir(ckpts))):
      assert first.poll() is None, first.communicate()[1][-2000:]
      assert time.monotonic() < deadline, 'the first training did not start'
      time.sleep(0.2)
    assert os.path.exists(os.path.join(wd, 'train.lock'))
    start = time.monotonic()
    second = run_main('--mode', 'train', '--workdir', wd, *TOY, '--config.training.n_iters=1000000',
                      timeout=120)
    elapsed = time.monotonic() - start
    assert second.returncode == 2, second.stderr[-2000:]
    last = second.stderr.strip().splitlines()[-1]
    assert last.startswith('error: another training holds') and 'train.lock' in last
    assert f'pid {first.pid} on host {socket.gethostname()}' in last
    assert 'Traceback' not in second.stderr and 'train:' not in second.stderr  # it never trained
    assert elapsed < 60
  finally:
    first.terminate()  # SIGTERM: saves a checkpoint, stops, releases the lock
    _, err = first.communicate(timeout=120)
  assert first.returncode == 128 + 15, err[-2000:]
  assert not os.path.exists(os.path.join(wd, 'train.lock'))


def test_live_holder_is_named_and_kept(tmp_path):
  path = str(tmp_path / 'train.lock')
  sleeper = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'])
  try:
    info = _write_lock(path, pid=sleeper.pid, start=run_lock._proc_start(sleeper.pid))
    with pytest.raises(run_lock.WorkdirBusy, match=f'pid {sleeper.pid} on host '):
      with run_lock.hold(str(tmp_path)):
        pytest.fail('entered a held workdir')
    with open(path) as f:
      assert json.load(f) == info  # untouched
  finally:
    sleeper.kill()
    sleeper.wait()


def test_holder_on_another_host_is_never_taken_over(tmp_path):
  path = str(tmp_path / 'train.lock')
  _write_lock(path, host='some-other-node', pid=_dead_pid())
  with pytest.raises(run_lock.WorkdirBusy, match='on another host: if that process is gone, delete'):
    run_lock.acquire(path)


def test_stale_lock_is_taken_over_and_released(tmp_path, caplog):
  path = run_lock.lock_path(str(tmp_path))
  _write_lock(path, pid=_dead_pid())
  with run_lock.hold(str(tmp_path)) as held:
    assert held == path
    with open(path) as f:
      assert json.load(f)['pid'] == os.getpid()
  assert not os.path.exists(path)
  assert 'taking over the stale lock' in caplog.text


def test_reused_pid_and_zombie_are_stale(tmp_path):
  me = run_lock.holder_info()
  assert not run_lock.is_stale(me)
  assert run_lock.is_stale(dict(me, start='1'))  # our PID, but a process started at another time
  zombie = subprocess.Popen([sys.executable, '-c', 'pass'])
  deadline = time.monotonic() + 60
  while run_lock._alive(zombie.pid) and time.monotonic() < deadline:  # exited, not yet reaped
    time.sleep(0.05)
  assert run_lock.is_stale(dict(me, pid=zombie.pid, start=None))
  zombie.wait()


def test_released_on_exceptions_and_only_ours(tmp_path):
  path = run_lock.lock_path(str(tmp_path), 'classifier')
  assert path == os.path.join(str(tmp_path), 'classifier', 'train.lock')
  with pytest.raises(RuntimeError):
    with run_lock.hold(str(tmp_path), 'classifier'):
      assert os.path.exists(path)
      raise RuntimeError('boom')
  assert not os.path.exists(path)
  text = run_lock.acquire(path)
  run_lock.release(path, text.replace('"pid"', '"pid "'))  # not ours: kept
  assert os.path.exists(path)
  run_lock.release(path, text)
  assert not os.path.exists(path)


def test_an_empty_lock_names_no_holder(tmp_path, monkeypatch):
  monkeypatch.setattr(run_lock, 'EMPTY_GRACE_S', 0.1)
  path = tmp_path / 'train.lock'
  path.write_text('')
  with pytest.raises(run_lock.WorkdirBusy, match='names no holder; if no training runs'):
    run_lock.acquire(str(path))


def test_only_rank0_holds_the_lock_under_torchrun(tmp_path):
  env = {'RANK': '1', 'WORLD_SIZE': '2', 'LOCAL_RANK': '1'}
  with run_lock.hold(str(tmp_path), env=env) as held:
    assert held is None and not os.listdir(tmp_path)
  with run_lock.hold(str(tmp_path), env=dict(env, RANK='0', LOCAL_RANK='0')) as held:
    assert os.path.exists(held)


@pytest.mark.parametrize('env,refused', [
    ({'SLURM_PROCID': '0', 'SLURM_NTASKS': '4'}, True),
    ({'SLURM_PROCID': '3', 'SLURM_STEP_NUM_TASKS': '4', 'SLURM_NTASKS': '8'}, True),
    ({'SLURM_PROCID': '0', 'SLURM_STEP_NUM_TASKS': '1', 'SLURM_NTASKS': '8'}, False),
    ({'SLURM_PROCID': '0', 'SLURM_NTASKS': '1'}, False),
    ({'SLURM_PROCID': '0', 'SLURM_NTASKS': '4', 'RANK': '0', 'WORLD_SIZE': '8'}, False),  # torchrun
    ({'SLURM_NTASKS': '4'}, False),  # the batch script itself, not an srun task
])
def test_srun_without_torchrun_is_refused(tmp_path, env, refused):
  if refused:
    with pytest.raises(UserError, match='without torchrun.*srun --ntasks-per-node=1 torchrun'):
      run_lock.check_launch(env)
  else:
    run_lock.check_launch(env)


def test_srun_tasks_are_refused_by_the_cli(tmp_path, monkeypatch):
  for k in ('RANK', 'WORLD_SIZE', 'LOCAL_RANK', 'TORCHELASTIC_RUN_ID'):
    monkeypatch.delenv(k, raising=False)
  monkeypatch.setenv('SLURM_PROCID', '1')
  monkeypatch.setenv('SLURM_NTASKS', '2')
  proc = run_main('--mode', 'train', '--workdir', str(tmp_path / 'w'), *TOY,
                  '--config.training.n_iters=5', timeout=120)
  assert proc.returncode == 2
  last = proc.stderr.strip().splitlines()[-1]
  assert 'srun started 2 tasks (this is task 1) without torchrun' in last and 'Traceback' not in proc.stderr
  assert not os.path.exists(tmp_path / 'w' / 'checkpoints' / 'checkpoint_5.pth')
