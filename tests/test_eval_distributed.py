"""`--mode eval` and `--mode sample` under torchrun (2 gloo ranks on the CPU) against one
process: the shards are byte-identical and the reports equal, since shard i depends only on i
and the seed; a 2-rank evaluation whose rank 1 is SIGKILLed mid-run resumes on 1 rank to the
same report."""
from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOY = ['--config', 'configs/toy_gmm.py', '--config.model.hidden=32', '--config.model.depth=1',
       '--config.training.batch_size=64', '--config.data.toy_size=400',
       '--config.training.snapshot_freq=1000', '--config.training.snapshot_freq_for_preemption=1000',
       '--config.sampling.batch_size=40', '--config.eval.batch_size=20',
       '--config.sampling.steps=8', '--config.eval.bpd_num_batches=3',
       '--config.sampling.rtol=1e-3', '--config.sampling.atol=1e-3']
EVAL = TOY + ['--mode', 'eval', '--solver', 'dpm_solver', '--config.eval.num_samples=200',
              '--config.eval.export=npz']
WORKER = os.path.join('tests', 'eval_rank_worker.py')
SAMPLE = TOY + ['--mode', 'sample', '--solver', 'dpm_solver', '--config.sampling.num_samples=100']


def _launch(wd, args, nproc: int = 1, script: str = 'main.py', env=None, check: bool = True):
  env = dict(os.environ, PYTHONPATH=ROOT, OMP_NUM_THREADS='1', **(env or {}))
  for k in ('RANK', 'WORLD_SIZE', 'LOCAL_RANK', 'LOCAL_WORLD_SIZE', 'MASTER_ADDR', 'MASTER_PORT'):
    env.pop(k, None)
  cmd = [sys.executable, os.path.join(ROOT, script), '--workdir', str(wd), *args]
  if nproc > 1:
    cmd = [sys.executable, '-m', 'torch.distributed.run', '--standalone',
           f'--nproc_per_node={nproc}', *cmd[1:]]
  proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=240)
  if check:
    assert proc.returncode == 0, proc.stderr[-3000:]
  return proc


def _snapshot(wd) -> dict:
  """{relative path: bytes} of every file under <wd>/eval (the shards, the export) and the
  report as parsed JSON."""
  out, root = {}, os.path.join(wd, 'eval')
  for folder, _, names in os.walk(root):
    for n in names:
      path = os.path.join(folder, n)
      rel = os.path.relpath(path, root)
      if n.endswith('.json'):
        out[rel] = json.load(open(path))
      else:
        out[rel] = open(path, 'rb').read()
  return out


@pytest.fixture(scope='module')
def trained(tmp_path_factory):
  wd = tmp_path_factory.mktemp('toy')
  _launch(wd, TOY + ['--mode', 'train', '--config.training.n_iters=4'])
  _launch(wd, EVAL)
  reference = _snapshot(wd)
  shutil.rmtree(wd / 'eval')
  return wd, reference


def _drawn_by(record) -> dict:
  """{rank: sorted shard indices it drew}, from the seeds tests/eval_rank_worker.py recorded."""
  from score_sde.data.loader import mix_seed
  index = {mix_seed(0, i): i for i in range(100)}
  return {int(n[4:-4]): sorted(index[int(line)] for line in open(record / n))
          for n in sorted(os.listdir(record))}


def test_two_rank_eval_equals_one_process(trained, tmp_path):
  wd, reference = trained
  _launch(wd, EVAL, nproc=2, script=WORKER, env={'RECORD_DIR': str(tmp_path)})
  assert _drawn_by(tmp_path) == {0: [0, 2, 4], 1: [1, 3]}  # shard i on rank i % 2, once
  got = _snapshot(wd)
  shutil.rmtree(wd / 'eval')
  shards = sorted(k for k in reference if k.startswith('checkpoint_4' + os.sep))
  assert shards == ['checkpoint_4/bpd_00000.npy', 'checkpoint_4/bpd_00001.npy',
                    'checkpoint_4/bpd_00002.npy'] + [f'checkpoint_4/samples_0000{i}.npz' for i in range(5)]
  assert got.keys() == reference.keys()
  for k in reference:
    assert got[k] == reference[k], k     # byte-identical shards and export, equal report
  report = reference['checkpoint_4.json']
  assert report['complete'] and report['num_samples'] == 200 and report['bpd_num_examples'] == 60
  with np.load(io.BytesIO(reference['checkpoint_4_samples.npz'])) as f:  # eval.export=npz
    assert f['arr_0'].shape == (200, 2) and f['arr_0'].dtype == np.float32


def test_two_rank_sample_equals_one_process(trained, tmp_path):
  wd, _ = trained
  out = wd / 'samples' / 'dpm_solver_checkpoint_4'
  _launch(wd, SAMPLE)
  one = np.load(f'{out}.npz')['samples'], open(f'{out}.png', 'rb').read()
  os.remove(f'{out}.npz')
  os.remove(f'{out}.png')
  _launch(wd, SAMPLE, nproc=2, script=WORKER, env={'RECORD_DIR': str(tmp_path)})
  assert _drawn_by(tmp_path) == {0: [0, 2], 1: [1]}
  two = np.load(f'{out}.npz')['samples'], open(f'{out}.png', 'rb').read()
  assert one[0].shape == (100, 2) and np.isfinite(one[0]).all()
  assert one[0].tobytes() == two[0].tobytes() and one[1] == two[1]
  assert len(np.unique(one[0][:, 0])) == 100   # three batches with three different seeds


def test_killed_two_rank_eval_resumes_on_one_rank(trained):
  wd, reference = trained
  killed = _launch(wd, EVAL, nproc=2, script=WORKER, check=False,
                   env={'KILL_RANK': '1', 'KILL_AFTER': '2'})
  assert killed.returncode != 0
  left = json.load(open(wd / 'eval' / 'checkpoint_4.json'))
  assert left['complete'] is False
  shards = sorted(os.listdir(wd / 'eval' / 'checkpoint_4'))
  assert 'samples_00003.npz' not in shards     # rank 1 died before writing its second batch
  assert 'samples_00001.npz' in shards         # ... after writing its first
  _launch(wd, EVAL)                            # resumed on one process
  got = _snapshot(wd)
  shutil.rmtree(wd / 'eval')
  assert got.keys() == reference.keys()
  for k in reference:
    assert got[k] == reference[k], k
