"""End-to-end command line: train a few steps, resume, sample, likelihood; one-line errors."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = ['--config.model.hidden=32', '--config.model.depth=1', '--config.training.batch_size=64',
        '--config.training.log_freq=5', '--config.training.snapshot_freq=10',
        '--config.training.snapshot_freq_for_preemption=5', '--config.sampling.num_samples=50',
        '--config.sampling.batch_size=50', '--config.eval.batch_size=20',
        '--config.data.toy_size=400', '--config.sampling.rtol=1e-3', '--config.sampling.atol=1e-3']


def run(*args, check=True):
  env = dict(os.environ, PYTHONPATH=ROOT, OMP_NUM_THREADS='2')
  proc = subprocess.run([sys.executable, os.path.join(ROOT, 'main.py'), *args], cwd=ROOT, env=env,
                        capture_output=True, text=True, timeout=600)
  if check:
    assert proc.returncode == 0, proc.stderr[-3000:]
  return proc


def test_train_resume_sample_likelihood(tmp_path):
  wd = str(tmp_path / 'run')
  cfg = ['--config', 'configs/toy_gmm.py', '--workdir', wd] + TINY
  run(*cfg, '--mode', 'train', '--config.training.n_iters=12')
  ckpts = sorted(os.listdir(os.path.join(wd, 'checkpoints')))
  assert 'checkpoint_12.pth' in ckpts and 'checkpoint_10.pth' in ckpts
  out = run(*cfg, '--mode', 'train', '--config.training.n_iters=20')
  assert 'resumed from' in out.stderr and 'step 12' in out.stderr
  assert os.path.exists(os.path.join(wd, 'checkpoints', 'checkpoint_20.pth'))
  assert os.listdir(os.path.join(wd, 'tensorboard'))
  run(*cfg, '--mode', 'sample', '--solver', 'pc', '--config.sampling.steps=20')
  npz = np.load(os.path.join(wd, 'samples', 'pc_checkpoint_20.npz'))
  assert npz['samples'].shape == (50, 2) and np.isfinite(npz['samples']).all()
  assert os.path.getsize(os.path.join(wd, 'samples', 'pc_checkpoint_20.png')) > 0
  run(*cfg, '--mode', 'likelihood')
  with open(os.path.join(wd, 'likelihood.json')) as f:
    report = json.load(f)
  assert report['unit'] == 'nats/dim' and np.isfinite(report['mean']) and report['num_examples'] == 20
  # a VP-trained checkpoint read with a VE config: a one-line error naming both, not garbage
  proc = run(*cfg, '--mode', 'sample', '--config.training.sde=vesde', check=False)
  _one_line_error(proc, 'checkpoint_20.pth holds a model with sde vpsde(')
  assert 'the config gives vesde(' in proc.stderr
  resume = run(*cfg, '--mode', 'train', '--config.training.n_iters=25', '--config.training.sde=vesde', check=False)
  _one_line_error(resume, 'holds a model with sde vpsde(')


@pytest.mark.slow
def test_digits_image_pipeline(tmp_path):
  wd = str(tmp_path / 'digits')
  cfg = ['--config', 'configs/digits.py', '--workdir', wd, '--config.model.nf=8',
         '--config.training.batch_size=8', '--config.sampling.num_samples=4',
         '--config.sampling.batch_size=4', '--config.eval.batch_size=2',
         '--config.sampling.rtol=1e-2', '--config.sampling.atol=1e-2']
  run(*cfg, '--mode', 'train', '--config.training.n_iters=3')
  run(*cfg, '--mode', 'sample')
  assert os.path.exists(os.path.join(wd, 'samples', 'ode_checkpoint_3.png'))
  out = run(*cfg, '--mode', 'likelihood')
  assert 'bits/dim' in out.stdout
  with open(os.path.join(wd, 'likelihood.json')) as f:
    assert 0 < json.load(f)['mean'] < 100


def _one_line_error(proc, needle):
  assert proc.returncode != 0
  lines = [l for l in proc.stderr.strip().splitlines() if l.strip()]
  assert needle in lines[-1], proc.stderr[-2000:]
  assert 'Traceback' not in proc.stderr, proc.stderr[-2000:]


SLOW = pytest.mark.slow  # more of the same in tests/test_reliability.py


@pytest.mark.parametrize('args,needle', [
    pytest.param(['--config.training.bacth_size=3'], 'bacth_size', marks=SLOW),
    (['--mode', 'sample', '--solver', 'bogus'], "unknown solver 'bogus'"),
    pytest.param(['--config.sampling.predictor=bogus', '--mode', 'sample', '--solver', 'pc'],
                 "config.sampling.predictor = 'bogus': must be one of: euler_maruyama", marks=SLOW),
    pytest.param(['--config.data.num_channels=3', '--config.training.n_iters=1'], 'data has shape', marks=SLOW),
    (['--config.data.dataset=cifar10', '--config.data.root=/nonexistent', '--config.training.n_iters=1'], '/nonexistent'),
    (['--config.training.sde=subvpsde', '--config.training.continuous=False', '--config.training.n_iters=1'],
     'SubVPSDE has none; set training.continuous=True'),
])
def test_bad_input_is_one_line(tmp_path, args, needle):
  wd = str(tmp_path / 'w')
  cfg = ['--config', 'configs/toy_gmm.py', '--workdir', wd] + TINY
  if '--mode' in args and 'sample' in args:
    run(*cfg, '--mode', 'train', '--config.training.n_iters=1')
  _one_line_error(run(*cfg, *args, check=False), needle)


@pytest.mark.slow
def test_corrupt_checkpoint_is_one_line(tmp_path):
  wd = str(tmp_path / 'w')
  cfg = ['--config', 'configs/toy_gmm.py', '--workdir', wd] + TINY
  run(*cfg, '--mode', 'train', '--config.training.n_iters=5')
  path = os.path.join(wd, 'checkpoints', 'checkpoint_5.pth')
  with open(path, 'r+b') as f:
    f.truncate(100)
  _one_line_error(run(*cfg, '--mode', 'train', '--config.training.n_iters=8', check=False), 'checkpoint_5.pth')
  _one_line_error(run(*cfg, '--mode', 'sample', check=False), 'checkpoint_5.pth')


def test_classifier_free_guidance_cli(tmp_path):
  """A conditional toy model trains with label dropout and samples one row per class with CFG."""
  wd = str(tmp_path / 'cond')
  cfg = ['--config', 'configs/toy_gmm.py', '--workdir', wd] + TINY + [
      '--config.model.class_conditional=True', '--config.training.p_uncond=0.1',
      '--config.sampling.num_samples=16', '--config.sampling.batch_size=16']
  run(*cfg, '--mode', 'train', '--config.training.n_iters=5')
  run(*cfg, '--mode', 'sample', '--config.sampling.guidance_scale=2.0', '--solver', 'dpm_solver',
      '--config.sampling.steps=5')
  npz = np.load(os.path.join(wd, 'samples', 'dpm_solver_checkpoint_5.npz'))
  assert npz['samples'].shape == (16, 2) and np.isfinite(npz['samples']).all()
