"""Inputs checked at the boundary (issue 22, causes 4 and 7 and the grid cache): sampler
arguments, inpainting masks and images, labels, config numbers, non-finite samples, the
optimized-grid cache read back and written concurrently, and classifiers of another SDE."""
from __future__ import annotations

import json
import logging
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from score_sde.files import checkpoint as ckpt
from score_sde.errors import ConfigError, UserError
from score_sde.sampling import sample
from score_sde.sdes import VESDE, VPSDE

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
pytestmark = pytest.mark.usefixtures('one_thread')
SDE_ = VPSDE()


def gauss_score(x, t):
  """The exact score of N(0, I) data under the VP SDE (its marginals stay N(0, I))."""
  return -x


# --- sample(): batch, steps, ts, score shape ---------------------------------------------------

@pytest.mark.parametrize('solver', ['pc', 'dpm_solver', 'ode'])
def test_sample_refuses_an_empty_batch_and_bad_steps(solver):
  with pytest.raises(ValueError, match=r'shape = \(0, 2\).*batch B >= 1'):
    sample(SDE_, gauss_score, (0, 2), solver, steps=3)
  with pytest.raises(ValueError, match='steps = -3: must be an integer >= 1'):
    sample(SDE_, gauss_score, (4, 2), solver, steps=-3)
  with pytest.raises(ValueError, match='steps = 2.5'):
    sample(SDE_, gauss_score, (4, 2), solver, steps=2.5)
  with pytest.raises(ValueError, match='shape'):
    sample(SDE_, gauss_score, None, solver, steps=3, x_init=torch.zeros(0, 2))


@pytest.mark.parametrize('solver', ['dpm_solver', 'unipc', 'heun', 'pc', 'sde', 'ddim'])
def test_sample_refuses_non_finite_or_unordered_times(solver):
  for ts in ([1.0, float('nan'), 0.5, 0.01], [1.0, 0.5, float('inf')], [float('nan'), 0.5, 0.01],
             [1.0, 0.5, 0.5, 0.01], [2.0, 0.5, 0.01]):
    with pytest.raises(ValueError, match='strictly decreasing'):
      sample(SDE_, gauss_score, (4, 2), solver, ts=ts)
  res = sample(SDE_, gauss_score, (4, 2), solver, ts=[1.0, 0.5, 0.01])
  assert torch.isfinite(res.x).all()


@pytest.mark.parametrize('solver', ['pc', 'ode', 'dpm_solver', 'heun'])
def test_a_score_of_the_wrong_shape_is_refused(solver):
  for bad in (lambda x, t: -x[:1], lambda x, t: -x[0], lambda x, t: -x.sum(1)):
    with pytest.raises(ValueError, match=r"returned .* for x of shape \(4, 2\).*x's shape"):
      sample(SDE_, bad, (4, 2), solver, steps=3)


# --- inpainting: mask shape and values, non-finite pixels ------------------------------------

def test_inpaint_refuses_a_mask_of_another_shape_or_with_other_values():
  from score_sde.sampling.inverse import inpaint
  y = torch.rand(2, 1, 8, 8)
  for shape in ((1, 1, 16, 16), (2, 1, 8), (3, 1, 8, 8), (1, 1, 1, 8, 8)):
    mask = torch.ones(shape)
    with pytest.raises(ValueError, match='does not match images of shape'):
      inpaint(SDE_, gauss_score, y, mask, 'pc', steps=2)
  for value in (0.5, 2.0, float('nan')):
    mask = torch.ones(1, 1, 8, 8)
    mask[..., 0, 0] = value
    with pytest.raises(ValueError, match='only 0 .* and 1'):
      inpaint(SDE_, gauss_score, y, mask, 'pc', steps=2)


@pytest.mark.parametrize('method', ['project', 'score'])
def test_one_nan_pixel_does_not_spoil_the_batch(method):
  from score_sde.sampling.inverse import inpaint
  y = torch.rand(3, 1, 8, 8)
  mask = torch.ones(1, 1, 8, 8)
  mask[..., 2:6, 2:6] = 0
  y[0, 0, 3, 3] = float('nan')  # an unknown pixel: ignored
  gen = torch.Generator().manual_seed(0)
  x = inpaint(SDE_, gauss_score, y, mask, 'pc', method=method, steps=3, generator=gen)
  assert torch.isfinite(x).all()
  y[1, 0, 0, 0] = float('nan')  # a known pixel: refused
  with pytest.raises(ValueError, match='non-finite .* known pixels'):
    inpaint(SDE_, gauss_score, y, mask, 'pc', method=method, steps=3)


