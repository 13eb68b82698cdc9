"""--mode inpaint / colorize end to end on CPU: digits (grey) and a tiny RGB image folder."""
from __future__ import annotations

import os

import numpy as np
import pytest
from conftest import run_main

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = ['--config.model.nf=8', '--config.training.batch_size=8', '--config.sampling.steps=5',
        '--config.inverse.num_images=4', '--config.sampling.rtol=1e-2', '--config.sampling.atol=1e-2']


def run(workdir, *args, config='configs/digits.py'):
  return run_main('--config', config, '--workdir', workdir, *TINY, *args)


@pytest.fixture(scope='module')
def digits(tmp_path_factory):
  wd = tmp_path_factory.mktemp('inv') / 'digits'
  proc = run(wd, '--mode', 'train', '--config.training.n_iters=2')
  assert proc.returncode == 0, proc.stderr[-2000:]
  return wd


def _result(wd, name):
  npz = np.load(os.path.join(wd, 'samples', name + '.npz'))
  assert os.path.getsize(os.path.join(wd, 'samples', name + '.png')) > 0
  return npz['input'], npz['result'], npz['original']


def test_inpaint_pc_keeps_the_known_pixels(digits):
  proc = run(digits, '--mode', 'inpaint', '--solver', 'pc')
  assert proc.returncode == 0, proc.stderr[-2000:]
  shown, result, original = _result(digits, 'inpaint_pc_checkpoint_2')
  assert result.shape == original.shape == (4, 1, 8, 8) and np.isfinite(result).all()
  known = np.ones((8, 8), bool)
  known[2:6, 2:6] = False  # the 'center' mask
  np.testing.assert_allclose(result[..., known], original[..., known], atol=1e-5)
  assert np.abs(shown[..., ~known]).max() == 0  # the input row shows the hole


@pytest.mark.slow
def test_inpaint_ode_with_image_and_mask_files(digits, tmp_path):
  images = (np.random.default_rng(0).random((3, 8, 8, 1)) * 255).astype(np.uint8)
  mask = np.zeros((8, 8), np.float32)
  mask[:, :3] = 1
  np.save(tmp_path / 'imgs.npy', images)
  np.save(tmp_path / 'mask.npy', mask)
  proc = run(digits, '--mode', 'inpaint', '--solver', 'ode', f'--config.inverse.source={tmp_path}/imgs.npy',
             f'--config.inverse.mask={tmp_path}/mask.npy')
  assert proc.returncode == 0, proc.stderr[-2000:]
  _, result, original = _result(digits, 'inpaint_ode_checkpoint_2')
  assert result.shape == (3, 1, 8, 8)
  np.testing.assert_allclose(result[..., :3], original[..., :3], atol=1e-5)
  np.testing.assert_allclose(original[:, 0], images[..., 0] / 255.0, atol=1e-6)


@pytest.mark.slow  # end to end; the library parts have fast tests
def test_colorize_rgb_and_refuse_grey(digits, tmp_path):
  from PIL import Image
  root = tmp_path / 'rgb'
  root.mkdir()
  rng = np.random.default_rng(0)
  for i in range(40):
    Image.fromarray((rng.random((8, 8, 3)) * 255).astype(np.uint8)).save(root / f'{i}.png')
  wd = tmp_path / 'rgbrun'
  rgb = ['--config.data.dataset=image_folder', f'--config.data.root={root}', '--config.data.num_channels=3']
  assert run(wd, '--mode', 'train', '--config.training.n_iters=2', *rgb).returncode == 0
  proc = run(wd, '--mode', 'colorize', '--solver', 'pc', *rgb)
  assert proc.returncode == 0, proc.stderr[-2000:]
  shown, result, original = _result(wd, 'colorize_pc_checkpoint_2')
  assert result.shape == original.shape == (2, 3, 8, 8) and np.isfinite(result).all()
  np.testing.assert_allclose(shown, original.mean(1, keepdims=True).repeat(3, 1), atol=1e-6)
  grey = run(digits, '--mode', 'colorize')
  assert grey.returncode == 2 and 'colorize needs an RGB model' in grey.stderr.strip().splitlines()[-1]
