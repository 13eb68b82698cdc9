"""diffusers folders both ways (`score_sde.interop.diffusers_io`), at small sizes.

Without diffusers: ours -> diffusers folder -> ours is bit-exact for DDPM (score_sde_pytorch's
layout and Ho et al.'s) and NCSN++ VE, the import never imports diffusers, `.bin` files with the
old attention names load, and what does not map is refused in one line. With diffusers
installed (the `interop` test extra), `UNet2DModel` outputs equal ours within 1e-5, for our
exports and for folders that diffusers itself wrote, at the google/ddpm-cifar10-32 and
google/ncsnpp-celebahq-256 architectures with reduced width and resolution.
"""
from __future__ import annotations

import json
import os
import sys

import pytest
import torch

from conftest import run_main
from score_sde.files.checkpoint import CheckpointError
from score_sde.configs.default import get_default_config
from score_sde.interop import export_diffusers, load_diffusers
from score_sde.interop.diffusers_map import UnsupportedModelError
from score_sde.app.build import create_model
from score_sde.app.build import build_sde

pytestmark = pytest.mark.usefixtures('one_thread')


def ddpm_config(every_up: bool, size: int = 16, ch_mult=(1, 2), nrb: int = 1):
  """A reduced google/ddpm-cifar10-32 (discrete VP, attention at size / 2)."""
  c = get_default_config()
  c.model.name, c.model.nf, c.model.ch_mult, c.model.num_res_blocks = 'ddpm', 32, ch_mult, nrb
  c.model.attn_resolutions, c.model.attn_every_up_block = (size // 2,), every_up
  c.data.image_size, c.data.num_channels, c.training.continuous = size, 3, False
  c.model.num_scales = 50
  return c


def ncsnpp_config(size: int = 16, ch_mult=(1, 4, 4), attn: int = 8):
  """A reduced google/ncsnpp-celebahq-256 (continuous VE, data in [0, 1])."""
  c = get_default_config()
  m = c.model
  m.name, m.nf, m.ch_mult, m.num_res_blocks, m.attn_resolutions = 'ncsnpp', 32, ch_mult, 1, (attn,)
  m.fir, m.progressive, m.progressive_input, m.embedding_type = True, 'output_skip', 'input_skip', 'fourier'
  m.scale_by_sigma, m.dropout, m.sigma_max, m.num_scales = True, 0., 348., 40
  c.data.image_size, c.data.num_channels, c.data.centered, c.training.sde = size, 3, False, 'vesde'
  return c


def random_model(config, seed: int = 0):
  torch.manual_seed(seed)
  model = create_model(config, build_sde(config)).eval()
  with torch.no_grad():
    for p in model.net.parameters():
      p.normal_(0, 0.05)
  return model


def inputs(config, fam: str):
  g = torch.Generator().manual_seed(1)
  s = config.data.image_size
  x = torch.rand(2, 3, s, s, generator=g)
  t = torch.tensor([3, config.model.num_scales - 1]) if fam == 'ddpm' else torch.tensor([0.05, 300.])
  return x, t


@pytest.fixture
def no_diffusers(monkeypatch):
  """Importing diffusers fails (as where it is not installed): the import path never needs it."""
  monkeypatch.setitem(sys.modules, 'diffusers', None)


CASES = {'ddpm_score_sde_pytorch_layout': lambda: ddpm_config(False),
         'ddpm_ho_layout': lambda: ddpm_config(True), 'ncsnpp_ve': ncsnpp_config}


@pytest.mark.parametrize('case', list(CASES))
def test_round_trip_is_bit_exact_without_diffusers(case, tmp_path, no_diffusers):
  config = CASES[case]()
  model = random_model(config)
  export_diffusers(model, str(tmp_path), config)
  back = load_diffusers(str(tmp_path))
  a, b = model.net.state_dict(), back.net.state_dict()
  assert list(a) == list(b) and all(torch.equal(a[k], b[k]) for k in a)
  assert back.config.model.attn_every_up_block == config.model.attn_every_up_block
  assert (back.parameterization, back.time_label) == (model.parameterization, model.time_label)
  assert back.sde.describe() == model.sde.describe()
  fam = 'ddpm' if case.startswith('ddpm') else 'ncsnpp'
  x, t = inputs(config, fam)
  with torch.no_grad():
    assert torch.equal(model.net(x, t), back.net(x, t))
  with open(tmp_path / 'model_index.json') as f:
    index = json.load(f)
  assert index['_class_name'] == ('DDPMPipeline' if fam == 'ddpm' else 'ScoreSdeVePipeline')


def test_score_sde_pytorch_layout_exports_identity_attentions(tmp_path):
  """diffusers has 2 attentions per up level here; the one ours lacks outputs exactly zero."""
  from score_sde.interop.safetensors_io import read_tensors
  config = ddpm_config(False)
  export_diffusers(random_model(config), str(tmp_path), config)
  tensors = read_tensors(str(tmp_path / 'unet' / 'diffusion_pytorch_model.safetensors'))[0]
  extra = 'up_blocks.0.attentions.0.to_out.0'
  assert not tensors[f'{extra}.weight'].any() and not tensors[f'{extra}.bias'].any()
  assert tensors['up_blocks.0.attentions.1.to_out.0.weight'].any()
  with open(tmp_path / 'unet' / 'config.json') as f:
    unet = json.load(f)
  assert unet['up_block_types'] == ['AttnUpBlock2D', 'UpBlock2D'] and unet['freq_shift'] == 1
  ho = random_model(ddpm_config(True))
  assert sum(p.numel() for p in ho.parameters()) - sum(
      p.numel() for p in random_model(config).parameters()) == 64 * 64 * 4 + 64 * 6  # one block


def test_bin_weights_with_old_attention_names_load(tmp_path, no_diffusers):
  config = ddpm_config(True)
  model = random_model(config)
  export_diffusers(model, str(tmp_path), config)
  from score_sde.interop.safetensors_io import read_tensors
  st = tmp_path / 'unet' / 'diffusion_pytorch_model.safetensors'
  tensors = read_tensors(str(st))[0]
  old = {k.replace('.to_q.', '.query.').replace('.to_k.', '.key.').replace('.to_v.', '.value.')
         .replace('.to_out.0.', '.proj_attn.'): v for k, v in tensors.items()}
  torch.save(old, tmp_path / 'unet' / 'diffusion_pytorch_model.bin')
  st.unlink()
  back = load_diffusers(str(tmp_path / 'unet'))  # the model folder, scheduler beside it
  assert all(torch.equal(v, back.net.state_dict()[k]) for k, v in model.net.state_dict().items())
  torch.save({'x': torch.nn.Linear(1, 1)}, tmp_path / 'unet' / 'diffusion_pytorch_model.bin')
  with pytest.raises(CheckpointError, match='cannot be read as weights only'):
    load_diffusers(str(tmp_path))


def _edit_json(path, **changes):
  with open(path) as f:
    value = json.load(f)
  value.update(changes)
  with open(path, 'w') as f:
    json.dump(value, f)


def test_what_does_not_map_is_refused_in_one_line(tmp_path):
  from score_sde.configs.vp_cifar import get_config
  with pytest.raises(UnsupportedModelError, match='not UNet2DModels'):
    export_diffusers(object(), str(tmp_path / 'x'), get_config())
  config = ddpm_config(False)
  export_diffusers(random_model(config), str(tmp_path), config)
  unet_json, sched_json = tmp_path / 'unet' / 'config.json', tmp_path / 'scheduler' / 'scheduler_config.json'
  for changes, pattern in [({'down_block_types': ['CrossAttnDownBlock2D', 'DownBlock2D']}, 'blocks'),
                           ({'_class_name': 'UNet2DConditionModel'}, 'UNet2DConditionModel'),
                           ({'attention_head_dim': 8}, 'attention_head_dim'),
                           ({'resnet_time_scale_shift': 'scale_shift'}, 'resnet_time_scale_shift')]:
    backup = unet_json.read_text()
    _edit_json(unet_json, **changes)
    with pytest.raises(UnsupportedModelError, match=pattern) as e:
      load_diffusers(str(tmp_path))
    assert '\n' not in str(e.value)
    unet_json.write_text(backup)
  _edit_json(sched_json, prediction_type='v_prediction')
  with pytest.raises(UnsupportedModelError, match='prediction_type'):
    load_diffusers(str(tmp_path))
  _edit_json(sched_json, _class_name='ScoreSdeVeScheduler')
  with pytest.raises(UnsupportedModelError, match='needs DDPMScheduler'):
    load_diffusers(str(tmp_path))
  sched_json.unlink()
  with pytest.raises(CheckpointError, match='no scheduler config'):
    load_diffusers(str(tmp_path))


def test_command_line_samples_from_a_diffusers_folder(tmp_path):
  config = ddpm_config(False, size=8, ch_mult=(1,))
  config.model.attn_resolutions = (4,)
  export_diffusers(random_model(config), str(tmp_path / 'pipe'), config)
  proc = run_main('--mode', 'sample', '--pretrained', str(tmp_path / 'pipe'), '--workdir',
                  str(tmp_path / 'run'), '--config.sampling.num_samples=2',
                  '--config.sampling.batch_size=2', timeout=240)
  assert proc.returncode == 0, proc.stderr[-2000:]
  assert os.path.isfile(tmp_path / 'run' / 'samples' / 'ddpm_pipe.npz')
  proc = run_main('--mode', 'train', '--pretrained', str(tmp_path / 'pipe'), '--workdir',
                  str(tmp_path / 'run'), timeout=120)
  assert proc.returncode == 2 and proc.stderr.strip().count('\n') == 0, proc.stderr[-2000:]
  assert '--pretrained is read by --mode sample' in proc.stderr


# ---------------------------------------------------------------- with diffusers installed
DIFFUSERS_CASES = {'ddpm-cifar10-32': lambda: ddpm_config(True, size=32, ch_mult=(1, 2, 2, 2), nrb=2),
                   'ncsnpp-celebahq-256': lambda: ncsnpp_config(64, (1, 1, 4, 4, 4, 4, 4), attn=16)}


@pytest.mark.parametrize('arch', list(DIFFUSERS_CASES))
def test_diffusers_loads_our_export_with_equal_outputs(arch, tmp_path):
  diffusers = pytest.importorskip('diffusers')
  config = DIFFUSERS_CASES[arch]()
  model = random_model(config)
  export_diffusers(model, str(tmp_path), config)
  pipe = diffusers.DiffusionPipeline.from_pretrained(str(tmp_path))
  assert type(pipe).__name__ == ('DDPMPipeline' if arch.startswith('ddpm') else 'ScoreSdeVePipeline')
  x, t = inputs(config, arch[:4] if arch.startswith('ddpm') else 'ncsnpp')
  with torch.no_grad():
    theirs, ours = pipe.unet.eval()(x, t).sample, model.net(x, t)
  assert (theirs - ours).abs().max() <= 1e-5 * max(1., ours.abs().max())


@pytest.mark.parametrize('arch', list(DIFFUSERS_CASES))
def test_folders_written_by_diffusers_import_with_equal_outputs(arch, tmp_path):
  diffusers = pytest.importorskip('diffusers')
  ours_config = DIFFUSERS_CASES[arch]()
  from score_sde.interop.diffusers_config import scheduler_config, unet_config
  cfg = {k: v for k, v in unet_config(ours_config).items() if not k.startswith('_')}
  torch.manual_seed(3)
  unet = diffusers.UNet2DModel(**cfg).eval()
  with torch.no_grad():
    for p in unet.parameters():
      p.normal_(0, 0.05)
  sched = {k: v for k, v in scheduler_config(ours_config).items() if not k.startswith('_')}
  if arch.startswith('ddpm'):
    pipe = diffusers.DDPMPipeline(unet=unet, scheduler=diffusers.DDPMScheduler(**sched))
  else:
    pipe = diffusers.ScoreSdeVePipeline(unet=unet, scheduler=diffusers.ScoreSdeVeScheduler(**sched))
  pipe.save_pretrained(str(tmp_path))
  model = load_diffusers(str(tmp_path))
  assert model.config.model.attn_every_up_block == arch.startswith('ddpm')  # Ho et al.'s layout
  x, t = inputs(ours_config, arch[:4] if arch.startswith('ddpm') else 'ncsnpp')
  with torch.no_grad():
    theirs, ours = unet(x, t).sample, model.net(x, t)
  assert (theirs - ours).abs().max() <= 1e-5 * max(1., ours.abs().max())
  want = ('eps', 'index') if arch.startswith('ddpm') else ('score', 'sigma')
  assert (model.parameterization, model.time_label) == want
  assert model.sde.describe() == build_sde(ours_config).describe()


def test_export_command_writes_a_folder_and_a_safetensors_file(tmp_path, capsys):
  from score_sde.files.checkpoint import save_checkpoint
  from score_sde.interop.__main__ import main
  cfg = tmp_path / 'small_ddpm.py'
  cfg.write_text('from score_sde.configs.default import get_default_config\n\n\ndef get_config():\n'
                 '  c = get_default_config()\n  c.model.name, c.model.nf, c.model.ch_mult = "ddpm", 32, (1, 2)\n'
                 '  c.model.num_res_blocks, c.model.attn_resolutions, c.model.num_scales = 1, (8,), 50\n'
                 '  c.data.image_size, c.data.num_channels, c.training.continuous = 16, 3, False\n'
                 '  return c\n')
  model = random_model(ddpm_config(False))
  save_checkpoint(str(tmp_path / 'checkpoint_1.pth'), {'model': model.net.state_dict(), 'step': 1})
  common = ['--config', str(cfg), '--checkpoint', str(tmp_path / 'checkpoint_1.pth')]
  assert main(['export-diffusers', *common, '--out', str(tmp_path / 'pipe')]) == 0
  assert main(['export-safetensors', *common, '--out', str(tmp_path / 'm.safetensors')]) == 0
  from score_sde.interop import load_safetensors
  for back in (load_diffusers(str(tmp_path / 'pipe')), load_safetensors(str(tmp_path / 'm.safetensors'))):
    assert all(torch.equal(v, back.net.state_dict()[k]) for k, v in model.net.state_dict().items())
  assert main(['export-diffusers', '--config', 'vp_cifar', '--checkpoint', str(tmp_path / 'none.pth'),
               '--out', str(tmp_path / 'x')]) == 2
  assert 'error: diffusers: NCSN++' in capsys.readouterr().err
