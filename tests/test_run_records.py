"""What a training run leaves in its workdir (config.json, run.json, log.txt with the losses),
the config check of a resumed run, plain progress lines when stderr is not a terminal, the
config stored in checkpoints, and runtime.num_threads."""
from __future__ import annotations

import io
import json
import logging
import os
import socket
import subprocess

import pytest
import torch

from score_sde.files import checkpoint as ckpt
from score_sde.app import run_record
from score_sde.runtime.progress import PlainProgress, progress
from score_sde.runtime.device import configure_threads
from conftest import ROOT, run_main

TINY = ['--config', 'configs/toy_gmm.py', '--config.model.hidden=32', '--config.model.depth=1',
        '--config.training.batch_size=64', '--config.data.toy_size=400',
        '--config.training.snapshot_freq_for_preemption=5', '--config.training.log_freq=5']


@pytest.fixture(scope='module')
def trained(tmp_path_factory):
  """A toy workdir trained to step 10 and the finished process."""
  wd = str(tmp_path_factory.mktemp('records') / 'run')
  proc = run_main('--mode', 'train', '--workdir', wd, *TINY, '--config.training.n_iters=10')
  assert proc.returncode == 0, proc.stderr[-2000:]
  return wd, proc


def test_config_json_is_the_resolved_config(trained):
  wd, _ = trained
  with open(os.path.join(wd, 'config.json')) as f:
    recorded = json.load(f)
  assert recorded['model']['hidden'] == 32 and recorded['training']['n_iters'] == 10
  state = ckpt.read_checkpoint(os.path.join(wd, 'checkpoints', 'checkpoint_10.pth'))
  assert json.loads(state['config']) == recorded   # the checkpoint holds the same config


def test_run_json(trained):
  wd, _ = trained
  with open(os.path.join(wd, 'run.json')) as f:
    run = json.load(f)
  head = subprocess.run(['git', 'rev-parse', 'HEAD'], cwd=ROOT, capture_output=True, text=True, timeout=10)
  assert run['git_commit'] == (head.stdout.strip() if head.returncode == 0 else None)
  assert run['torch'] == torch.__version__ and run['cuda'] == torch.version.cuda
  assert run['hostname'] == socket.gethostname() and run['world_size'] == 1
  assert '--mode' in run['command'] and '--config.training.n_iters=10' in run['command']
  assert run['score_sde_version'] and run['started_utc'].endswith('+00:00')


def test_log_txt_has_the_losses_and_stderr_no_bars(trained):
  wd, proc = trained
  with open(os.path.join(wd, 'log.txt')) as f:
    log = f.read()
  state = ckpt.read_checkpoint(os.path.join(wd, 'checkpoints', 'checkpoint_10.pth'))
  line = next(l for l in log.splitlines() if 'step 10: loss ' in l)
  logged = float(line.split('step 10: loss ')[1].split(',')[0])
  assert logged == pytest.approx(state['loss'], rel=1e-4)   # the loss that was trained
  assert 'step 5: loss ' in log and 'training score in' in log
  assert 'train: 10/10 (100%)' in log   # the closing progress line
  assert '\r' not in proc.stderr and 'train: 10/10 (100%)' in proc.stderr


def test_resume_names_changed_keys_and_refuses_model_keys(trained, tmp_path):
  import shutil
  wd = str(tmp_path / 'run')
  shutil.copytree(trained[0], wd)
  ok = run_main('--mode', 'train', '--workdir', wd, *TINY, '--config.training.n_iters=12',
                '--config.optim.lr=0.0005')
  assert ok.returncode == 0, ok.stderr[-2000:]
  warned = [l for l in ok.stderr.splitlines() if 'with a changed config' in l]
  assert len(warned) == 1 and 'optim.lr 0.001 -> 0.0005' in warned[0]
  assert 'training.n_iters 10 -> 12' in warned[0]
  with open(os.path.join(wd, 'log.txt')) as f:
    assert warned[0].split('] ', 1)[1] in f.read()
  before = sorted(os.listdir(os.path.join(wd, 'checkpoints')))
  bad = run_main('--mode', 'train', '--workdir', wd, *TINY, '--config.training.n_iters=14',
                 '--config.model.hidden=64')
  last = bad.stderr.strip().splitlines()[-1]
  assert bad.returncode == 2 and 'Traceback' not in bad.stderr, bad.stderr[-2000:]
  assert last.startswith('error: ') and 'trained with --config.model.hidden=32' in last
  assert 'define the model' in last
  assert sorted(os.listdir(os.path.join(wd, 'checkpoints'))) == before
  # an SDE key: refused by the recorded 'meta' first, with the recorded flag added
  from score_sde.configs.toy_gmm import get_config
  from score_sde.app.build_train import build_trainer
  config = get_config()
  config.model.hidden, config.model.depth, config.model.num_scales = 32, 1, 500
  trainer = build_trainer(config, wd)
  with pytest.raises(ckpt.CheckpointError,
                     match='holds a model with sde .*trained with --config.model.num_scales=1000'):
    trainer.restore()
  trainer.close()