def test_mask_file_of_another_size_or_values_is_one_line(tmp_path):
  from score_sde.app.inverse_cli import make_mask
  np.save(tmp_path / 'big.npy', np.ones((16, 16), np.float32))
  with pytest.raises(UserError, match=r'mask .*big.npy: shape \(16, 16\) does not fit 4 images of 8x8'):
    make_mask(str(tmp_path / 'big.npy'), (4, 1, 8, 8))
  np.save(tmp_path / 'two.npy', np.ones((2, 8, 8), np.float32))  # 2 masks for 4 images
  with pytest.raises(UserError, match='does not fit'):
    make_mask(str(tmp_path / 'two.npy'), (4, 1, 8, 8))
  half = np.ones((8, 8), np.float32)
  half[0, 0] = np.nan
  np.save(tmp_path / 'nan.npy', half)
  with pytest.raises(UserError, match='values must be 0 .* and 1'):
    make_mask(str(tmp_path / 'nan.npy'), (4, 1, 8, 8))
  good = np.zeros((1, 1, 8, 8), np.uint8)
  good[..., :3] = 255
  np.save(tmp_path / 'good.npy', good)
  m = make_mask(str(tmp_path / 'good.npy'), (4, 1, 8, 8))
  assert m.shape == (4, 1, 8, 8) and m[..., :3].eq(1).all() and m[..., 3:].eq(0).all()


# --- images: range, dtype, unreadable files --------------------------------------------------

def test_image_values_are_converted_by_a_documented_rule(tmp_path):
  from score_sde.app.inverse_cli import load_images
  ints = np.random.default_rng(0).integers(0, 256, (2, 8, 8, 1))
  for dtype in (np.uint8, np.int64, np.int32):
    np.save(tmp_path / 'i.npy', ints.astype(dtype))
    x = load_images(str(tmp_path / 'i.npy'), 1, 8)
    np.testing.assert_allclose(x.numpy(), ints.transpose(0, 3, 1, 2) / 255.0, atol=1e-7)
  unit = np.random.default_rng(1).random((2, 1, 8, 8)).astype(np.float32)
  np.save(tmp_path / 'f.npy', unit)
  assert torch.equal(load_images(str(tmp_path / 'f.npy'), 1, 8), torch.from_numpy(unit))
  for bad, needle in ((ints.astype(np.float32), r'float images must be in \[0, 1\].*divide by 255'),
                      (unit * 2 - 1, r'float images must be in \[0, 1\].*\(x \+ 1\) / 2'),
                      (ints.astype(np.int64) * 2, 'integer images must be in 0..255'),
                      (np.full((1, 1, 8, 8), np.nan, np.float32), 'non-finite')):
    np.save(tmp_path / 'b.npy', bad)
    with pytest.raises(UserError, match=needle):
      load_images(str(tmp_path / 'b.npy'), 1, 8)


def test_unreadable_image_files_are_one_line_naming_the_file(tmp_path):
  from score_sde.app.inverse_cli import load_images
  (tmp_path / 'junk.png').write_bytes(b'this is not a png' * 10)
  with pytest.raises(UserError, match='cannot read images from .*junk.png'):
    load_images(str(tmp_path / 'junk.png'), 1, 8)
  np.savez(tmp_path / 'empty.npz')
  with pytest.raises(UserError, match='empty.npz: the .npz file holds no arrays'):
    load_images(str(tmp_path / 'empty.npz'), 1, 8)
  (tmp_path / 'junk.npy').write_bytes(b'\x93NUMPY garbage')
  with pytest.raises(UserError, match='junk.npy'):
    load_images(str(tmp_path / 'junk.npy'), 1, 8)
  np.save(tmp_path / 'none.npy', np.zeros((0, 1, 8, 8), np.float32))
  with pytest.raises(UserError, match='none.npy: expected images'):
    load_images(str(tmp_path / 'none.npy'), 1, 8)


# --- labels and config numbers ----------------------------------------------------------------

def _conditional_config():
  from configs.toy_gmm import get_config
  config = get_config()
  config.model.class_conditional = True
  return config


