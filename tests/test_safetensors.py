"""safetensors for our own models (`score_sde.interop.safetensors_io`): weights only, with the
resolved config and the conventions in the metadata, so the file alone rebuilds the model."""
from __future__ import annotations

import json
import os
import sys

import pytest
import torch

from conftest import run_main
from score_sde.files.checkpoint import CheckpointError
from score_sde.configs.digits import get_config
from score_sde.errors import UserError
from score_sde.interop import load_safetensors, save_safetensors
from score_sde.app.build import create_model
from score_sde.app.build import build_sde

pytestmark = pytest.mark.usefixtures('one_thread')
safetensors = pytest.importorskip('safetensors')


def tiny_config():
  config = get_config()
  config.model.nf, config.model.ch_mult, config.model.num_res_blocks = 16, (1, 2), 1
  config.model.parameterization, config.model.num_scales = 'x0', 20
  config.training.sde, config.data.image_size = 'subvpsde', 8
  return config


def model_for(config, seed=0):
  torch.manual_seed(seed)
  model = create_model(config, build_sde(config)).eval()
  with torch.no_grad():
    for p in model.parameters():
      p.normal_(0, 0.1)
  return model


def test_round_trip_restores_weights_config_and_conventions(tmp_path):
  config = tiny_config()
  model = model_for(config)
  path = str(tmp_path / 'model.safetensors')
  save_safetensors(model, path, config)
  back = load_safetensors(path)  # no config given: the file's
  a, b = model.net.state_dict(), back.net.state_dict()
  assert list(a) == list(b) and all(torch.equal(a[k], b[k]) for k in a)
  assert back.config.to_dict() == config.to_dict()
  assert (back.parameterization, back.time_label) == ('x0', model.time_label)
  assert back.sde.describe() == model.sde.describe()
  x, t = torch.randn(2, 1, 8, 8), torch.tensor([0.3, 0.9])
  with torch.no_grad():
    assert torch.equal(model(x, t), back(x, t))
  with safetensors.safe_open(path, framework='pt') as f:  # plain safetensors: any reader works
    meta = f.metadata()
  assert json.loads(meta['meta'])['network'] == 'unet' and 'config' in meta


def test_a_config_that_disagrees_with_the_file_is_refused(tmp_path):
  config = tiny_config()
  path = str(tmp_path / 'model.safetensors')
  save_safetensors(model_for(config), path, config)
  other = tiny_config()
  other.training.sde = 'vpsde'
  with pytest.raises(CheckpointError, match='holds a model with sde'):
    load_safetensors(path, other)


def test_foreign_and_damaged_files_are_one_line(tmp_path):
  from safetensors.torch import save_file
  foreign = str(tmp_path / 'foreign.safetensors')
  save_file({'w': torch.zeros(2)}, foreign)
  with pytest.raises(CheckpointError, match='not a score_sde safetensors file'):
    load_safetensors(foreign)
  damaged = tmp_path / 'damaged.safetensors'
  damaged.write_bytes(b'\x10\x00\x00\x00\x00\x00\x00\x00{"w": nonsense}')
  with pytest.raises(CheckpointError, match='not a readable safetensors file'):
    load_safetensors(str(damaged))


def test_without_the_package_safetensors_is_one_line_and_bin_still_loads(tmp_path, monkeypatch):
  from score_sde.interop import export_diffusers, load_diffusers
  from test_diffusers_interop import ddpm_config, random_model
  config = ddpm_config(False)
  model = random_model(config)
  export_diffusers(model, str(tmp_path), config)
  from score_sde.interop.safetensors_io import read_tensors
  st = tmp_path / 'unet' / 'diffusion_pytorch_model.safetensors'
  torch.save(read_tensors(str(st))[0], tmp_path / 'unet' / 'diffusion_pytorch_model.bin')
  monkeypatch.setitem(sys.modules, 'safetensors', None)
  monkeypatch.setitem(sys.modules, 'safetensors.torch', None)
  with pytest.raises(UserError, match='pip install safetensors') as e:
    load_diffusers(str(tmp_path))
  assert '\n' not in str(e.value)
  st.unlink()
  back = load_diffusers(str(tmp_path))
  assert all(torch.equal(v, back.net.state_dict()[k]) for k, v in model.net.state_dict().items())


def test_command_line_samples_from_a_safetensors_file(tmp_path):
  config = tiny_config()
  path = str(tmp_path / 'tiny.safetensors')
  save_safetensors(model_for(config), path, config)
  proc = run_main('--mode', 'sample', '--pretrained', path, '--workdir', str(tmp_path / 'run'),
                  '--config.sampling.num_samples=2', '--config.sampling.batch_size=2',
                  '--config.sampling.method=dpm_solver', '--config.sampling.steps=3', timeout=240)
  assert proc.returncode == 0, proc.stderr[-2000:]
  assert os.path.isfile(tmp_path / 'run' / 'samples' / 'dpm_solver_tiny.png')
