"""Pre-emption safety: SIGKILL a training process at random moments and resume each time.

Checks that no checkpoint on disk is ever corrupt (every one verifies its SHA-256s and loads),
that the resumed step never goes back, and that the final weights, EMA and optimizer state are
bit-identical to those of an uninterrupted run (CPU, deterministic kernels).
"""
import os
import random
import signal
import subprocess
import sys
import glob
import time

import pytest
import torch

from score_sde.files import checkpoint as ckpt

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ARGS = ['--config', 'configs/toy_gmm.py', '--mode', 'train', '--config.model.hidden=32',
        '--config.model.depth=1', '--config.training.batch_size=64', '--config.data.toy_size=400',
        '--config.training.snapshot_freq=500', '--config.training.snapshot_freq_for_preemption=20',
        '--config.training.keep_checkpoints=2', '--config.training.log_freq=10',
        '--config.runtime.device=cpu']


def _start(workdir, n_iters):
  env = dict(os.environ, PYTHONPATH=ROOT, OMP_NUM_THREADS='1')
  return subprocess.Popen([sys.executable, os.path.join(ROOT, 'main.py'), '--workdir', workdir, *ARGS,
                           f'--config.training.n_iters={n_iters}'],
                          cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def _checkpoints(workdir):
  return ckpt.list_checkpoints(os.path.join(workdir, 'checkpoints'))


def _newest_step(workdir):
  found = _checkpoints(workdir)
  return found[-1][0] if found else 0


def _verify_all(workdir):
  """Every checkpoint under its real name must verify and load; returns how many there are."""
  found = _checkpoints(workdir)
  for _, path in found:
    state = ckpt.read_checkpoint(path)        # raises CheckpointError on a torn/corrupt file
    assert {'model', 'ema', 'optimizer', 'step', 'loader'} <= set(state)
  return len(found)


def _final_state(workdir, n_iters):
  return ckpt.read_checkpoint(os.path.join(workdir, 'checkpoints', f'checkpoint_{n_iters}.pth'))


def _assert_identical(a, b, where=''):
  if isinstance(a, torch.Tensor):
    assert torch.equal(a, b), where
  elif isinstance(a, dict):
    assert set(a) == set(b), where
    for k in a:
      _assert_identical(a[k], b[k], f'{where}/{k}')
  elif isinstance(a, (list, tuple)):
    assert len(a) == len(b), where
    for i, (x, y) in enumerate(zip(a, b)):
      _assert_identical(x, y, f'{where}/{i}')
  else:
    assert a == b, where


@pytest.mark.parametrize('n_iters,kills', [
    (400, 2),
    pytest.param(int(os.environ.get('PREEMPT_ITERS', '1500')), int(os.environ.get('PREEMPT_KILLS', '8')),
                 marks=pytest.mark.slow),
])
def test_sigkill_at_random_moments_then_resume_equals_uninterrupted_run(tmp_path, n_iters, kills):
  rng = random.Random(1234)
  N_ITERS, KILLS = n_iters, kills
  killed_dir = str(tmp_path / 'killed')
  kills, last_step, torn = 0, 0, 0
  while kills < KILLS:
    proc = _start(killed_dir, N_ITERS)
    deadline = time.time() + 120
    while _newest_step(killed_dir) <= last_step and proc.poll() is None and time.time() < deadline:
      time.sleep(0.02)                        # wait for progress past the last checkpoint
    time.sleep(rng.uniform(0.0, 0.5))         # then a random moment (often mid-write)
    if proc.poll() is not None:
      break                                   # finished before we could kill it
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    kills += 1
    torn += len(glob.glob(os.path.join(killed_dir, 'checkpoints', '*.tmp.*')))
    assert _verify_all(killed_dir) >= 1
    step = _newest_step(killed_dir)
    assert step >= last_step, f'the newest checkpoint went back from {last_step} to {step}'
    last_step = step
  print(f'{kills} kills, {torn} interrupted checkpoint writes, 0 corrupt checkpoints, '
        f'resumed from step {last_step}')
  assert kills >= min(2, KILLS), 'training finished before the test could kill it twice'
  assert last_step < N_ITERS
  proc = _start(killed_dir, N_ITERS)          # resume and finish
  _, err = proc.communicate(timeout=300)
  assert proc.returncode == 0, err[-2000:]
  assert f'at step {last_step}' in err        # it resumed from the newest checkpoint
  _verify_all(killed_dir)

  clean_dir = str(tmp_path / 'clean')
  proc = _start(clean_dir, N_ITERS)
  _, err = proc.communicate(timeout=300)
  assert proc.returncode == 0, err[-2000:]
  killed, clean = _final_state(killed_dir, N_ITERS), _final_state(clean_dir, N_ITERS)
  for key in ('model', 'ema', 'optimizer', 'loader', 'step'):
    _assert_identical(killed[key], clean[key], key)