@pytest.mark.parametrize('offset', [0, 1, 5])
def test_a_label_outside_the_classes_is_a_config_error(offset):
  from score_sde.app.config_check import validate
  from score_sde.app.generate import class_labels_for
  config = _conditional_config()
  config.sampling.label = config.data.num_classes + offset  # num_classes: the "no label" index
  with pytest.raises(ConfigError, match='config.sampling.label'):
    validate(config)
  with pytest.raises(ConfigError, match=r'config.sampling.label = .*in \[0, '):
    class_labels_for(config, 4, 'cpu')
  config.sampling.label = config.data.num_classes - 1
  validate(config)
  assert class_labels_for(config, 4, 'cpu').tolist() == [config.data.num_classes - 1] * 4


@pytest.mark.parametrize('key,value', [
    ('optim.grad_clip', float('nan')), ('optim.grad_clip', float('inf')), ('optim.grad_clip', 0.0),
    ('seed', 12345678901234567890), ('sampling.seed', 12345678901234567890), ('seed', -1),
    ('sampling.label', -2), ('sampling.s_tmin', float('nan')), ('sampling.s_tmax', float('nan')),
    ('model.fourier_scale', float('nan')), ('model.init_scale', float('nan')),
])
def test_non_finite_and_out_of_range_numbers_are_refused(key, value):
  from configs.toy_gmm import get_config
  from score_sde.app.config_check import validate
  config = get_config()
  config.unlock()
  node, *path = [config] + key.split('.')
  for part in path[:-1]:
    node = node[part]
  node[path[-1]] = value
  with pytest.raises(ConfigError, match=f'config.{key} = '):
    validate(config)


def test_valid_special_values_still_pass():
  from configs.toy_gmm import get_config
  from score_sde.app.config_check import validate
  config = get_config()
  config.optim.grad_clip = -1.0  # clipping off
  config.seed = 2**63 - 1
  config.sampling.s_tmax = float('inf')
  validate(config)


def test_a_nan_sample_is_an_error_naming_the_weights():
  from configs.toy_gmm import get_config
  from score_sde.app.generate import generate
  from score_sde.app.build import create_model
  from score_sde.app.build import build_sde
  config = get_config()
  config.model.hidden, config.model.depth, config.sampling.steps = 16, 1, 3
  model = create_model(config, build_sde(config)).eval()
  x, _ = generate(config, model, 8, 'dpm_solver')
  assert torch.isfinite(x).all()
  with torch.no_grad():
    next(model.parameters()).fill_(float('nan'))
  with pytest.raises(UserError, match='score model has non-finite weights'):
    generate(config, model, 8, 'dpm_solver')


# --- the optimized-grid cache -------------------------------------------------------------------

def _grid_setup(tmp_path):
  from score_sde.sampling import optimized_grid as og
  tuning = og.GridTuning(key='toy', cache_dir=str(tmp_path / 'grids'), pilot_batch=8, max_knots=2,
                         iters=2, passes=1)
  key = og.cache_key('toy', SDE_, 'dpm_solver', {'order': 2}, 5, 1e-3, (2,), tuning)
  return og, tuning, key


def _tuned(og, tuning):
  og._MEMORY.clear()
  return og.optimized_grid(SDE_, gauss_score, 'dpm_solver', 5, 1e-3, (2,), options={'order': 2},
                           tuning=tuning)


@pytest.mark.parametrize('content', [
    '[]', '"grids"', 'not json', 'BAD3', 'BAD11', 'NAN', 'INCREASING', 'OUTSIDE', 'STRINGS'])
def test_a_bad_grid_cache_is_ignored_and_recomputed(tmp_path, caplog, content):
  og, tuning, key = _grid_setup(tmp_path)
  good = _tuned(og, tuning)
  assert len(good) == 6
  bad_entries = {'BAD3': [1.0, 0.5, 1e-3], 'BAD11': [1.0 - i * 0.099 for i in range(11)],
                 'NAN': [1.0, 0.8, float('nan'), 0.3, 0.1, 1e-3],
                 'INCREASING': [1.0, 0.8, 0.9, 0.3, 0.1, 1e-3],
                 'OUTSIDE': [1.5, 0.8, 0.5, 0.3, 0.1, 1e-3], 'STRINGS': ['1.0', 0.8, 0.5, 0.3, 0.1, 1e-3]}
  path = tmp_path / 'grids' / og.CACHE_FILE
  path.write_text(json.dumps({key: bad_entries[content]}) if content in bad_entries else content)
  with caplog.at_level(logging.WARNING):
    again = _tuned(og, tuning)
  assert again == good  # recomputed, not used as is
  assert any('grid cache' in r.getMessage() and '\n' not in r.getMessage() for r in caplog.records)
  assert json.loads(path.read_text())[key] == good  # and the file repaired


