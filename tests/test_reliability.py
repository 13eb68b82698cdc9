"""Reliability probes through the command line, each in a temporary directory: the exit
status, a one-line message with no traceback, and that nothing was lost (the checkpoints from
before the failure are all still there and still load)."""
from __future__ import annotations

import errno
import os
import shutil
import signal
import sys
import time

import pytest
import torch

from score_sde.files import checkpoint as ckpt
from conftest import start_main

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = ['--config.model.hidden=32', '--config.model.depth=1', '--config.training.batch_size=64',
        '--config.data.toy_size=400', '--config.training.snapshot_freq=1000',
        '--config.training.snapshot_freq_for_preemption=5', '--config.training.log_freq=5',
        '--config.sampling.num_samples=16', '--config.sampling.batch_size=16',
        '--config.sampling.steps=5', '--config.eval.batch_size=20', '--config.eval.bpd_num_batches=1',
        '--config.sampling.rtol=1e-2', '--config.sampling.atol=1e-2']


def start(workdir, *args, config='configs/toy_gmm.py'):
  return start_main('--config', config, '--workdir', workdir, *TINY, *args)


def run(workdir, *args, config='configs/toy_gmm.py'):
  proc = start(workdir, *args, config=config)
  out, err = proc.communicate(timeout=300)
  proc.stdout_text, proc.stderr_text = out, err
  return proc


def one_line_error(proc, needle, code=2):
  err = proc.stderr_text
  assert proc.returncode == code, err[-2000:]
  assert 'Traceback' not in err, err[-2000:]
  last = [l for l in err.strip().splitlines() if l.strip()][-1]
  assert last.startswith('error: ') and needle in last, err[-2000:]
  return last


def checkpoints(workdir):
  return ckpt.list_checkpoints(os.path.join(str(workdir), 'checkpoints'))


def assert_intact(workdir, before):
  """Every checkpoint listed in `before` is still there and loads."""
  now = dict(checkpoints(workdir))
  for step, _ in before:
    assert step in now, f'checkpoint_{step} was lost'
    ckpt.read_checkpoint(now[step])


@pytest.fixture(scope='module')
def trained(tmp_path_factory):
  """A workdir with checkpoints 5 and 10 of a tiny toy run."""
  wd = tmp_path_factory.mktemp('trained') / 'run'
  proc = run(wd, '--mode', 'train', '--config.training.n_iters=10')
  assert proc.returncode == 0, proc.stderr_text[-2000:]
  return wd


@pytest.fixture
def workdir(trained, tmp_path):
  wd = tmp_path / 'run'
  shutil.copytree(trained, wd)
  return wd


# ---------------------------------------------------------------- bad config values
SLOW = pytest.mark.slow  # each also checked in-process by test_validate_rejects_every_probe


@pytest.mark.parametrize('args,needle', [
    (['--config.training.keep_checkpoints=0'], 'config.training.keep_checkpoints = 0: must be an integer >= 1'),
    (['--config.training.batch_size=-5'], 'config.training.batch_size = -5: must be an integer >= 1'),
    pytest.param(['--config.training.batch_size=0'], 'config.training.batch_size = 0', marks=SLOW),
    pytest.param(['--config.eval.batch_size=0', '--mode', 'likelihood'], 'config.eval.batch_size = 0', marks=SLOW),
    pytest.param(['--config.training.log_freq=0'], 'config.training.log_freq = 0', marks=SLOW),
    pytest.param(['--config.training.snapshot_freq_for_preemption=0'],
                 'config.training.snapshot_freq_for_preemption = 0', marks=SLOW),
    (['--config.optim.lr=1e39'], 'config.optim.lr = 1e+39: must be a number > 0.0 and <= 1.0'),
    pytest.param(['--config.training.nan_policy=skp'],
                 "config.training.nan_policy = 'skp': must be one of: stop, skip", marks=SLOW),
    pytest.param(['--config.sampling.num_samples=0', '--mode', 'sample'], 'config.sampling.num_samples = 0',
                 marks=SLOW),
    (['--config.training.nonexistent=3'], 'unknown config key training.nonexistent'),
    pytest.param(['--config.training.bacth_size=3'],
                 'unknown config key training.bacth_size (did you mean training.batch_size?)', marks=SLOW),
])
def test_bad_config_value_is_one_line_and_loses_nothing(workdir, args, needle):
  before = checkpoints(workdir)
  one_line_error(run(workdir, '--config.training.n_iters=20', *args), needle)
  assert checkpoints(workdir) == before
  assert_intact(workdir, before)


PROBES = {  # key: bad values (each must be refused by name, in-process)
    'training.keep_checkpoints': [0, -1], 'training.batch_size': [-5, 0], 'eval.batch_size': [0],
    'sampling.batch_size': [0], 'training.log_freq': [0], 'training.snapshot_freq_for_preemption': [0],
    'training.snapshot_freq': [0], 'optim.lr': [1e39, 0.0, -1e-4, float('nan')],
    'training.nan_policy': ['skp'], 'sampling.num_samples': [0], 'training.max_nan_skips': [0],
    'sampling.method': ['bogus'], 'training.sde': ['vp'], 'model.name': ['unet2'],
    'data.dataset': ['cifar'], 'runtime.amp': ['fp16'], 'model.ema_rate': [1.5], 'sampling.order': [4],
}


