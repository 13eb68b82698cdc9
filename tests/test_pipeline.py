"""score_sde.load / Pipeline: checkpoint to images with no config file, the same samples and
bits/dim as the command line, latents through the probability-flow ODE checked against the
closed form on Gaussian data, temperature, guidance arguments, --mode interpolate."""
from __future__ import annotations

import os
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

import score_sde
from score_sde.files import checkpoint as ckpt
from score_sde.data import datasets
from score_sde.app import run_lib
from score_sde.maths.analytic import gaussian
from score_sde.configs.digits import get_config as digits_config
from score_sde.configs.toy import get_config as toy_config
from score_sde.errors import UserError
from score_sde.app.generate import generate
from score_sde.app.build import create_model
from score_sde.app.loading import load_checkpoint
from score_sde.app.pipeline import Pipeline, slerp
from score_sde.app.build import build_sde
from score_sde.files.workdir import latest_checkpoint
from conftest import run_main

pytestmark = pytest.mark.usefixtures('one_thread')
TINY = {'model.nf': 8, 'training.batch_size': 8, 'training.n_iters': 3,
        'training.snapshot_freq_for_preemption': 3, 'sampling.rtol': 1e-3, 'sampling.atol': 1e-3}
TINY_FLAGS = [f'--config.{k}={v}' for k, v in TINY.items()]


def _digits(**extra):
  c = digits_config()
  for key, value in {**TINY, **extra}.items():
    section, name = key.split('.')
    c[section][name] = value
  return c


@pytest.fixture(scope='module')
def workdir(tmp_path_factory):
  """A digits workdir trained for 3 steps with nf = 8 (the packaged config has nf = 32)."""
  wd = str(tmp_path_factory.mktemp('pipe') / 'run')
  run_lib.train(_digits(), wd)
  return wd


def test_three_lines_without_a_config(workdir, tmp_path):
  pipe = score_sde.load(workdir)
  images = pipe.sample(6, solver='ddim', steps=4, seed=0)
  assert images.dtype == torch.uint8 and images.shape == (6, 1, 8, 8)
  assert torch.equal(images, pipe.sample(6, solver='ddim', steps=4, seed=0))
  assert not torch.equal(images, pipe.sample(6, solver='ddim', steps=4, seed=1))
  # the samples of --mode sample with the training config
  config = _digits()
  config.sampling.steps = 4
  x, _ = generate(config, load_checkpoint(pipe.checkpoint, config), 6, 'ddim', seed=0)
  assert torch.equal(images, (x.clamp(0, 1) * 255).round().to(torch.uint8))
  # a checkpoint file, and a cwd elsewhere, give the same
  file_pipe = score_sde.load(latest_checkpoint(workdir)[1])
  assert torch.equal(images, file_pipe.sample(6, solver='ddim', steps=4, seed=0))
  path = pipe.save_grid(images, str(tmp_path / 'grid.png'), nrow=3)
  grid = np.asarray(Image.open(path))
  assert grid.shape == (2 * 34 + 2, 3 * 34 + 2)   # 8x8 images enlarged 4x, 2-pixel padding
  first = images[0, 0].numpy().repeat(4, 0).repeat(4, 1)
  assert np.array_equal(grid[2:34, 2:34], first)


def test_checkpoint_records_its_config(workdir, tmp_path):
  import json
  path = latest_checkpoint(workdir)[1]
  state = ckpt.read_checkpoint(path)
  assert json.loads(state['config'])['model']['nf'] == 8
  assert load_checkpoint(path).net.state_dict().keys() == state['model'].keys()
  # the packaged config (nf = 32) names the key the model was trained with
  with pytest.raises(UserError, match=r'trained with --config.model.nf=8'):
    score_sde.load(workdir, config='digits')
  # a file without a config (as score_sde_pytorch's) needs one, and takes a ConfigDict
  bare = str(tmp_path / 'bare.pth')
  ckpt.save_checkpoint(bare, {k: v for k, v in state.items() if k != 'config'})
  with pytest.raises(UserError, match='records no config.*config=') as err:
    score_sde.load(bare)
  assert '\n' not in str(err.value)
  pipe = score_sde.load(bare, config=_digits())
  assert torch.equal(pipe.sample(2, 'ddim', steps=2), score_sde.load(workdir).sample(2, 'ddim', steps=2))


