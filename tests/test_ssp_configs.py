"""score_sde_pytorch's config files as they are (`score_sde.interop.ssp_config`), and our packaged
counterparts of all 22 reference network configs.

`data/ssp_configs/` holds one file per reference config in score_sde_pytorch's own format
(importing `configs.default_<dataset>_configs`, or building the whole ConfigDict as its
1024-px configs do), written from the reference settings. Each must translate to those settings
and to the reference network layout (`data/ssp_reference_layouts.json.gz`: state_dict names,
shapes and parameter order), and so must our packaged counterpart named in COUNTERPARTS.
"""
from __future__ import annotations

import gzip
import json
import os

import pytest
import torch

from conftest import run_main
from score_sde.app.config_check import validate
from score_sde.errors import ConfigError
from score_sde.interop import ssp_config
from score_sde.interop.ssp_config import COUNTERPARTS, is_ssp_config, translate, translate_file
from score_sde.app.build import create_network

HERE = os.path.dirname(os.path.abspath(__file__))
FIXTURES = os.path.join(HERE, 'data', 'ssp_configs')
with gzip.open(os.path.join(HERE, 'data', 'ssp_reference_layouts.json.gz'), 'rt') as _f:
  LAYOUTS = json.load(_f)
IGNORED = {('data', 'category'), ('model', 'sigma_begin')}  # not network settings of ours


def assert_reference_settings(config, ref: dict) -> None:
  """`config` holds every model / data / training setting of reference `ref`."""
  for section, key in (('model', 'model_config'), ('data', 'data_config'),
                       ('training', 'training_config')):
    for k, v in ref[key].items():
      if (section, k) in IGNORED:
        continue
      ours = config[section][k]
      want = v.lower() if k == 'dataset' else v
      assert (list(ours) if isinstance(ours, tuple) else ours) == want, (section, k, ours, v)


def assert_reference_layout(config, ref: dict) -> None:
  with torch.device('meta'):  # shapes only
    net = create_network(config)
  assert [[k, list(v.shape)] for k, v in net.state_dict().items()] == ref['state_dict']
  assert [k for k, _ in net.named_parameters()] == ref['parameter_order']


def test_every_reference_config_has_a_fixture_and_a_counterpart():
  assert sorted(COUNTERPARTS) == sorted(LAYOUTS)
  from score_sde.app.cli import packaged_configs
  assert set(COUNTERPARTS.values()) <= set(packaged_configs())
  for name in LAYOUTS:
    assert os.path.isfile(os.path.join(FIXTURES, name)), name


@pytest.mark.parametrize('name', sorted(LAYOUTS))
def test_config_file_and_our_counterpart_resolve_to_the_reference(name):
  """Their file, translated, and our packaged counterpart both hold the reference settings and
  build the reference layout (their network sections are identical, so one build checks both)."""
  import importlib
  path = os.path.join(FIXTURES, name)
  assert is_ssp_config(path)
  translated = translate_file(path, quiet=True)
  module = importlib.import_module(f'score_sde.configs.{COUNTERPARTS[name]}')
  assert not is_ssp_config(module.__file__)
  ours = module.get_config()
  for config in (translated, ours):
    assert_reference_settings(config, LAYOUTS[name])
    validate(config)
  assert translated.model.to_dict() == ours.model.to_dict()
  assert translated.data.to_dict() == ours.data.to_dict()
  assert_reference_layout(ours, LAYOUTS[name])


def test_translation_maps_renamed_keys_and_lists_the_ignored_ones(tmp_path):
  base = ssp_config.ssp_defaults('cifar10')
  base.sampling.predictor = 'ancestral_sampling'
  base.training.sde = 'vesde'
  base.model.fir_kernel = [1, 3, 3, 1]
  base.data.tfrecords_path = '/x.tfrecords'
  config, ignored = translate(base)
  assert config.sampling.predictor == 'ancestral'
  assert config.data.dataset == 'cifar10' and config.model.sigma_max == 50.0
  assert config.model.fir_kernel == (1, 3, 3, 1)
  assert (config.eval.begin_ckpt, config.eval.end_ckpt) == (9 * 50000, 26 * 50000)  # checkpoint_k
  assert config.sampling.eps == 1e-5  # score_sde_pytorch samples VE down to 1e-5
  assert ignored == ['data.tfrecords_path', 'device', 'eval.enable_loss', 'training.eval_freq']


def test_their_own_config_modules_beside_the_file_are_found(tmp_path):
  """`from configs.ve import x` in their file reads x from the configs/ folder it sits in."""
  folder = tmp_path / 'configs' / 've'
  folder.mkdir(parents=True)
  (folder / 'base.py').write_text(
      'from configs.default_lsun_configs import get_default_configs\n'
      'def get_config():\n  c = get_default_configs()\n  c.model.nf = 32\n  return c\n')
  mine = folder / 'mine.py'
  mine.write_text('from configs.ve import base\n\ndef get_config():\n'
                  '  c = base.get_config()\n  c.data.category = "bedroom"\n  return c\n')
  config = translate_file(str(mine), quiet=True)
  assert (config.model.nf, config.data.image_size, config.model.sigma_max) == (32, 256, 378.0)
  import configs.default  # our own top-level configs package is untouched afterwards
  assert configs.default.get_default_config().model.nf == 128


def test_a_broken_score_sde_pytorch_config_is_one_line(tmp_path):
  bad = tmp_path / 'bad.py'
  bad.write_text('from configs.default_cifar10_configs import get_default_configs\n'
                 'def get_config():\n  c = get_default_configs()\n  c.model.nf = "wide"\n'
                 '  return c\n')
  with pytest.raises(ConfigError, match=r'model.nf = .wide. cannot be used'):
    translate_file(str(bad), quiet=True)
  missing = tmp_path / 'missing.py'
  missing.write_text('from configs.default_imagenet_configs import get_default_configs\n')
  with pytest.raises(ConfigError, match='failed to load: ModuleNotFoundError'):
    translate_file(str(missing), quiet=True)


def test_command_line_reads_a_score_sde_pytorch_config_file():
  """Detected by content; its unused keys are listed in one line; --config.* overrides apply."""
  path = os.path.join(FIXTURES, 've', 'cifar10_ddpm.py')
  proc = run_main('--mode', 'config', '--config', path, '--config.model.nf=64', timeout=120)
  assert proc.returncode == 0, proc.stderr[-2000:]
  notes = [l for l in proc.stderr.splitlines() if 'ignored' in l]
  assert len(notes) == 1 and 'training.eval_freq' in notes[0] and 'device' in notes[0], proc.stderr
  text = proc.stdout
  assert "model.name = 'ddpm'" in text.replace('"', "'") and 'model.nf = 64' in text
  assert "training.sde = 'vesde'" in text.replace('"', "'")


def test_command_line_config_format_flag_forces_the_translation(tmp_path):
  odd = tmp_path / 'odd.py'  # not detectable: no import of theirs, no `config.model =`
  odd.write_text('import ml_collections\n\ndef get_config():\n  c = ml_collections.ConfigDict()\n'
                 '  c.data = ml_collections.ConfigDict({"dataset": "CIFAR10", "image_size": 32})\n'
                 '  return c\n')
  assert not is_ssp_config(str(odd))
  proc = run_main('--mode', 'config', '--config', str(odd), '--config_format', 'ssp', timeout=120)
  assert proc.returncode == 0, proc.stderr[-2000:]
  assert 'data.image_size = 32' in proc.stdout and "data.dataset = 'cifar10'" in proc.stdout.replace('"', "'")
