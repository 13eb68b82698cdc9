"""Score networks and the `ScoreModel` wrapper.

`NETWORKS` maps `config.model.name` to a `NetworkSpec`: a builder `config -> nn.Module` (every
network is called as `net(x, time_label, y=None)`), the parameterization and time label it uses
unless the config says otherwise ('sde': score_sde_pytorch's choice for the SDE), and whether it
takes flat vectors `[B, C]` instead of images `[B, C, H, W]`. `create_model(config, sde)` returns
the wrapped `ScoreModel`, whose `forward(x, t, y=None)` is the score.
"""
from __future__ import annotations

import dataclasses
from typing import Callable

from score_sde.files import checkpoint as _ckpt
from score_sde.models.ema import ExponentialMovingAverage
from score_sde.models.mlp import MLP
from score_sde.models.networks import NETWORKS as _REFERENCE_NETWORKS
from score_sde.models.score_model import ScoreModel, resolve_conventions
from score_sde.models.unet import SmallUNet


@dataclasses.dataclass(frozen=True)
class NetworkSpec:
  """build: `config -> nn.Module`; parameterization / time_label: the defaults behind 'auto'
  ('sde' = score_sde_pytorch's choice for the SDE); flat: data are vectors `[B, C]`."""
  build: Callable
  parameterization: str = 'sde'
  time_label: str = 'sde'
  flat: bool = False
  learn_sigma: bool = False        # can output learned variances (model.learn_sigma)


NETWORKS = {
    'mlp': NetworkSpec(MLP.from_config, 'eps', 't999', flat=True, learn_sigma=True),   # toys
    'unet': NetworkSpec(SmallUNet.from_config, 'eps', 't999', learn_sigma=True),       # small images
    # ncsnpp (NCSN++/DDPM++), ddpm, ncsnv2_*: score_sde_pytorch's conventions for the SDE
    **{name: NetworkSpec(cls, learn_sigma=name in ('ncsnpp', 'ddpm'))
       for name, cls in _REFERENCE_NETWORKS.items()},
}


def network_spec(config) -> NetworkSpec:
  """The `NETWORKS` entry of `config.model.name` (case-insensitive)."""
  name = config.model.name.lower()
  if name not in NETWORKS:
    raise ValueError(f"unknown model '{config.model.name}'; choose one of: {', '.join(NETWORKS)}")
  return NETWORKS[name]


def data_shape(config) -> tuple[int, ...]:
  """Shape of one data item for `config`: `(C,)` for flat networks, else `(C, H, W)`."""
  d = config.data
  return (d.num_channels,) if network_spec(config).flat else (d.num_channels, d.image_size, d.image_size)


def is_vector_data(config) -> bool:
  """Whether `config`'s data are vectors `[B, C]` (toy points, flat networks) rather than
  images `[B, C, H, W]`: the one answer every mode and metric uses."""
  return network_spec(config).flat


def create_network(config):
  """Build the raw network named by `config.model.name`."""
  return network_spec(config).build(config)


def create_model(config, sde) -> ScoreModel:
  """The network for `config` wrapped with the SDE's conventions into a `ScoreModel`."""
  spec = network_spec(config)
  param, label = resolve_conventions(config, sde, (spec.parameterization, spec.time_label))
  return ScoreModel(spec.build(config), sde, param, label, learn_sigma=config.model.learn_sigma)


def checkpoint_metadata(config, model: ScoreModel) -> dict:
  """What a checkpoint records about the model it holds: the SDE (type, parameters, N), the
  network name and the conventions, so that loading with another config fails loudly."""
  return {'sde': model.sde.describe(), 'network': config.model.name.lower(), **model.conventions()}


def check_metadata(meta: dict | None, config, model: ScoreModel, where: str) -> None:
  """Raise a one-line CheckpointError when checkpoint metadata `meta` (None for files without
  it, e.g. score_sde_pytorch's) disagrees with the model built from `config`."""
  if not meta:
    return
  want = checkpoint_metadata(config, model)
  meta = {'learn_sigma': False, **meta}  # files written before learned variances existed
  want = {'learn_sigma': False, **want}
  for key in ('sde', 'network', 'parameterization', 'time_label', 'learn_sigma'):
    if key in meta and meta[key] != want[key]:
      raise _ckpt.CheckpointError(
          f'{where} holds a model with {key} {_fmt(meta[key])} but the config gives {_fmt(want[key])}; '
          'use the config it was trained with')