def test_log_likelihood_equals_the_cli(workdir, tmp_path):
  config = _digits()
  config.eval.batch_size, config.eval.bpd_num_batches = 5, 1
  wd = str(tmp_path / 'copy')
  shutil.copytree(workdir, wd)
  report = run_lib.likelihood(config, wd)
  test = datasets.load_split(config.data, 'test')
  x = torch.stack([test[i][0] for i in range(5)])
  bpd = score_sde.load(wd).log_likelihood((x * 255).round().to(torch.uint8), seed=config.seed)
  assert bpd.shape == (5,) and bpd.dtype == torch.float64
  assert float(bpd.mean()) == pytest.approx(report['mean'], rel=1e-9)


class GaussianScore(torch.nn.Module):
  """The exact score of N(mu, diag(s^2)) data under `sde` (a stand-in trained model)."""

  def __init__(self, data, sde):
    super().__init__()
    self.data, self.sde, self.dummy = data, sde, torch.nn.Parameter(torch.zeros(()))

  def forward(self, x, t, y=None):
    return self.data.score(x, t, self.sde)


def _analytic_pipe():
  config = toy_config()
  config.sampling.batch_size = 4000
  data = gaussian(mean=[1.0, -0.5], variance=[0.25, 1.0])
  return Pipeline(config, GaussianScore(data, build_sde(config)).eval()), data


def test_encode_decode_match_the_closed_form():
  pipe, data = _analytic_pipe()
  sde, eps = pipe.model.sde, pipe.config.sampling.eps
  x = data.sample(256, torch.Generator().manual_seed(0))
  z = pipe.encode(x, rtol=1e-6, atol=1e-6)
  mu, var = data.means[0].float(), data.variances[0].float()
  std = lambda t: (sde.mean_coeff(torch.tensor(t)) ** 2 * var + sde.exact_kernel_var(torch.tensor(t))).sqrt()
  alpha = lambda t: sde.mean_coeff(torch.tensor(t))
  want = alpha(sde.T) * mu + std(sde.T) * (x - alpha(eps) * mu) / std(eps)   # the PF-ODE's affine map
  assert torch.allclose(z, want, atol=1e-3)
  assert torch.allclose(pipe.decode(z, rtol=1e-6, atol=1e-6), x, atol=1e-3)
  ends = pipe.interpolate(x[0], x[1], num=5)
  assert ends.shape == (5, 2) and torch.allclose(ends[[0, -1]], x[:2], atol=1e-3)


def test_temperature_scales_the_prior():
  pipe, data = _analytic_pipe()
  s = data.variances[0].sqrt().float()
  for tau in (1.0, 0.5):
    x = pipe.sample(2000, solver='dpm_solver', steps=20, seed=0, temperature=tau)
    assert torch.allclose(x.std(0), tau * s, rtol=0.06), (tau, x.std(0))
  assert torch.equal(pipe.sample(8, 'ddim', steps=5), pipe.sample(8, 'ddim', steps=5, temperature=1.0))
  with pytest.raises(UserError, match='temperature'):
    pipe.sample(8, 'ddim', steps=5, temperature=0)


def test_slerp():
  z0, z1 = torch.tensor([1.0, 0.0]), torch.tensor([0.0, 1.0])
  path = slerp(z0, z1, torch.linspace(0, 1, 5))
  assert torch.equal(path[0], z0) and torch.allclose(path[-1], z1, atol=1e-7)
  assert torch.allclose(path.norm(dim=1), torch.ones(5))        # on the sphere, unlike a line
  assert torch.allclose(path[2], torch.tensor([0.5 ** 0.5, 0.5 ** 0.5]))


