"""--mode train_classifier and classifier-guided --mode sample, end to end on the 2-D GMM toy."""
from __future__ import annotations

import glob
import os

import numpy as np
import pytest
from conftest import run_main

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = ['--config', 'configs/toy_gmm.py', '--config.model.hidden=32', '--config.model.depth=1',
        '--config.training.batch_size=64', '--config.data.toy_size=2000',
        '--config.training.snapshot_freq=100000', '--config.training.snapshot_freq_for_preemption=100',
        '--config.sampling.num_samples=64', '--config.sampling.batch_size=64', '--config.sampling.steps=10',
        '--config.classifier.hidden=64', '--config.classifier.depth=2', '--config.optim.warmup=0',
        '--config.optim.lr=3e-3', '--config.eval.batch_size=200']


def run(wd, *args):
  return run_main('--workdir', wd, *TINY, *args)


@pytest.mark.slow  # end to end; the library parts have fast tests
def test_train_classifier_then_guided_sampling(tmp_path):
  wd = tmp_path / 'run'
  assert run(wd, '--mode', 'train', '--config.training.n_iters=100').returncode == 0
  no_clf = run(wd, '--mode', 'sample', '--solver', 'dpm_solver', '--config.sampling.classifier_scale=1.0')
  assert no_clf.returncode == 2 and 'train one with --mode train_classifier' in no_clf.stderr
  proc = run(wd, '--mode', 'train_classifier', '--config.training.n_iters=300')
  assert proc.returncode == 0, proc.stderr[-2000:]
  assert os.path.exists(wd / 'classifier' / 'checkpoints' / 'checkpoint_300.pth')
  assert not os.path.exists(wd / 'checkpoints' / 'checkpoint_300.pth')  # the score model's are apart
  from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
  acc = EventAccumulator(glob.glob(str(wd / 'classifier' / 'tensorboard'))[0])
  acc.Reload()
  tags = sorted(t for t in acc.Tags()['scalars'] if t.startswith('accuracy/'))
  assert len(tags) == 5
  final = {t: acc.Scalars(t)[-1].value for t in tags}
  low_noise, high_noise = final[tags[0]], final[tags[-1]]
  assert low_noise > 0.6 > 1 / 8 and high_noise < low_noise  # 8 classes: chance is 1/8
  plain = run(wd, '--mode', 'sample', '--solver', 'dpm_solver')
  assert plain.returncode == 0, plain.stderr[-2000:]
  x0 = np.load(wd / 'samples' / 'dpm_solver_checkpoint_100.npz')['samples']
  guided = run(wd, '--mode', 'sample', '--solver', 'dpm_solver', '--config.sampling.classifier_scale=3.0')
  assert guided.returncode == 0, guided.stderr[-2000:]
  x1 = np.load(wd / 'samples' / 'dpm_solver_checkpoint_100.npz')['samples']
  assert x1.shape == (64, 2) and np.isfinite(x1).all() and np.abs(x1 - x0).max() > 1e-3
  # guidance moves samples towards their requested class (one row of 8 per class), as judged by
  # the classifier at t = 1e-3
  import torch
  from score_sde.app.loading import load_guidance_classifier
  from configs.toy_gmm import get_config
  config = get_config()
  config.classifier.hidden, config.classifier.depth, config.sampling.classifier_scale = 64, 2, 1.0
  clf = load_guidance_classifier(config, str(wd), 'cpu')
  labels = torch.arange(64) * 8 // 64
  agree = lambda x: float((clf(torch.as_tensor(x), torch.full((64,), 1e-3)).argmax(1) == labels).float().mean())
  print(f'class agreement: unguided {agree(x0):.2f}, guided (scale 3) {agree(x1):.2f}; '
        f'accuracy low/high noise {low_noise:.2f}/{high_noise:.2f}')
  assert agree(x1) > agree(x0) + 0.2
