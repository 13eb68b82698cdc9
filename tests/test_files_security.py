"""Hostile or odd files (issue 22, causes 1, 3, 5 and 6): crafted CIFAR pickles, links planted
at temporary names, NaN in JSON, checkpoint folders whose names lie or hold non-files, NaN EMA
weights, and image folders with symlink loops."""
from __future__ import annotations

import contextlib
import json
import logging
import os
import pickle
import re
import shutil
import signal

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import start_main
from score_sde.files import checkpoint as ckpt
from score_sde.data.datasets import get_dataset, load_split
from score_sde.errors import UserError
from score_sde.files.workdir import last_good_checkpoint, latest_checkpoint

pytestmark = pytest.mark.usefixtures('one_thread')
TINY = ['--config.model.hidden=32', '--config.model.depth=1', '--config.training.batch_size=64',
        '--config.data.toy_size=400', '--config.training.snapshot_freq=1000',
        '--config.training.snapshot_freq_for_preemption=5', '--config.training.log_freq=5',
        '--config.sampling.num_samples=16', '--config.sampling.batch_size=16',
        '--config.sampling.steps=5']


def run(workdir, *args):
  proc = start_main('--config', 'configs/toy_gmm.py', '--workdir', workdir, *TINY, *args)
  out, err = proc.communicate(timeout=240)
  proc.stdout_text, proc.stderr_text = out, err
  return proc


def one_line_error(proc, *needles):
  err = proc.stderr_text
  assert proc.returncode == 2 and 'Traceback' not in err, err[-2000:]
  last = [l for l in err.strip().splitlines() if l.strip()][-1]
  assert last.startswith('error: ') and all(n in last for n in needles), last
  return last


@contextlib.contextmanager
def deadline(seconds):
  """Fail (instead of hanging) when the block runs longer than `seconds`."""
  def fail(*_):
    raise TimeoutError(f'still running after {seconds} s')
  old = signal.signal(signal.SIGALRM, fail)
  signal.alarm(seconds)
  try:
    yield
  finally:
    signal.alarm(0)
    signal.signal(signal.SIGALRM, old)


def train(workdir, n_iters):
  """In-process `--mode train` of the tiny toy run (TINY) up to `n_iters`."""
  import run_lib
  from configs.toy_gmm import get_config
  config = get_config()
  config.unlock()
  config.model.hidden, config.model.depth, config.training.batch_size = 32, 1, 64
  config.data.toy_size, config.training.snapshot_freq_for_preemption = 400, 5
  config.training.snapshot_freq, config.training.n_iters = 1000, n_iters
  config.training.snapshot_sampling = False
  return run_lib.train(config, str(workdir))


@pytest.fixture(scope='module')
def trained(tmp_path_factory):
  """A workdir with checkpoints 5 and 10 of a tiny toy run."""
  wd = tmp_path_factory.mktemp('trained') / 'run'
  train(wd, 10)
  return wd


@pytest.fixture
def workdir(trained, tmp_path):
  wd = tmp_path / 'run'
  shutil.copytree(trained, wd, symlinks=True)
  return wd


def _steps(workdir):
  return [s for s, _ in ckpt.list_checkpoints(os.path.join(workdir, 'checkpoints'))]


# ---------------------------------------------------------------- 1. CIFAR pickles
class _Plant:
  """Unpickling this creates `marker` (what a crafted data_batch_1 could do: run anything)."""

  def __init__(self, marker):
    self.marker = marker

  def __reduce__(self):
    return (open, (self.marker, 'w'))


def _cifar(directory, protocol=2, crafted=None):
  os.makedirs(directory, exist_ok=True)
  rng = np.random.default_rng(0)
  for name, n in [(f'data_batch_{i}', 3) for i in range(1, 6)] + [('test_batch', 2)]:
    batch = {b'batch_label': name.encode(), b'labels': rng.integers(0, 10, n).tolist(),
             b'data': rng.integers(0, 256, (n, 3072), dtype=np.uint8),
             b'filenames': [f'img_{i}.png'.encode() for i in range(n)]}
    if name == 'data_batch_1' and crafted is not None:
      batch[b'extra'] = crafted
    with open(os.path.join(directory, name), 'wb') as f:
      pickle.dump(batch, f, protocol=protocol)


def _cifar_config(root):
  from test_datasets import _config
  return _config(dataset='cifar10', root=str(root), image_size=32, num_channels=3)


