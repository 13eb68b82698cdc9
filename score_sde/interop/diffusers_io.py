"""diffusers folders both ways, without diffusers.

`load_diffusers(folder)`: a pipeline folder (`model_index.json`, `unet/`, `scheduler/`) or a
UNet2DModel folder (`config.json` and `diffusion_pytorch_model.safetensors` or `.bin`, the
scheduler config beside it or in `scheduler/`) -> a `ScoreModel` with the right network, SDE,
N, parameterization and time label (`.config` holds our config for it). `.bin` files are read
with `torch.load(weights_only=True)`; the older attention names (query / key / value /
proj_attn) are accepted.

`export_diffusers(model_or_file, folder, config)`: our DDPM (discrete VP) or NCSN++ VE 256-px
family model -> a `DDPMPipeline` / `ScoreSdeVePipeline` folder in `save_pretrained`'s layout,
weights as safetensors, which diffusers' `from_pretrained` loads.
"""
from __future__ import annotations

import json
import os

import torch

from score_sde.files.checkpoint import CheckpointError, save_json
from score_sde.errors import UserError, one_line
from score_sde.interop import diffusers_config as dcfg
from score_sde.interop import diffusers_map as dmap
from score_sde.interop.diffusers_map import UnsupportedModelError

WEIGHTS = ('diffusion_pytorch_model.safetensors', 'diffusion_pytorch_model.bin')


def _read_json(path: str) -> dict:
  try:
    with open(path, encoding='utf-8') as f:
      value = json.load(f)
  except OSError as e:
    raise CheckpointError(f'cannot read {path}: {e.strerror or e}') from None
  except ValueError as e:
    raise CheckpointError(f'{path} is not valid JSON ({one_line(e)})') from None
  if not isinstance(value, dict):
    raise CheckpointError(f'{path} is not a JSON object')
  return value


def find_parts(path: str) -> tuple[str, str]:
  """(the UNet folder, the scheduler_config.json) of a diffusers pipeline or model folder."""
  path = os.path.normpath(path)
  if os.path.isfile(os.path.join(path, 'model_index.json')):
    index = _read_json(os.path.join(path, 'model_index.json'))
    unet = index.get('unet')
    if isinstance(unet, list) and len(unet) == 2 and unet[1] != 'UNet2DModel':
      raise UnsupportedModelError(f'diffusers pipeline {path}: unet {unet[1]} is not supported '
                                  '(only UNet2DModel: DDPM and NCSN++ VE)')
    candidates = [os.path.join(path, 'scheduler', 'scheduler_config.json')]
    unet_dir = os.path.join(path, 'unet')
  elif os.path.isfile(os.path.join(path, 'config.json')):
    unet_dir = path
    candidates = [os.path.join(path, 'scheduler_config.json'),
                  os.path.join(path, 'scheduler', 'scheduler_config.json'),
                  os.path.join(os.path.dirname(path), 'scheduler', 'scheduler_config.json')]
  else:
    raise CheckpointError(f'{path} is not a diffusers folder (no model_index.json or config.json)')
  scheduler = next((c for c in candidates if os.path.isfile(c)), None)
  if scheduler is None:
    raise CheckpointError(f'diffusers model {path} has no scheduler config ({candidates[0]}); pass '
                          'the pipeline folder (model_index.json, unet/, scheduler/)')
  return unet_dir, scheduler


def read_weights(unet_dir: str) -> dict:
  """The UNet's tensors by (current diffusers) name."""
  st, pt = (os.path.join(unet_dir, w) for w in WEIGHTS)
  if os.path.isfile(st):
    from score_sde.interop.safetensors_io import read_tensors
    state = read_tensors(st)[0]
  elif os.path.isfile(pt):
    try:
      state = torch.load(pt, map_location='cpu', weights_only=True)
    except Exception as e:  # a pickle with code in it, or a damaged file
      raise CheckpointError(f'{pt} cannot be read as weights only ({one_line(e)})') from None
    if not isinstance(state, dict):
      raise CheckpointError(f'{pt} holds a {type(state).__name__}, not a state dict')
  elif any(f.endswith('.index.json') for f in os.listdir(unet_dir)):
    raise UnsupportedModelError(f'{unet_dir}: sharded weights are not supported (one file only)')
  else:
    raise CheckpointError(f'{unet_dir} has no {WEIGHTS[0]} or {WEIGHTS[1]}')
  return {_current_name(k): v for k, v in state.items()}


def _current_name(key: str) -> str:
  parts = key.split('.')
  if len(parts) >= 2 and parts[-2] in dmap.LEGACY_ATTN:
    return '.'.join(parts[:-2] + [dmap.LEGACY_ATTN[parts[-2]], parts[-1]])
  return 'time_proj.weight' if key == 'time_proj.W' else key


def diffusers_config(path: str, base=None):
  """(our config for diffusers folder `path` on top of `base` (default: configs/default.py),
  family, unet folder, tensors)."""
  from score_sde.configs.default import get_default_config
  import copy
  unet_dir, scheduler = find_parts(path)
  config = copy.deepcopy(base) if base is not None else get_default_config()
  fam = dcfg.apply_unet_config(config, _read_json(os.path.join(unet_dir, 'config.json')), unet_dir)
  dcfg.apply_scheduler_config(config, _read_json(scheduler), fam, scheduler)
  dmap.family(config)  # what the configs alone cannot show (e.g. NCSN++ attention widths)
  state = read_weights(unet_dir)
  if fam == 'ddpm':  # score_sde_pytorch's layout when the extra attentions are identities
    config.model.attn_every_up_block = not all(
        f'{p}.to_out.0.weight' in state and not state[f'{p}.to_out.0.weight'].any()
        and not state[f'{p}.to_out.0.bias'].any() for p, _ in dmap.identity_attentions(config))
  return config, fam, unet_dir, state


