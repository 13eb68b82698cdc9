"""--mode eval end to end on CPU: a 2-D toy (sliced W2, nats/dim, resumable shards) and digits
(FID / IS / KID with a locally saved, randomly initialised FID Inception network)."""
from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch
from conftest import run_main

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOY = ['--config', 'configs/toy_gmm.py', '--config.model.hidden=32', '--config.model.depth=1',
       '--config.training.batch_size=64', '--config.data.toy_size=400',
       '--config.training.snapshot_freq=1000', '--config.training.snapshot_freq_for_preemption=5',
       '--config.sampling.batch_size=50', '--config.eval.batch_size=20', '--config.sampling.steps=10',
       '--config.eval.bpd_num_batches=1', '--config.sampling.rtol=1e-3', '--config.sampling.atol=1e-3']
DIGITS = ['--config', 'configs/digits.py', '--config.model.nf=8', '--config.training.batch_size=8',
          '--config.sampling.batch_size=4', '--config.eval.batch_size=4', '--config.sampling.steps=5',
          '--config.sampling.rtol=1e-2', '--config.sampling.atol=1e-2']


def run(wd, *args):
  return run_main('--workdir', wd, *args)


def ok(proc):
  assert proc.returncode == 0, proc.stderr[-3000:]
  return proc


def test_eval_toy_reports_and_resumes(tmp_path):
  wd = tmp_path / 'toy'
  ok(run(wd, *TOY, '--mode', 'train', '--config.training.n_iters=10'))
  ev = TOY + ['--mode', 'eval', '--solver', 'dpm_solver', '--config.eval.num_samples=120']
  ok(run(wd, *ev))
  assert sorted(os.listdir(wd / 'eval')) == ['checkpoint_10', 'checkpoint_10.json', 'checkpoint_5',
                                             'checkpoint_5.json']
  first = json.loads((wd / 'eval' / 'checkpoint_10.json').read_text())
  assert first['num_samples'] == 120 and first['bpd_num_examples'] == 20 and first['step'] == 10
  assert 0 < first['sliced_w2'] < np.inf and np.isfinite(first['nats_per_dim'])
  shards = sorted(os.listdir(wd / 'eval' / 'checkpoint_10'))
  assert shards == ['bpd_00000.npy', 'samples_00000.npz', 'samples_00001.npz', 'samples_00002.npz']
  # a pre-empted evaluation: a shard and the report are missing; the rerun redraws the same shard
  kept = np.load(wd / 'eval' / 'checkpoint_10' / 'samples_00001.npz')['samples']
  os.remove(wd / 'eval' / 'checkpoint_10' / 'samples_00001.npz')
  os.remove(wd / 'eval' / 'checkpoint_10.json')
  ok(run(wd, *ev, '--config.eval.begin_ckpt=10'))
  redrawn = np.load(wd / 'eval' / 'checkpoint_10' / 'samples_00001.npz')['samples']
  np.testing.assert_array_equal(redrawn, kept)
  assert json.loads((wd / 'eval' / 'checkpoint_10.json').read_text()) == first
  none = run(wd, *ev, '--config.eval.begin_ckpt=11')
  assert none.returncode == 2 and 'no checkpoint numbered in [11, inf]' in none.stderr


@pytest.mark.slow  # end to end; the library parts have fast tests
def test_eval_images_fid_is_kid_with_local_inception(tmp_path):
  from score_sde.evaluation import (FIDInceptionV3, compute_activations, feature_statistics,
                                    frechet_distance)
  torch.manual_seed(0)
  weights = tmp_path / 'inception.pth'
  inception = FIDInceptionV3().eval()  # fixed random weights, saved like the real ones
  torch.save(inception.state_dict(), weights)
  feats = np.random.default_rng(0).standard_normal((16, 2048))
  stats = tmp_path / 'stats.npz'
  np.savez(stats, mu=feats.mean(0), sigma=np.cov(feats.T), pool3=feats)
  wd = tmp_path / 'digits'
  ok(run(wd, *DIGITS, '--mode', 'train', '--config.training.n_iters=2'))
  ev = DIGITS + ['--mode', 'eval', '--config.eval.num_samples=8', '--config.eval.kid_subset_size=8',
                 '--config.eval.bpd_num_batches=1', '--config.eval.fid_method=eig',
                 '--config.eval.inception_resize=torch']  # compute_activations' resize below
  missing = run(wd, *ev, '--config.eval.inception_path=/nonexistent/pt_inception.pth')
  assert missing.returncode == 2 and 'pt_inception' in missing.stderr.strip().splitlines()[-1]
  ok(run(wd, *ev, f'--config.eval.inception_path={weights}', f'--config.eval.stats_path={stats}'))
  report = json.loads((wd / 'eval' / 'checkpoint_2.json').read_text())
  samples = np.concatenate([np.load(wd / 'eval' / 'checkpoint_2' / f'samples_0000{i}.npz')['samples']
                            for i in range(2)])
  assert samples.dtype == np.uint8 and samples.shape == (8, 1, 8, 8)
  acts = compute_activations([torch.from_numpy(samples)], inception, progress=False)
  fid = frechet_distance(*feature_statistics(acts.pool3), feats.mean(0), np.cov(feats.T), method='eig')
  assert report['fid'] == pytest.approx(fid, rel=1e-6)
  assert report['inception_score'] >= 1.0 and report['kid'] is not None
  assert 0 < report['bits_per_dim'] < 100 and report['bpd_num_examples'] == 4
