"""--mode eval results match their settings (issue 22, cause 2) and files read back are
checked (cause 3, evaluation side): the folder's manifest, exactly num_samples scored, shards
validated, stats files validated, no NaN in the JSON. In-process on a 5-step 2-D toy model."""
from __future__ import annotations

import json
import logging
import os
import shutil

import numpy as np
import pytest
import torch

import run_lib
from score_sde.app import eval_modes
from score_sde.files import checkpoint as ckpt
from score_sde.errors import UserError

pytestmark = pytest.mark.usefixtures('one_thread')
METRICS = ('sliced_w2', 'mean_error', 'cov_error', 'nats_per_dim', 'nfe_per_batch', 'num_samples')


def set_keys(config, over: dict):
  for key, value in over.items():
    *path, last = key.split('.')
    node = config
    for p in path:
      node = getattr(node, p)
    setattr(node, last, value)
  return config


def toy(**over):
  from configs.toy_gmm import get_config
  base = {'model.hidden': 32, 'model.depth': 1, 'training.batch_size': 64, 'data.toy_size': 400,
          'training.snapshot_freq': 1000, 'training.snapshot_freq_for_preemption': 5,
          'training.n_iters': 5, 'sampling.batch_size': 50, 'eval.batch_size': 20,
          'sampling.steps': 10, 'eval.bpd_num_batches': 1, 'sampling.rtol': 1e-3,
          'sampling.atol': 1e-3, 'eval.num_samples': 120, 'eval.solver': 'dpm_solver'}
  return set_keys(get_config(), {**base, **{k.replace('__', '.'): v for k, v in over.items()}})


@pytest.fixture(scope='module')
def runs(tmp_path_factory):
  """Two trained toy work dirs (different seeds, so different weights), each with checkpoint_5."""
  out = {}
  for seed in (0, 1):
    wd = str(tmp_path_factory.mktemp(f'run{seed}'))
    run_lib.train(toy(seed=seed), wd)
    out[seed] = wd
  return out


@pytest.fixture
def wd(runs, tmp_path):
  """A fresh copy of run 0's checkpoints."""
  shutil.copytree(os.path.join(runs[0], 'checkpoints'), tmp_path / 'wd' / 'checkpoints')
  return str(tmp_path / 'wd')


def evaluate(workdir, checkpoint='', **over):
  (report,) = run_lib.evaluate(toy(**over), workdir, checkpoint=checkpoint)
  return report


def strict_json(path):
  def no_constant(name):
    raise AssertionError(f'{path} holds {name}')
  with open(path) as f:
    return json.loads(f.read(), parse_constant=no_constant)


def metrics(report):
  return {k: report[k] for k in METRICS if k in report}


def fresh(runs, tmp_path, **over):
  """The report of the same settings in a work dir that never evaluated anything."""
  return metrics(evaluate(wd_copy(runs, tmp_path), **over))


def wd_copy(runs, tmp_path, seed=0):
  target = tmp_path / f'fresh{len(os.listdir(tmp_path))}'
  shutil.copytree(os.path.join(runs[seed], 'checkpoints'), target / 'checkpoints')
  return str(target)


def test_another_solver_redraws_the_samples_and_keeps_the_likelihood_cache(wd, runs, tmp_path,
                                                                          caplog):
  first = evaluate(wd)
  bpd = os.path.join(wd, 'eval', 'checkpoint_5', 'bpd_00000.npy')
  stamp = os.stat(bpd).st_mtime_ns
  with caplog.at_level(logging.WARNING):
    second = evaluate(wd, eval__solver='ddim')
  assert 'discarded 3 samples shard(s)' in caplog.text
  assert "solver 'dpm_solver' -> 'ddim'" in caplog.text
  assert second['solver'] == 'ddim' and second['manifest']['samples']['solver'] == 'ddim'
  assert metrics(second) == fresh(runs, tmp_path, eval__solver='ddim')
  assert metrics(second)['sliced_w2'] != metrics(first)['sliced_w2']
  assert os.stat(bpd).st_mtime_ns == stamp  # the likelihood settings did not change
  assert strict_json(os.path.join(wd, 'eval', 'checkpoint_5.json'))['complete'] is True


@pytest.mark.parametrize('over', [{'eval__num_samples': 130}, {'sampling__batch_size': 60},
                                  {'sampling__seed': 3}, {'sampling__steps': 6}])
def test_exactly_num_samples_with_this_runs_settings_are_scored(wd, runs, tmp_path, over):
  evaluate(wd)
  again = evaluate(wd, **over)
  assert metrics(again) == fresh(runs, tmp_path, **over)
  n = sum(len(np.load(f)['samples']) for f in _sample_files(wd))
  assert again['num_samples'] == over.get('eval__num_samples', 120) <= n