def load_diffusers(path: str, device='cpu', config=None):
  """The `ScoreModel` of diffusers folder `path` (see the module docstring), in eval mode;
  `config`: ours to start from (its sampler settings are kept unless the scheduler sets them)."""
  from score_sde.app.build import create_model
  from score_sde.app.build import build_sde
  config, fam, unet_dir, state = diffusers_config(path, config)
  model = create_model(config, build_sde(config))
  pairs = dmap.module_pairs(config, fam, config.model.attn_every_up_block)
  assert len(pairs) == len(model.net.all_modules), 'diffusers map out of step with the network'
  ours = model.net.state_dict()
  kmap = dmap.key_map(ours, pairs)
  expected = {k for k, _ in kmap.values()}
  if fam == 'ddpm' and not config.model.attn_every_up_block:
    expected |= {k for p, _ in dmap.identity_attentions(config) for k in state if k.startswith(p + '.')}
  missing = sorted(k for k in expected if k not in state)
  extra = sorted(k for k in state if k not in expected)
  if missing or extra:
    raise CheckpointError(f'{unet_dir}: weights do not match its config.json (missing: '
                          f'{missing[:3]}, unexpected: {extra[:3]})')
  new = {'sigmas': ours['sigmas']}
  for key, (theirs, transform) in kmap.items():
    tensor = dmap.to_ours(state[theirs], transform)
    if tensor.shape != ours[key].shape:
      raise CheckpointError(f'{unet_dir}: {theirs} has shape {tuple(state[theirs].shape)}, the '
                            f'config needs {tuple(ours[key].shape)}')
    new[key] = tensor.to(ours[key].dtype)
  model.net.load_state_dict(new, strict=True)
  model.config = config
  return model.to(device).eval()


def _check_conventions(model, fam: str) -> None:
  want = {'ddpm': (('eps', 'x0'), 'index'), 'ncsnpp': (('score',), 'sigma')}[fam]
  if model.parameterization not in want[0] or model.time_label != want[1] or model.learn_sigma:
    raise UnsupportedModelError(
        f'diffusers: a {fam} model with parameterization {model.parameterization} and time label '
        f'{model.time_label} has no diffusers scheduler counterpart (needs {"/".join(want[0])}, {want[1]})')


def _source_model(source, config, use_ema: bool):
  """(ScoreModel, config) of a ScoreModel, one of our .safetensors files or a checkpoint."""
  if not isinstance(source, (str, os.PathLike)):
    if config is None:
      raise UserError('export_diffusers(model, folder, config): the model needs its config')
    return source, config
  source = os.fspath(source)
  if source.endswith('.safetensors'):
    from score_sde.interop.safetensors_io import load_safetensors
    model = load_safetensors(source, config)
    return model, model.config
  if config is None:
    raise UserError(f'exporting checkpoint {source} needs its config (--config)')
  from score_sde.app.loading import load_checkpoint
  return load_checkpoint(source, config, use_ema=use_ema), config


def export_diffusers(source, folder: str, config=None, use_ema: bool = True) -> str:
  """Write our model (a ScoreModel with its `config`, one of our .safetensors files, or a
  checkpoint file with its `config`) as a diffusers pipeline folder; returns the folder."""
  if config is not None:
    dmap.family(config)  # refuse before building and loading anything
  model, config = _source_model(source, config, use_ema)
  fam = dmap.family(config)
  _check_conventions(model, fam)
  unet, scheduler = dcfg.unet_config(config), dcfg.scheduler_config(config)
  every_up = bool(config.model.get('attn_every_up_block', False))
  pairs = dmap.module_pairs(config, fam, every_up)
  ours = model.net.state_dict()
  tensors = {theirs: dmap.to_theirs(ours[k], tr) for k, (theirs, tr) in dmap.key_map(ours, pairs).items()}
  if fam == 'ddpm' and not every_up:
    for prefix, ch in dmap.identity_attentions(config):  # zero output: x + 0 = x
      tensors[f'{prefix}.group_norm.weight'] = torch.ones(ch)
      tensors[f'{prefix}.group_norm.bias'] = torch.zeros(ch)
      for name in ('to_q', 'to_k', 'to_v', 'to_out.0'):
        tensors[f'{prefix}.{name}.weight'] = torch.zeros(ch, ch)
        tensors[f'{prefix}.{name}.bias'] = torch.zeros(ch)
  from score_sde.interop.safetensors_io import write_tensors
  pipeline, scheduler_class = dcfg.PIPELINES[fam]
  for sub in ('unet', 'scheduler'):
    os.makedirs(os.path.join(folder, sub), exist_ok=True)
  write_tensors(os.path.join(folder, 'unet', WEIGHTS[0]), tensors)
  save_json(os.path.join(folder, 'unet', 'config.json'), unet)
  save_json(os.path.join(folder, 'scheduler', 'scheduler_config.json'), scheduler)
  save_json(os.path.join(folder, 'model_index.json'), {
      '_class_name': pipeline, '_diffusers_version': dcfg.VERSION,
      'scheduler': ['diffusers', scheduler_class], 'unet': ['diffusers', 'UNet2DModel']})
  return folder