def test_encode_decode_on_a_trained_network(workdir):
  pipe = score_sde.load(workdir)
  x = pipe.sample(3, 'ddim', steps=4, seed=2)
  z = pipe.encode(x, rtol=1e-6, atol=1e-6)
  assert z.shape == (3, 1, 8, 8) and float((z - x.float() / 127.5 + 1).abs().max()) > 0.1
  back = pipe.decode(z, rtol=1e-6, atol=1e-6, uint8=False)
  assert float((back - x.float() / 255).abs().max()) < 1 / 255   # within a gray level
  assert float((pipe.decode(z, rtol=1e-6, atol=1e-6) == x).float().mean()) > 0.95


def test_guidance_arguments():
  config = _digits(**{'model.class_conditional': True})
  model = create_model(config, build_sde(config)).eval()
  pipe = Pipeline(config, model)
  got = pipe.sample(4, 'ddim', steps=3, seed=0, label=3, guidance_scale=2.0)
  config.sampling.steps, config.sampling.guidance_scale = 3, 2.0
  x, _ = generate(config, model, 4, 'ddim', seed=0, class_labels=torch.full((4,), 3))
  assert torch.equal(got, (x.clamp(0, 1) * 255).round().to(torch.uint8))
  assert pipe.sample(4, 'ddim', steps=3, label=[0, 1, 2, 3]).shape == (4, 1, 8, 8)
  with pytest.raises(UserError, match=r'label must be a class in \[0, 9\]'):
    pipe.sample(4, 'ddim', steps=3, label=10)
  plain = Pipeline(_digits(), create_model(_digits(), build_sde(_digits())).eval())
  with pytest.raises(UserError, match='guidance_scale needs a class-conditional model'):
    plain.sample(2, 'ddim', steps=2, guidance_scale=2.0)
  with pytest.raises(UserError, match='label needs a class-conditional model'):
    plain.encode(torch.zeros(1, 1, 8, 8, dtype=torch.uint8), label=1)


def test_bad_inputs_are_one_line_errors(workdir, tmp_path):
  with pytest.raises(UserError, match='no such workdir or checkpoint file'):
    score_sde.load(str(tmp_path / 'missing'))
  with pytest.raises(UserError, match='no checkpoint in'):
    score_sde.load(str(tmp_path))
  pipe = score_sde.load(workdir)
  with pytest.raises(UserError, match=r'uint8, or floats in \[0, 1\]'):
    pipe.log_likelihood(torch.full((2, 1, 8, 8), 3.0))
  with pytest.raises(UserError, match=r'expected a batch shaped \[B, 1, 8, 8\]'):
    pipe.encode(torch.zeros(2, 3, 8, 8, dtype=torch.uint8))


def test_interpolate_mode(workdir, tmp_path):
  wd = str(tmp_path / 'run')
  shutil.copytree(workdir, wd)
  proc = run_main('--mode', 'interpolate', '--config', 'digits', '--workdir', wd, *TINY_FLAGS,
                  '--config.sampling.interpolate_steps=4', '--config.sampling.interpolate_images=(2, 5)',
                  timeout=240)
  assert proc.returncode == 0, proc.stderr[-2000:]
  png = os.path.join(wd, 'samples', 'interpolate_checkpoint_3.png')
  assert np.asarray(Image.open(png)).shape == (36, 6 * 34 + 2)   # one row: 2 originals + 4
  row = np.load(png[:-4] + '.npz')['images']
  test = datasets.load_split(_digits().data, 'test')
  assert np.array_equal(row[0], test[2][0].numpy()) and np.array_equal(row[-1], test[5][0].numpy())
  assert 'RMSE of the decoded ends' in proc.stdout
  with pytest.raises(UserError, match='interpolate works on images'):
    run_lib.interpolate(toy_config(), wd)