def test_crafted_cifar_batch_is_refused_and_runs_nothing(tmp_path):
  marker = tmp_path / 'pwned'
  _cifar(tmp_path / 'cifar-10-batches-py', crafted=_Plant(str(marker)))
  with pytest.raises(UserError, match=r'data_batch_1: refusing to unpickle \S*open: not a '
                                      'CIFAR-10 batch') as e:
    load_split(_cifar_config(tmp_path).data, 'train')
  assert not marker.exists() and '\n' not in str(e.value)


@pytest.mark.parametrize('protocol', [2, 4, 5])
def test_genuine_cifar_batches_still_read(tmp_path, protocol):
  _cifar(tmp_path, protocol)
  train = get_dataset(_cifar_config(tmp_path).data, 'train')
  assert len(train) == 15 and train.data.dtype == torch.uint8


def test_truncated_or_foreign_cifar_batch_is_one_line(tmp_path):
  _cifar(tmp_path)
  path = tmp_path / 'test_batch'
  path.write_bytes(path.read_bytes()[:500])
  with pytest.raises(UserError, match='test_batch: not a readable CIFAR-10 batch'):
    load_split(_cifar_config(tmp_path).data, 'test')
  with open(path, 'wb') as f:
    pickle.dump({b'data': np.zeros((2, 5), np.float64), b'labels': [0, 1]}, f)
  with pytest.raises(UserError, match='not a CIFAR-10 batch'):
    load_split(_cifar_config(tmp_path).data, 'test')


# ---------------------------------------------------------------- 1. temporary files
def _plant(path, victim):
  """Links at the temporary names earlier versions used for `path`, pointing at `victim`."""
  for name in (f'{path}.tmp.{os.getpid()}', f'{path}.sha256.tmp.{os.getpid()}',
               f'{path}.tmp{os.getpid()}'):
    os.symlink(victim, name)


@pytest.mark.parametrize('writer', ['checkpoint', 'json', 'arrays', 'npy', 'stats'])
def test_planted_links_are_never_written_through(tmp_path, writer):
  from score_sde.evaluation.stats import FeatureStats, _save_cache
  victim = tmp_path / 'victim.txt'
  victim.write_text('precious')
  folder = tmp_path / 'out'
  folder.mkdir()
  path = str(folder / 'result')
  _plant(path, victim)
  os.symlink(victim, path)  # a link at the real name is replaced, not written through
  write = {'checkpoint': lambda: ckpt.save_checkpoint(path, {'model': {}, 'step': 1}),
           'json': lambda: ckpt.save_json(path, {'a': 1}),
           'arrays': lambda: ckpt.save_arrays(path, x=np.zeros(3)),
           'npy': lambda: ckpt.save_npy(path, np.zeros(3)),
           'stats': lambda: _save_cache(path, FeatureStats(np.zeros(2), np.eye(2)))}[writer]
  write()
  assert victim.read_text() == 'precious'
  assert not os.path.islink(path) and os.path.getsize(path) > 0
  ours = [n for n in os.listdir(folder) if '.tmp' in n and not os.path.islink(folder / n)]
  assert not ours  # no temporary file of ours is left behind


def test_write_probe_does_not_follow_a_planted_link(tmp_path):
  from score_sde.files.workdir import ensure_writable
  victim = tmp_path / 'victim.txt'
  victim.write_text('precious')
  folder = tmp_path / 'samples'
  folder.mkdir()
  os.symlink(victim, folder / f'.write_test.{os.getpid()}')
  ensure_writable(str(folder), 'samples')
  assert victim.read_text() == 'precious'


def test_only_our_stale_temporary_files_are_removed(tmp_path):
  user = ['notes.tmp.txt', 'my.tmp.1', '.hidden.tmp.x', 'checkpoint_5.pth.tmp.notapid']
  ours = ['checkpoint_15.pth.tmp.999999999', '.checkpoint_5.pth.tmp.999999999.0123456789ab']
  for name in user + ours:
    (tmp_path / name).write_bytes(b'x')
  live = tmp_path / f'.checkpoint_6.pth.tmp.{os.getppid()}.0123456789ab'  # a live writer's
  live.write_bytes(b'x')
  removed = ckpt.remove_partial_writes(str(tmp_path))
  assert sorted(os.path.basename(p) for p in removed) == sorted(ours)
  assert all((tmp_path / n).exists() for n in user) and live.exists()


def test_user_tmp_file_survives_a_restore(workdir):
  notes = workdir / 'checkpoints' / 'notes.tmp.txt'
  notes.write_text('mine')
  train(workdir, 15)
  assert notes.read_text() == 'mine' and _steps(workdir)[-1] == 15