@pytest.mark.parametrize('key', list(PROBES))
def test_validate_rejects_every_probe(key):
  from configs.toy_gmm import get_config
  from score_sde.app.config_check import validate
  from score_sde.errors import ConfigError
  validate(get_config())
  for value in PROBES[key]:
    config = get_config()
    config.unlock()
    section, name = key.split('.')
    config[section][name] = value
    with pytest.raises(ConfigError, match=f'config.{key} = '):
      validate(config)


def test_image_size_must_fit_the_network(tmp_path):
  proc = run(tmp_path / 'd', '--config.data.image_size=7', '--config.training.n_iters=1',
             config='configs/digits.py')
  one_line_error(proc, 'config.data.image_size = 7 must be a multiple of')


# ---------------------------------------------------------------- files and the system
def test_missing_and_broken_config_files(tmp_path):
  one_line_error(run(tmp_path / 'w', config='configs/nonexistent.py'),
                 'config file not found: configs/nonexistent.py')
  bad = tmp_path / 'bad.py'
  bad.write_text('def get_config(:\n  pass\n')
  one_line_error(run(tmp_path / 'w', config=str(bad)), 'has a syntax error at line 1')
  raising = tmp_path / 'raising.py'
  raising.write_text('def get_config():\n  raise ValueError("no such preset")\n')
  one_line_error(run(tmp_path / 'w', config=str(raising)), 'failed to load: ValueError: no such preset')


def test_workdir_that_is_a_file_or_read_only(tmp_path):
  afile = tmp_path / 'afile'
  afile.write_text('x')
  one_line_error(run(afile, '--config.training.n_iters=1'), 'is a file, not a directory')
  one_line_error(run(afile, '--mode', 'sample'), 'is a file, not a directory')
  read_only = '/sys/score_sde_probe'  # a read-only file system, even for root
  try:
    os.makedirs(read_only)
    os.rmdir(read_only)
    pytest.skip('/sys is writable here')
  except OSError:
    pass
  one_line_error(run(read_only, '--config.training.n_iters=1'), 'cannot write checkpoints in /sys/score_sde_probe')


def test_sample_and_likelihood_check_the_output_before_computing(workdir):
  samples = workdir / 'samples'
  samples.write_text('not a folder')  # the output location is unusable
  proc = run(workdir, '--mode', 'sample')
  one_line_error(proc, 'cannot write samples')
  assert 'sample (' not in proc.stderr_text  # it did not start sampling
  (workdir / 'likelihood.json').mkdir()     # a folder where the report goes
  one_line_error(run(workdir, '--mode', 'likelihood'), 'cannot write')


def test_full_disk_is_one_line_and_the_run_resumes(trained, tmp_path, monkeypatch):
  """In-process: checkpoint writes fail with ENOSPC; the older checkpoints stay, no partial
  file is left, and the run resumes once there is room."""
  import run_lib
  from configs.toy_gmm import get_config
  from score_sde.errors import UserError
  wd = tmp_path / 'run'
  shutil.copytree(trained, wd)
  before = checkpoints(wd)
  config = get_config()
  config.unlock()
  config.model.hidden, config.model.depth, config.training.batch_size = 32, 1, 64
  config.data.toy_size, config.training.snapshot_freq_for_preemption = 400, 5
  config.training.snapshot_freq, config.training.n_iters, config.training.snapshot_sampling = 1000, 20, False
  real_write = ckpt._atomic_write

  def full_disk(path, data):
    with open(f'{path}{ckpt.TMP_MARK}{os.getpid()}', 'wb') as f:
      f.write(data[:100])
    raise OSError(errno.ENOSPC, 'No space left on device')
  monkeypatch.setattr(ckpt, '_atomic_write', lambda p, d: real_write(p, d) if False else full_disk(p, d))
  with pytest.raises(UserError, match='the disk is full; the run can resume from .*checkpoint_10.pth'):
    run_lib.train(config, str(wd))
  monkeypatch.setattr(ckpt, '_atomic_write', real_write)
  assert_intact(wd, before)
  run_lib.train(config, str(wd))  # the partial file is cleaned up and training finishes
  assert checkpoints(wd)[-1][0] == 20
  assert not [f for f in os.listdir(wd / 'checkpoints') if ckpt.TMP_MARK in f]