def test_check_resume_in_process(caplog):
  from score_sde.configs.digits import get_config
  old = get_config()
  state = {run_record.CONFIG_KEY: run_record.config_to_json(old)}
  new = get_config()
  new.model.ema_rate, new.training.n_iters = 0.99, 10   # training choices: a warning
  with caplog.at_level(logging.WARNING):
    run_record.check_resume(state, new, 'score', 'checkpoint c.pth', 'config.json')
  assert 'model.ema_rate 0.999 -> 0.99, training.n_iters 3000 -> 10' in caplog.text
  for key, value in (('data.centered', False), ('training.continuous', False), ('model.ch_mult', (1, 2, 2))):
    changed = get_config()
    section, name = key.split('.')
    changed[section][name] = value
    with pytest.raises(ckpt.CheckpointError, match=f'trained with --config.{key}='):
      run_record.check_resume(state, changed, 'score', 'checkpoint c.pth', 'config.json')
  run_record.check_resume({}, new, 'score', 'c', 'r')   # nothing recorded: nothing to compare


def test_config_json_round_trip_of_every_packaged_config():
  import importlib
  from score_sde.app.cli import packaged_configs
  for name in packaged_configs():
    config = importlib.import_module(f'score_sde.configs.{name}').get_config()
    back = run_record.config_from_json(run_record.config_to_json(config))
    assert run_record.flatten(back) == run_record.flatten(config), name
    assert isinstance(back.model.ch_mult, tuple)
  with pytest.raises(ckpt.CheckpointError, match='damaged config record'):
    run_record.config_from_json('[1, 2]', 'checkpoint x')


def test_one_config_reader_for_checkpoints_and_safetensors(caplog):
  """`config_from_json` reads both records (config_to_json's and ConfigDict.to_json's): unknown
  keys are skipped with a warning, a wrong-typed value is a one-line CheckpointError."""
  from score_sde.configs.toy import get_config
  config = get_config()
  for text in (run_record.config_to_json(config), config.to_json()):
    assert run_record.flatten(run_record.config_from_json(text, 'f')) == run_record.flatten(config)
  with caplog.at_level('WARNING'):
    back = run_record.config_from_json('{"model": {"nf": 7, "bogus": 1}}', 'file y')
  assert back.model.nf == 7 and 'model.bogus' in caplog.text
  with pytest.raises(ckpt.CheckpointError, match=r'file z: config key training.batch_size = .big. has the wrong type'):
    run_record.config_from_json('{"training": {"batch_size": "big"}}', 'file z')


def test_progress_is_plain_lines_off_a_terminal(caplog, monkeypatch):
  monkeypatch.setenv('SCORE_SDE_PROGRESS_SECONDS', '0')
  with caplog.at_level(logging.INFO):
    items = list(progress(range(3), desc='eval', stream=io.StringIO()))
  assert items == [0, 1, 2]
  lines = [r.getMessage() for r in caplog.records]
  assert lines[:3] == [l for l in lines if l.startswith('eval: ') and '/3 (' in l][:3]
  assert lines[0].startswith('eval: 1/3 (33%)') and lines[-1].startswith('eval: 3/3 (100%)')
  assert 'in all' in lines[-1]
  bar = PlainProgress(total=100, desc='train', initial=40, every=1e9)
  bar.update(10)
  bar.set_postfix(loss='0.5')
  assert bar.line(bar.start + 5).startswith('train: 50/100 (50%), 2 it/s, 25 s left, loss=0.5')

  class Tty(io.StringIO):
    def isatty(self):
      return True
  import tqdm
  assert isinstance(progress(range(2), desc='x', stream=Tty()), tqdm.tqdm)


def test_num_threads(monkeypatch):
  from score_sde.configs.digits import get_config
  config, before = get_config(), torch.get_num_threads()
  try:
    config.runtime.num_threads = 3
    assert configure_threads(config.runtime) == 3 == torch.get_num_threads()
    config.runtime.num_threads, config.runtime.device = 0, 'cpu'
    monkeypatch.delenv('OMP_NUM_THREADS', raising=False)
    assert configure_threads(config.runtime) == 1 == torch.get_num_threads()   # auto on a CPU: one
    torch.set_num_threads(2)
    monkeypatch.setenv('OMP_NUM_THREADS', '2')
    assert configure_threads(config.runtime) == 2   # the environment decides
  finally:
    torch.set_num_threads(before)