def _sample_files(wd, name='checkpoint_5'):
  folder = os.path.join(wd, 'eval', name)
  return [os.path.join(folder, f) for f in sorted(os.listdir(folder)) if f.startswith('samples_')]


def test_checkpoint_of_another_run_neither_reuses_nor_overwrites(wd, runs, tmp_path):
  own = evaluate(wd)
  report_path = os.path.join(wd, 'eval', 'checkpoint_5.json')
  before = open(report_path).read()
  other = os.path.join(runs[1], 'checkpoints', 'checkpoint_5.pth')
  theirs = evaluate(wd, checkpoint=other)
  assert open(report_path).read() == before  # this run's report is untouched
  assert metrics(theirs) == metrics(evaluate(wd_copy(runs, tmp_path, seed=1)))
  assert metrics(theirs) != metrics(own)
  sha = ckpt_sha(other)
  assert theirs['checkpoint_sha256'] == sha
  assert os.path.isfile(os.path.join(wd, 'eval', f'checkpoint_5-{sha[:12]}.json'))


def ckpt_sha(path):
  import hashlib
  with open(path, 'rb') as f:
    return hashlib.sha256(f.read()).hexdigest()


def test_bpd_dataset_train_after_test_reports_the_train_value(wd, runs, tmp_path):
  test = evaluate(wd, eval__enable_sampling=False)
  train = evaluate(wd, eval__enable_sampling=False, eval__bpd_dataset='train')
  assert train['nats_per_dim'] == fresh(runs, tmp_path, eval__enable_sampling=False,
                                        eval__bpd_dataset='train')['nats_per_dim']
  assert train['nats_per_dim'] != test['nats_per_dim'] and train['bpd_dataset'] == 'train'
  # the sample shards do not depend on the likelihood's settings
  evaluate(wd, eval__enable_bpd=False)
  stamps = [os.stat(f).st_mtime_ns for f in _sample_files(wd)]
  evaluate(wd, eval__bpd_dataset='test', eval__bpd_divergence='exact')
  assert [os.stat(f).st_mtime_ns for f in _sample_files(wd)] == stamps


@pytest.mark.parametrize('file_name, stem', [('final.pt', 'final'), ('ab.pt', 'ab'), ('x', 'x')])
def test_folder_name_is_the_checkpoint_stem(wd, file_name, stem):
  src = os.path.join(wd, 'checkpoints', 'checkpoint_5.pth')
  path = os.path.join(wd, 'checkpoints', file_name)
  shutil.copy(src, path)
  evaluate(wd, checkpoint=path, eval__enable_bpd=False)
  assert sorted(os.listdir(os.path.join(wd, 'eval'))) == [stem, f'{stem}.json']


def test_a_nan_or_bad_shard_is_recomputed_and_the_json_is_strict(wd, caplog):
  clean = metrics(evaluate(wd))
  folder = os.path.join(wd, 'eval', 'checkpoint_5')
  good = dict(np.load(os.path.join(folder, 'samples_00000.npz')))
  bad = {
      'samples_00000.npz': lambda p: np.savez(p, samples=np.full_like(good['samples'], np.nan),
                                              nfe=good['nfe']),
      'samples_00001.npz': lambda p: open(p, 'wb').write(open(p, 'rb').read()[:100]),  # truncated
      'samples_00002.npz': lambda p: np.savez(p, samples=good['samples'][:7], nfe=good['nfe']),
      'bpd_00000.npy': lambda p: np.save(p, np.full(5, 1.0)),  # a batch of 20
  }
  for name, write in bad.items():
    write(os.path.join(folder, name))
  with caplog.at_level(logging.WARNING):
    again = evaluate(wd)
  assert metrics(again) == clean
  for name in bad:
    assert f'{name}: ' in caplog.text
  strict_json(os.path.join(wd, 'eval', 'checkpoint_5.json'))


@pytest.mark.parametrize('kind', ['empty', 'object', 'npy', 'int_vectors', 'no_nfe'])
def test_malformed_sample_shards_are_recomputed(wd, kind):
  clean = metrics(evaluate(wd))
  path = os.path.join(wd, 'eval', 'checkpoint_5', 'samples_00001.npz')
  x = np.load(path)['samples']
  write = {'empty': lambda: open(path, 'wb').close(),
           'object': lambda: np.savez(open(path, 'wb'), samples=np.array([None] * 50),
                                      nfe=np.array(3)),
           'npy': lambda: np.save(open(path, 'wb'), x),
           'int_vectors': lambda: np.savez(open(path, 'wb'), samples=x.astype(np.int64),
                                           nfe=np.array(3)),
           'no_nfe': lambda: np.savez(open(path, 'wb'), samples=x)}[kind]
  write()
  assert metrics(evaluate(wd)) == clean


