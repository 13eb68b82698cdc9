"""safetensors: a weights-only file format (no pickle, no code), for our own models and for
diffusers folders.

`save_safetensors(model, path, config)` writes the network's state_dict (buffers included) with,
in the file's metadata, the resolved config (JSON), the conventions (parameterization, time
label, learned variance), the SDE and the network name; `load_safetensors(path)` rebuilds the
`ScoreModel` from that alone (or checks it against a `config` given). Needs the `safetensors`
package (`pip install safetensors`, or the `interop` extra); without it, a one-line error says so.
"""
from __future__ import annotations

import json

from score_sde.files.checkpoint import CheckpointError
from score_sde.errors import UserError, one_line

FORMAT = 'score_sde/safetensors/1'


def _lib():
  try:
    import safetensors.torch
  except ImportError:
    raise UserError('.safetensors files need the safetensors package: pip install safetensors '
                    '(or pip install score_sde[interop])') from None
  return safetensors


def read_tensors(path: str) -> tuple[dict, dict]:
  """(tensors by name on the CPU, the file's string metadata) of safetensors file `path`."""
  lib = _lib()
  try:
    with lib.safe_open(path, framework='pt') as f:
      return {k: f.get_tensor(k) for k in f.keys()}, dict(f.metadata() or {})
  except FileNotFoundError:
    raise CheckpointError(f'{path}: no such file') from None
  except Exception as e:  # SafetensorError / OSError: a damaged or foreign file
    raise CheckpointError(f'{path} is not a readable safetensors file ({one_line(e)})') from None


def write_tensors(path: str, tensors: dict, metadata: dict | None = None) -> None:
  """Atomically write `tensors` (CPU, contiguous) with string `metadata` to `path`."""
  from score_sde.files.checkpoint import _atomic_write
  data = _lib().torch.save({k: v.detach().cpu().contiguous() for k, v in tensors.items()},
                           metadata={'format': 'pt', **(metadata or {})})
  _atomic_write(path, data)


def save_safetensors(model, path: str, config) -> None:
  """Write `model` (a ScoreModel: its network's weights, e.g. the EMA ones) to `path`, with the
  resolved `config` and the model's conventions in the metadata."""
  from score_sde.models import checkpoint_metadata
  meta = checkpoint_metadata(config.model.name, model)
  write_tensors(path, model.net.state_dict(), {
      'score_sde_format': FORMAT, 'config': config.to_json(), 'meta': json.dumps(meta)})


def read_meta(path: str) -> tuple[dict, dict]:
  """(tensors, {'config': text, 'meta': dict}) of one of our safetensors files."""
  tensors, metadata = read_tensors(path)
  if metadata.get('score_sde_format') != FORMAT:
    raise CheckpointError(f'{path} is not a score_sde safetensors file (no {FORMAT} metadata); a '
                          'diffusers model loads from its folder (score_sde.interop.load_diffusers)')
  try:
    meta = json.loads(metadata.get('meta', '{}'))
  except ValueError:
    raise CheckpointError(f'{path} has bad metadata (meta is not JSON)') from None
  return tensors, {'config': metadata.get('config', '{}'), 'meta': meta}


def load_safetensors(path: str, config=None, device='cpu'):
  """The `ScoreModel` of our safetensors file `path`, in eval mode, with `.config` set: the
  config stored in the file, or `config` (which must agree with the file's SDE, network and
  conventions)."""
  from score_sde.app.build import build_sde, create_model
  from score_sde.app.run_record import config_from_json
  from score_sde.files.checkpoint import load_weights
  from score_sde.models import check_metadata
  tensors, info = read_meta(path)
  if config is None:
    config = config_from_json(info['config'], path)
  model = create_model(config, build_sde(config))
  check_metadata(info['meta'], config.model.name, model, path)
  load_weights(model.net, tensors, where=path)
  model.config = config
  return model.to(device).eval()