def test_the_cache_folder_is_checked_before_tuning(tmp_path, monkeypatch):
  from score_sde.sampling.grid_cache import GridCacheError
  og, tuning, _ = _grid_setup(tmp_path)
  (tmp_path / 'a_file').write_text('x')
  blocked = og.GridTuning(key='toy', cache_dir=str(tmp_path / 'a_file' / 'grids'), pilot_batch=8)

  def no_tuning(*args, **kwargs):
    raise AssertionError('tuned before checking the cache folder')
  monkeypatch.setattr(og, 'tune_grid', no_tuning)
  og._MEMORY.clear()
  with pytest.raises(GridCacheError, match='cannot write the grid cache in .*a_file/grids'):
    og.optimized_grid(SDE_, gauss_score, 'dpm_solver', 5, 1e-3, (2,), tuning=blocked)


MERGER = '''
import sys
from score_sde.sampling import grid_cache
folder, tag = sys.argv[1], sys.argv[2]
for i in range(150):
  grid_cache.merge(folder, f'{tag}-{i}', [1.0, 0.5, 0.001])
'''


def test_two_processes_writing_the_cache_keep_every_entry(tmp_path):
  from score_sde.sampling.grid_cache import CACHE_FILE
  env = dict(os.environ, PYTHONPATH=ROOT, OMP_NUM_THREADS='1')
  procs = [subprocess.Popen([sys.executable, '-c', MERGER, str(tmp_path), tag], env=env, cwd=ROOT,
                            stderr=subprocess.PIPE, text=True) for tag in ('a', 'b')]
  for p in procs:
    _, err = p.communicate(timeout=120)
    assert p.returncode == 0, err[-2000:]
  with open(tmp_path / CACHE_FILE) as f:
    table = json.load(f)
  assert len(table) == 300 and all(v == [1.0, 0.5, 0.001] for v in table.values())
  assert sorted(os.listdir(tmp_path)) == [CACHE_FILE, CACHE_FILE + '.lock']  # no temp files left


# --- classifier guidance: the classifier's SDE -------------------------------------------------

def _classifier_file(tmp_path, sde, meta=True):
  from configs.toy_gmm import get_config
  from score_sde.app.build import build_classifier
  from score_sde.training.classifier import classifier_metadata
  config = get_config()
  config.sampling.classifier_scale = 1.0
  net = build_classifier(config, True)
  state = {'model': net.state_dict(), 'step': 1}
  if meta:
    state['meta'] = classifier_metadata(sde)
  path = str(tmp_path / 'clf.pth')
  ckpt.save_checkpoint(path, state)
  config.sampling.classifier_checkpoint = path
  return config


def test_a_classifier_of_another_sde_is_refused(tmp_path):
  from score_sde.app.loading import load_guidance_classifier
  from score_sde.app.build import build_sde
  config = _classifier_file(tmp_path, VESDE())  # the toy config trains a VP model
  with pytest.raises(UserError, match=r'classifier trained with the SDE vesde\(.*but the model uses vpsde'):
    load_guidance_classifier(config, str(tmp_path), 'cpu')
  other = VPSDE(beta_min=0.5, beta_max=5.0)
  config = _classifier_file(tmp_path, other)
  with pytest.raises(UserError, match='classifier trained with the SDE vpsde'):
    load_guidance_classifier(config, str(tmp_path), 'cpu')
  config = _classifier_file(tmp_path, build_sde(config))
  assert load_guidance_classifier(config, str(tmp_path), 'cpu') is not None


def test_an_old_classifier_without_the_record_is_accepted_with_a_warning(tmp_path, caplog):
  from score_sde.app.loading import load_guidance_classifier
  config = _classifier_file(tmp_path, VESDE(), meta=False)
  with caplog.at_level(logging.WARNING):
    assert load_guidance_classifier(config, str(tmp_path), 'cpu') is not None
  assert any('does not record the SDE' in r.getMessage() for r in caplog.records)


def test_the_classifier_trainer_records_its_sde_and_time_label(tmp_path):
  from configs.toy_gmm import get_config
  from score_sde.app.build_train import build_trainer
  config = get_config()
  config.classifier.hidden, config.classifier.depth, config.data.toy_size = 16, 1, 256
  config.training.batch_size = 64
  config.runtime.device = 'cpu'
  trainer = build_trainer(config, str(tmp_path), 'classifier')
  try:
    meta = trainer.task.metadata(trainer.sde)
  finally:
    trainer.close()
  assert meta['sde']['name'] == config.training.sde and meta['time_label'] == 't999'