def _fmt(v) -> str:
  if isinstance(v, dict):
    return v.get('name', '?') + '(' + ', '.join(f'{k}={v[k]}' for k in v if k != 'name') + ')'
  return repr(v)


def load_checkpoint(path: str, config=None, device='cpu', use_ema: bool = True, sde=None) -> ScoreModel:
  """A `ScoreModel` with the weights of checkpoint `path`, ready for evaluation.

  `config` None: the resolved config recorded in our checkpoints (`checkpoint_config`);
  score_sde_pytorch's files record none, and need the matching config. Reads our checkpoints
  and score_sde_pytorch's (`module.`-prefixed keys) with `weights_only=True`; loads the EMA
  weights when `use_ema` and the file has them. A mismatched file, or one whose recorded SDE /
  network / conventions differ from `config`, raises a one-line `CheckpointError` (naming the
  keys it was trained with, when it records its config).
  """
  from score_sde.maths.sdes import get_sde
  state = _ckpt.read_checkpoint(path)
  if config is None:
    config = checkpoint_config(state, path)
  model = create_model(config, sde if sde is not None else get_sde(config))
  try:
    check_metadata(state.get('meta'), config, model, f'checkpoint {path}')
    load_state(model.net, state, use_ema, f'checkpoint {path}')
  except _ckpt.CheckpointError as e:
    raise _ckpt.CheckpointError(f'{e}{trained_with_hint(state, config, path)}') from None
  return model.to(device).eval()


def checkpoint_config(state: dict, path: str = 'checkpoint'):
  """The resolved config that checkpoint `state` (read from `path`) records; a one-line
  `CheckpointError` for files without one (score_sde_pytorch's, or ours before configs were
  recorded)."""
  from score_sde.files.run_record import CONFIG_KEY, config_from_json
  if not state.get(CONFIG_KEY):
    raise _ckpt.CheckpointError(f'checkpoint {path} records no config (a score_sde_pytorch '
                                'checkpoint, or an older one): pass the config it was trained with')
  return config_from_json(state[CONFIG_KEY], f'checkpoint {path}')


def trained_with_hint(state: dict, config, path: str) -> str:
  """' (it was trained with --config.k=v ...)' for the model-defining keys where the config
  recorded in `state` differs from `config` ('' when it records none)."""
  from score_sde.files.run_record import CONFIG_KEY, changed_keys, flatten, identity_keys, show_value
  if not state.get(CONFIG_KEY):
    return ''
  try:
    old = flatten(checkpoint_config(state, path))
  except _ckpt.CheckpointError:
    return ''
  new = flatten(config)
  keys = [k for k in changed_keys(old, new) if k in identity_keys({**old, **new})]
  flags = ' '.join(f'--config.{k}={show_value(old.get(k))}' for k in keys)
  return f' (it was trained with {flags})' if keys else ''


def load_state(module, state: dict, use_ema: bool = True, where: str = 'checkpoint') -> None:
  """Load a checkpoint's `state['model']` into `module` (strict), then its EMA weights when
  `use_ema` and it has them. A mismatch is a one-line `CheckpointError`."""
  _ckpt.load_weights(module, state['model'], where=where)
  if use_ema and state.get('ema'):
    ema = ExponentialMovingAverage(module.parameters(), decay=0.999)
    try:
      ema.load_state_dict(state['ema'])
    except (KeyError, ValueError) as e:
      raise _ckpt.CheckpointError(f'{where} has a bad EMA entry: {e}') from None
    ema.copy_to(module.parameters())


__all__ = ['load_checkpoint', 'checkpoint_config', 'NETWORKS', 'NetworkSpec', 'ScoreModel', 'ExponentialMovingAverage', 'MLP',
           'SmallUNet', 'create_network', 'create_model', 'resolve_conventions', 'network_spec',
           'data_shape', 'checkpoint_metadata', 'check_metadata', 'load_state', 'trained_with_hint']