# ---------------------------------------------------------------- 2. JSON
def test_json_never_holds_nan(tmp_path):
  path = str(tmp_path / 'report.json')
  report = {'fid': float('nan'), 'ok': 1.5, 'per': [1.0, float('inf'), np.float32('nan')],
            'nested': {'bpd': -float('inf'), 'n': np.int64(3)}, 'arr': np.array([np.nan, 2.0])}
  with pytest.warns(UserWarning, match=r'fid, per\[1\], per\[2\], nested.bpd, arr\[0\]'):
    ckpt.save_json(path, report)
  text = open(path).read()
  assert 'NaN' not in text and 'Infinity' not in text
  loaded = json.loads(text, parse_constant=lambda c: pytest.fail(f'invalid JSON constant {c}'))
  assert loaded == {'fid': None, 'ok': 1.5, 'per': [1.0, None, None],
                    'nested': {'bpd': None, 'n': 3}, 'arr': [None, 2.0]}


# ---------------------------------------------------------------- 5. checkpoint folders
def _save(folder, name, step, **extra):
  ckpt.save_checkpoint(os.path.join(folder, name), {'model': {'w': torch.ones(2)}, 'step': step,
                                                    **extra})


def test_newest_is_the_largest_stored_step_not_the_name(tmp_path, caplog):
  folder = str(tmp_path)
  for step in (10, 30):
    _save(folder, f'checkpoint_{step}.pth', step)
  shutil.copy(tmp_path / 'checkpoint_10.pth', tmp_path / 'checkpoint_99.pth')
  shutil.copy(tmp_path / 'checkpoint_10.pth.sha256', tmp_path / 'checkpoint_99.pth.sha256')
  with caplog.at_level(logging.WARNING):
    found = ckpt.list_checkpoints(folder)
  assert found[-1] == (30, os.path.join(folder, 'checkpoint_30.pth'))
  assert 'checkpoint_99.pth holds step 10, not 99' in caplog.text
  _save(folder, 'checkpoint_35.pth', 35)
  ckpt.prune_checkpoints(folder, keep=1)  # the rolling checkpoint and the foreign file stay
  assert sorted(os.listdir(folder)) == ['checkpoint_35.pth', 'checkpoint_35.pth.sha256',
                                        'checkpoint_99.pth', 'checkpoint_99.pth.sha256']


def test_training_resumes_from_the_largest_stored_step(workdir, caplog):
  folder = workdir / 'checkpoints'
  for suffix in ('', '.sha256'):
    shutil.copy(folder / f'checkpoint_5.pth{suffix}', folder / f'checkpoint_99.pth{suffix}')
  with caplog.at_level(logging.INFO):
    train(workdir, 15)
  assert 'at step 10' in caplog.text and 'holds step 5, not 99' in caplog.text
  assert {os.path.basename(p) for _, p in ckpt.list_checkpoints(str(folder))} >= {
      'checkpoint_15.pth', 'checkpoint_99.pth'}
  assert latest_checkpoint(str(workdir))[0] == 15


def test_negative_step_is_refused(workdir, tmp_path):
  _save(str(tmp_path), 'checkpoint_0.pth', -100)
  with pytest.raises(ckpt.CheckpointError, match='records step -100'):
    ckpt.read_checkpoint(str(tmp_path / 'checkpoint_0.pth'))
  path = workdir / 'checkpoints' / 'checkpoint_10.pth'
  state = ckpt.read_checkpoint(str(path))
  state['step'] = -100
  ckpt.save_checkpoint(str(path), state)
  with pytest.raises(UserError, match='checkpoint_10.pth.*records step -100'):
    train(workdir, 20)
  assert not [n for n in os.listdir(workdir / 'checkpoints') if '-' in n]


@pytest.mark.parametrize('kind', ['dangling', 'folder', 'fifo'])
def test_non_files_named_like_checkpoints_are_skipped(tmp_path, kind, caplog):
  _save(str(tmp_path), 'checkpoint_5.pth', 5)
  odd = tmp_path / 'checkpoint_50.pth'
  {'dangling': lambda: os.symlink(tmp_path / 'gone', odd), 'folder': odd.mkdir,
   'fifo': lambda: os.mkfifo(odd)}[kind]()
  with deadline(20), caplog.at_level(logging.WARNING):
    assert ckpt.list_checkpoints(str(tmp_path)) == [(5, str(tmp_path / 'checkpoint_5.pth'))]
    with pytest.raises((ckpt.CheckpointError, FileNotFoundError)):
      ckpt.read_checkpoint(str(odd))
  assert 'not a regular file' in caplog.text