def test_a_folder_named_like_a_shard_is_one_line(wd):
  os.makedirs(os.path.join(wd, 'eval', 'checkpoint_5', 'samples_00000.npz'))
  with pytest.raises(UserError, match='samples_00000.npz is not a regular file.*remove it'):
    evaluate(wd, eval__enable_bpd=False)


def test_nan_weights_are_an_error_not_nan_metrics(wd):
  path = os.path.join(wd, 'checkpoints', 'checkpoint_5.pth')
  state = ckpt.read_checkpoint(path)
  shadow = state['ema']['shadow_params']
  state['ema']['shadow_params'] = [torch.full_like(p, float('nan')) for p in shadow]
  state['model'] = {k: torch.full_like(v, float('nan')) if v.is_floating_point() else v
                    for k, v in state['model'].items()}
  ckpt.save_checkpoint(path, state)
  with pytest.raises(UserError, match='(?i)nan'):
    evaluate(wd)
  assert not os.path.exists(os.path.join(wd, 'eval', 'checkpoint_5', 'samples_00000.npz'))


def test_non_finite_samples_are_an_error_not_a_shard(wd, monkeypatch):
  nan = lambda config, model, n, *a, **k: (torch.full((n, 2), float('nan')), 10)
  monkeypatch.setattr(eval_modes, 'generate', nan)
  with pytest.raises(UserError, match='not finite.*weights are likely NaN'):
    evaluate(wd)
  assert not os.path.exists(os.path.join(wd, 'eval', 'checkpoint_5', 'samples_00000.npz'))


def test_likelihood_json_has_no_nan_for_one_example(wd):
  config = toy(eval__batch_size=1)
  report = run_lib.likelihood(config, wd)
  saved = strict_json(os.path.join(wd, 'likelihood.json'))
  assert saved['num_examples'] == 1 and saved['stderr'] is None and np.isfinite(saved['mean'])
  assert report['bpd_dataset'] == 'test'


# --- Inception statistics files ------------------------------------------------------------

def _stats_cases():
  d = 2048
  cases = {
      'wrong_dim': lambda p: np.savez(p, mu=np.zeros(10), sigma=np.eye(10)),
      'no_arrays': lambda p: np.savez(p),
      'non_finite': lambda p: np.savez(p, mu=np.full(d, np.nan), sigma=np.eye(d)),
      'npy': lambda p: np.save(open(p, 'wb'), np.zeros(d)),
      'strings': lambda p: np.savez(p, mu=np.array(['a'] * d), sigma=np.eye(d)),
      'folder': lambda p: os.makedirs(p),
  }
  return cases


@pytest.mark.parametrize('case', ['wrong_dim', 'no_arrays', 'non_finite', 'npy', 'strings', 'folder'])
def test_bad_stats_file_is_one_line_before_sampling(tmp_path, monkeypatch, case):
  """digits config (images): the stats file is checked before any sample is drawn."""
  from configs.digits import get_config
  from score_sde.evaluation import inception
  from score_sde.app import eval_loop as loop
  stats = str(tmp_path / 'stats.npz')
  _stats_cases()[case](stats)
  monkeypatch.setattr(inception, 'load_inception', lambda path, device: object())
  config = set_keys(get_config(), {'eval.stats_path': stats})
  with pytest.raises(UserError) as info:
    loop.reference_stats(config, str(tmp_path), None, "cpu")
  msg = str(info.value)
  assert stats in msg and '\n' not in msg


def test_eval_checks_the_stats_file_before_drawing_samples(tmp_path, monkeypatch):
  from configs.digits import get_config
  from score_sde.evaluation import inception
  stats = str(tmp_path / 'stats.npz')
  np.savez(stats, mu=np.zeros(10), sigma=np.eye(10))
  monkeypatch.setattr(inception, 'load_inception', lambda path, device: object())
  monkeypatch.setattr(eval_modes, 'load_eval_model', lambda *a: pytest.fail('sampled first'))
  config = set_keys(get_config(), {'eval.stats_path': stats, 'model.nf': 8})
  (tmp_path / 'checkpoints').mkdir()
  (tmp_path / 'checkpoints' / 'checkpoint_1.pth').write_bytes(b'')
  with pytest.raises(UserError, match='dimension 10, the Inception features have 2048'):
    run_lib.evaluate(config, str(tmp_path))
