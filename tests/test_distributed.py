"""DistributedDataParallel on CPU (gloo): 2 processes equal 1 process with the same global batch.

The trainer gives every sample of the global batch the noise of its position (see
score_sde/training/trainer.py), so 2 ranks x 32, 1 rank x 64 and 1 rank x 2 micro-batches of 32 compute
the same gradient up to float summation order.
"""
import os
import subprocess
import sys

import pytest
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WORKER = os.path.join(ROOT, 'tests', 'ddp_worker.py')
STEPS = 20


def _run(out, nproc: int, accum: int):
  env = dict(os.environ, PYTHONPATH=ROOT, OMP_NUM_THREADS='1')
  for k in ('RANK', 'WORLD_SIZE', 'LOCAL_RANK', 'MASTER_ADDR', 'MASTER_PORT'):
    env.pop(k, None)
  cmd = [sys.executable, WORKER, str(out), str(STEPS), str(accum)]
  if nproc > 1:
    cmd = [sys.executable, '-m', 'torch.distributed.run', '--standalone',
           f'--nproc_per_node={nproc}'] + cmd[1:]
  proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
  assert proc.returncode == 0, proc.stderr[-3000:]
  return [torch.load(os.path.join(out, f'rank{r}_of{nproc}.pt')) for r in range(nproc)]


def _assert_close(a, b):
  """Same weights within 1e-5 after STEPS steps (float summation order differs)."""
  for x, y in zip(a['params'] + a['ema'], b['params'] + b['ema']):
    torch.testing.assert_close(x, y, rtol=0, atol=1e-5)
  torch.testing.assert_close(a['losses'], b['losses'], rtol=1e-5, atol=1e-6)


def test_two_gloo_ranks_equal_one_process_with_the_same_global_batch(tmp_path):
  ranks = _run(tmp_path / 'ddp', 2, 1)
  single = _run(tmp_path / 'single', 1, 1)[0]
  accum = _run(tmp_path / 'accum', 1, 2)[0]
  for x, y in zip(ranks[0]['params'] + ranks[0]['ema'], ranks[1]['params'] + ranks[1]['ema']):
    assert torch.equal(x, y)          # DDP: every rank holds bit-identical weights
  moved = max(float((p - q).abs().max()) for p, q in zip(single['params'], single['init']))
  assert moved > 1e-3                 # training did change the weights
  _assert_close(ranks[0], single)
  _assert_close(accum, single)


def test_half_set_torchrun_environment_is_a_clear_error(monkeypatch):
  from score_sde.runtime import distributed
  from score_sde.errors import UserError
  monkeypatch.setenv('WORLD_SIZE', '2')
  monkeypatch.setenv('RANK', '0')
  for k in ('MASTER_ADDR', 'MASTER_PORT'):
    monkeypatch.delenv(k, raising=False)
  with pytest.raises(UserError, match='half-set torchrun environment: RANK, WORLD_SIZE set but MASTER_ADDR, MASTER_PORT not'):
    distributed.setup(torch.device('cpu'))


def test_batch_must_divide_over_ranks_and_micro_batches():
  from configs.toy_gmm import get_config
  from score_sde.errors import UserError
  from score_sde.app.build_train import build_trainer
  config = get_config()
  config.training.batch_size, config.training.grad_accum = 30, 4
  with pytest.raises(UserError, match='divisible'):
    build_trainer(config, '/nonexistent')


@pytest.mark.slow
def test_torchrun_cli_trains_once_and_resumes_on_another_rank_count(tmp_path):
  """`torchrun --nproc_per_node=2 main.py --mode train` is one DDP run (one TensorBoard file,
  checkpoints written by rank 0), and a single process resumes it."""
  env = dict(os.environ, PYTHONPATH=ROOT, OMP_NUM_THREADS='1')
  for k in ('RANK', 'WORLD_SIZE', 'LOCAL_RANK', 'MASTER_ADDR', 'MASTER_PORT'):
    env.pop(k, None)
  wd = str(tmp_path / 'run')
  args = ['main.py', '--config', 'configs/toy_gmm.py', '--workdir', wd, '--mode', 'train',
          '--config.model.hidden=32', '--config.model.depth=1', '--config.training.batch_size=64',
          '--config.data.toy_size=400', '--config.training.snapshot_freq=1000',
          '--config.training.snapshot_freq_for_preemption=5', '--config.runtime.device=cpu']
  ddp = [sys.executable, '-m', 'torch.distributed.run', '--standalone', '--nproc_per_node=2']
  proc = subprocess.run(ddp + args + ['--config.training.n_iters=10'], cwd=ROOT, env=env,
                        capture_output=True, text=True, timeout=300)
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert len(os.listdir(os.path.join(wd, 'tensorboard'))) == 1
  assert sorted(os.listdir(os.path.join(wd, 'checkpoints'))) == [
      'checkpoint_10.pth', 'checkpoint_10.pth.sha256', 'checkpoint_5.pth', 'checkpoint_5.pth.sha256']
  proc = subprocess.run([sys.executable] + args + ['--config.training.n_iters=20'], cwd=ROOT, env=env,
                        capture_output=True, text=True, timeout=300)
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert 'resumed from' in proc.stderr and 'at step 10' in proc.stderr
  assert os.path.exists(os.path.join(wd, 'checkpoints', 'checkpoint_20.pth'))