def test_train_skips_non_files_named_like_checkpoints(workdir, caplog):
  folder = workdir / 'checkpoints'
  os.symlink(folder / 'gone', folder / 'checkpoint_50.pth')
  (folder / 'checkpoint_60.pth').mkdir()
  os.mkfifo(folder / 'checkpoint_70.pth')
  with deadline(120), caplog.at_level(logging.INFO):
    train(workdir, 15)
  assert 'at step 10' in caplog.text and 'not a regular file' in caplog.text
  assert _steps(workdir)[-1] == 15


# ---------------------------------------------------------------- 3. NaN EMA weights
def _nan_ema(workdir, step=10):
  path = workdir / 'checkpoints' / f'checkpoint_{step}.pth'
  state = ckpt.read_checkpoint(str(path))
  state['ema']['shadow_params'] = [p * float('nan') for p in state['ema']['shadow_params']]
  ckpt.save_checkpoint(str(path), state)
  return path


def test_nan_ema_checkpoint_is_refused_for_sampling_and_resuming(workdir):
  bad = _nan_ema(workdir)
  good = workdir / 'checkpoints' / 'checkpoint_5.pth'
  one_line_error(run(workdir, '--mode', 'sample'), f'checkpoint {bad} has non-finite EMA weights',
                 f'last good checkpoint: {good}')
  assert not os.path.exists(workdir / 'samples') or not os.listdir(workdir / 'samples')
  before = {n: os.path.getmtime(workdir / 'checkpoints' / n)
            for n in os.listdir(workdir / 'checkpoints')}
  with pytest.raises(UserError, match=re.escape(f'cannot resume from {bad}: it has non-finite EMA '
                                                f'weights') + '.*' + re.escape(f'last good checkpoint: {good}')):
    train(workdir, 20)
  after = {n: os.path.getmtime(workdir / 'checkpoints' / n)
           for n in os.listdir(workdir / 'checkpoints')}
  assert after == before  # nothing more was written
  assert last_good_checkpoint(str(workdir)) == str(good)


# ---------------------------------------------------------------- 6. image folders
def _png(path, value):
  os.makedirs(os.path.dirname(path), exist_ok=True)
  Image.fromarray(np.full((4, 4, 3), value, np.uint8)).save(path)


def _folder_config(root):
  from test_datasets import _config
  return _config(dataset='image_folder', root=str(root), image_size=4, num_channels=3)


def test_symlink_loop_neither_hangs_nor_repeats_images(tmp_path):
  for i in range(6):
    _png(str(tmp_path / ('cat' if i % 2 else 'dog') / f'{i}.png'), 10 * i)
  os.symlink('..', tmp_path / 'cat' / 'up')        # a loop
  os.symlink(tmp_path / 'dog', tmp_path / 'cat' / 'dog_again')  # the same folder twice
  os.symlink(tmp_path / 'dog' / '0.png', tmp_path / 'dog' / 'same.png')  # the same image twice
  os.mkfifo(tmp_path / 'dog' / 'pipe.png')        # a FIFO is never opened
  with deadline(30):
    train, test = (get_dataset(_folder_config(tmp_path).data, s) for s in ('train', 'test'))
  real = [os.path.realpath(f) for f in train.files + test.files]
  assert len(real) == len(set(real)) == 6
  assert sorted(set(train.labels + test.labels)) == [0, 1]


def test_split_folders_stay_disjoint_with_links(tmp_path):
  for split, names in (('train', 'abcd'), ('test', 'ef')):
    for i, n in enumerate(names):
      _png(str(tmp_path / split / f'{n}.png'), 40 * i)
  os.symlink('..', tmp_path / 'train' / 'loop')    # the train walk would reach test/
  os.symlink(tmp_path / 'train' / 'a.png', tmp_path / 'test' / 'a_link.png')  # one image in both
  with deadline(30):
    train, test = (get_dataset(_folder_config(tmp_path).data, s) for s in ('train', 'test'))
  real_train = {os.path.realpath(f) for f in train.files}
  real_test = {os.path.realpath(f) for f in test.files}
  assert not real_train & real_test
  assert len(train.files) == len(real_train) == 3 and len(test.files) == len(real_test) == 3
  assert {os.path.basename(f) for f in real_test} == {'a.png', 'e.png', 'f.png'}
