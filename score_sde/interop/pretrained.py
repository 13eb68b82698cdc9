"""`--mode sample --pretrained PATH`: sample from weights made elsewhere.

PATH is a diffusers folder (pipeline or UNet2DModel, see diffusers_io), one of our .safetensors
files (see safetensors_io) or a checkpoint file (ours or score_sde_pytorch's; its network comes
from --config, as with --checkpoint). For the first two, the file fixes the network, the SDE and
the data shape, which replace --config's; the sampler settings come from the file too when no
--config is given (this module is then the config file: `get_config` gives the file's config).
"""
from __future__ import annotations

import os

from score_sde.errors import UserError

MODES = ('sample', 'config')
_DATA_KEYS = ('image_size', 'num_channels', 'centered', 'num_classes')


def get_config(path: str = ''):
  """The config file behind `--pretrained PATH` without `--config`: the file's own config (a
  diffusers folder's translated, our .safetensors' stored one), else configs/default.py. The
  `--config.KEY=VALUE` overrides then apply on top as usual."""
  from score_sde.configs.default import get_default_config
  if path and is_pretrained(path):
    return file_config(path, None)
  return get_default_config()


def _flag_value(argv: list[str], flag: str) -> str | None:
  for i, arg in enumerate(argv):
    if arg.startswith(flag + '='):
      return arg.split('=', 1)[1]
    if arg == flag and i + 1 < len(argv):
      return argv[i + 1]
  return None


def with_default_config(argv: list[str]) -> list[str]:
  """`argv` with `--config=<this file>:PATH` added when it has `--pretrained PATH` but no
  --config (first, so that the --config.* overrides apply to it)."""
  path = _flag_value(argv, '--pretrained')
  if path and _flag_value(argv, '--config') is None:
    entry = f'{os.path.abspath(__file__)}:{os.path.abspath(path) if os.path.exists(path) else ""}'
    return [*argv[:1], f'--config={entry}', *argv[1:]]
  return argv


def kind(path: str) -> str:
  """'diffusers' (a folder), 'safetensors' or 'checkpoint'."""
  if os.path.isdir(path):
    return 'diffusers'
  return 'safetensors' if path.endswith('.safetensors') else 'checkpoint'


def is_pretrained(path: str) -> bool:
  """Whether `path` is loaded by this module (not by the checkpoint loader)."""
  return kind(path) in ('diffusers', 'safetensors')


def file_config(path: str, base):
  """Our config for pretrained `path` (diffusers folder or our .safetensors), on top of `base`."""
  if kind(path) == 'diffusers':
    from score_sde.interop.diffusers_io import diffusers_config
    return diffusers_config(path, base)[0]
  from score_sde.app.run_record import config_from_json
  from score_sde.interop.safetensors_io import read_meta
  return config_from_json(read_meta(path)[1]['config'], path)


def configure(config, path: str) -> None:
  """Update the user's `config` in place from pretrained `path`: its network, SDE and data
  shape (the sampler settings stay the user's)."""
  if not is_pretrained(path):
    return
  found = file_config(path, config)
  for key in found.model:
    config.model[key] = found.model[key]
  for key in _DATA_KEYS:
    config.data[key] = found.data[key]
  config.training.sde, config.training.continuous = found.training.sde, found.training.continuous


def configure_flags(flags_obj, mode: str) -> None:
  """The command line's `--pretrained`: checked, applied to FLAGS.config, and passed on as the
  checkpoint that `--mode sample` loads."""
  path = os.path.normpath(flags_obj.pretrained)
  if mode not in MODES:
    raise UserError(f'--pretrained is read by --mode {" / ".join(MODES)}, not {mode} (use --checkpoint)')
  if flags_obj.checkpoint:
    raise UserError('give either --pretrained or --checkpoint, not both')
  if not os.path.exists(path):
    raise UserError(f'--pretrained {path}: no such file or folder')
  own = os.path.abspath(flags_obj['config'].config_filename.split(':')[0]) != os.path.abspath(__file__)
  if own:  # without --config, the config already is the file's (get_config)
    try:
      configure(flags_obj.config, path)
    except (KeyError, TypeError) as e:
      raise UserError(f'--pretrained {path}: its settings do not fit the config ({e})') from None
  flags_obj.checkpoint = path


def load(path: str, config, device='cpu'):
  """The ScoreModel of pretrained `path` for `config` (as configured by `configure`)."""
  if kind(path) == 'diffusers':
    from score_sde.interop.diffusers_io import load_diffusers
    return load_diffusers(path, device=device, config=config)
  from score_sde.interop.safetensors_io import load_safetensors
  return load_safetensors(path, config=config, device=device)