# ---------------------------------------------------------------- checkpoints
def _flip_bytes(path, n=20):
  data = bytearray(open(path, 'rb').read())
  for i in range(n):
    data[len(data) // 2 + 7 * i] ^= 0xFF
  with open(path, 'wb') as f:
    f.write(data)


def test_damaged_checkpoint_without_sidecar_is_refused(workdir):
  path = os.path.join(workdir, 'checkpoints', 'checkpoint_10.pth')
  os.remove(path + '.sha256')
  _flip_bytes(path)
  one_line_error(run(workdir, '--mode', 'sample'), 'corrupt')
  one_line_error(run(workdir, '--config.training.n_iters=20'), 'checkpoint_10.pth')
  ckpt.read_checkpoint(os.path.join(workdir, 'checkpoints', 'checkpoint_5.pth'))  # the older one is fine


def test_partial_writes_are_removed_at_start(workdir):
  stale = os.path.join(workdir, 'checkpoints', f'checkpoint_15.pth{ckpt.TMP_MARK}999999999')
  with open(stale, 'wb') as f:
    f.write(b'x' * 1000)
  proc = run(workdir, '--config.training.n_iters=15')
  assert proc.returncode == 0, proc.stderr_text[-2000:]
  assert not os.path.exists(stale) and checkpoints(workdir)[-1][0] == 15


def test_unsafe_checkpoint_message_has_no_torch_hint(workdir):
  path = os.path.join(workdir, 'checkpoints', 'checkpoint_10.pth')
  torch.save({'model': {}, 'payload': shutil.rmtree}, path)  # a pickled function
  os.remove(path + '.sha256')
  last = one_line_error(run(workdir, '--mode', 'sample'), 'unsafe')
  assert 'weights_only' not in last


# ---------------------------------------------------------------- non-finite losses
def _blow_up_newest(workdir):
  """checkpoint_15: checkpoint 10's state with weights ~1e30 and an infinite recorded loss."""
  state = ckpt.read_checkpoint(os.path.join(workdir, 'checkpoints', 'checkpoint_10.pth'))
  state.pop('format', None)
  state['model'] = {k: v * 0 + 1e30 if v.is_floating_point() else v for k, v in state['model'].items()}
  state['ema']['shadow_params'] = [p * 0 + 1e30 for p in state['ema']['shadow_params']]
  state['step'], state['loss'] = 15, float('inf')
  ckpt.save_checkpoint(os.path.join(workdir, 'checkpoints', 'checkpoint_15.pth'), state)


def test_nan_stop_names_the_last_good_checkpoint(workdir):
  _blow_up_newest(workdir)
  before = checkpoints(workdir)
  last = one_line_error(run(workdir, '--config.training.n_iters=30'), 'non-finite loss')
  assert last.endswith('(lower optim.lr or raise optim.warmup)')
  assert 'last good checkpoint: ' + os.path.join(str(workdir), 'checkpoints', 'checkpoint_10.pth') in last
  assert checkpoints(workdir) == before


def test_persistent_nan_with_skip_policy_stops(workdir):
  _blow_up_newest(workdir)
  before = checkpoints(workdir)
  mtime = os.path.getmtime(before[-1][1])
  start_time = time.time()
  proc = run(workdir, '--config.training.n_iters=400', '--config.training.nan_policy=skip',
             '--config.training.max_nan_skips=7')
  last = one_line_error(proc, 'non-finite loss')
  assert '7 times in a row' in last and 'checkpoint_10.pth' in last
  assert time.time() - start_time < 120
  assert checkpoints(workdir) == before and os.path.getmtime(before[-1][1]) == mtime  # not rewritten


# ---------------------------------------------------------------- signals
@pytest.mark.parametrize('sig,code,name', [
    (signal.SIGTERM, 143, 'SIGTERM'), pytest.param(signal.SIGINT, 130, 'SIGINT', marks=pytest.mark.slow)])
def test_signal_saves_the_current_step_and_exits_cleanly(workdir, sig, code, name):
  before = checkpoints(workdir)
  proc = start(workdir, '--config.training.n_iters=1000000',
               '--config.training.snapshot_freq_for_preemption=100000')
  events = lambda: os.listdir(os.path.join(workdir, 'tensorboard'))
  n_events, deadline = len(events()), time.time() + 120
  while len(events()) == n_events and time.time() < deadline:  # the resumed run has started
    time.sleep(0.2)
  time.sleep(3)  # some steps past the last checkpoint, none of which is saved by the schedule
  proc.send_signal(sig)
  out, err = proc.communicate(timeout=120)
  proc.stderr_text = err
  last = one_line_error(proc, f'stopped by {name} at step ', code=code)
  step = int(last.split(' at step ')[1].split(';')[0])
  assert step > 10 and f'checkpoint_{step}.pth' in last
  assert checkpoints(workdir)[-1][0] == step
  assert_intact(workdir, before[-1:])
  state = ckpt.read_checkpoint(checkpoints(workdir)[-1][1])
  assert state['step'] == step


# ---------------------------------------------------------------- bugs keep their traceback
def test_internal_errors_keep_their_traceback(monkeypatch, tmp_path):
  """main.py turns UserErrors into one line, but a bug (here a TypeError) propagates."""
  import main
  def buggy(config, workdir):
    raise TypeError('an internal bug')
  monkeypatch.setitem(main.MODES, 'train', buggy)
  monkeypatch.setattr(sys, 'argv', ['main.py', '--config', 'configs/toy_gmm.py', '--workdir',
                                    str(tmp_path / 'w'), '--mode', 'train'])
  monkeypatch.chdir(ROOT)
  with pytest.raises(TypeError, match='an internal bug'):
    main.run()
