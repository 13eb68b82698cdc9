"""Score networks and the `ScoreModel` wrapper.

`NETWORKS` maps `model.name` to a `NetworkSpec`: a builder `(model, data) -> nn.Module` of the
config's model and data sections (every network is called as `net(x, time_label, y=None)`),
the parameterization and time label it uses unless the config says otherwise ('sde':
score_sde_pytorch's choice for the SDE), and whether it takes flat vectors `[B, C]` instead of
images `[B, C, H, W]`. The build layer (`score_sde.app.build.create_model`) wraps it into a
`ScoreModel`, whose `forward(x, t, y=None)` is the score.
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
  """build: `(model, data) -> nn.Module`; parameterization / time_label: the defaults behind 'auto'
  ('sde' = score_sde_pytorch's choice for the SDE); flat: data are vectors `[B, C]`."""
  build: Callable
  parameterization: str = 'sde'
  time_label: str = 'sde'
  flat: bool = False
  learn_sigma: bool = False        # can output learned variances (model.learn_sigma)


NETWORKS = {
    'mlp': NetworkSpec(MLP.from_settings, 'eps', 't999', flat=True, learn_sigma=True),   # toys
    'unet': NetworkSpec(SmallUNet.from_settings, 'eps', 't999', learn_sigma=True),       # small images
    # ncsnpp (NCSN++/DDPM++), ddpm, ncsnv2_*: score_sde_pytorch's conventions for the SDE
    **{name: NetworkSpec(cls, learn_sigma=name in ('ncsnpp', 'ddpm'))
       for name, cls in _REFERENCE_NETWORKS.items()},
}


def network_spec(name: str) -> NetworkSpec:
  """The `NETWORKS` entry of `name` (`model.name`, case-insensitive)."""
  if name.lower() not in NETWORKS:
    raise ValueError(f"unknown model '{name}'; choose one of: {', '.join(NETWORKS)}")
  return NETWORKS[name.lower()]


def checkpoint_metadata(network: str, model: ScoreModel) -> dict:
  """What a checkpoint records about the model it holds: the SDE (type, parameters, N), the
  network name and the conventions, so that loading with another config fails loudly."""
  return {'sde': model.sde.describe(), 'network': network.lower(), **model.conventions()}


def check_metadata(meta: dict | None, network: str, model: ScoreModel, where: str) -> None:
  """Raise a one-line CheckpointError when checkpoint metadata `meta` (None for files without
  it, e.g. score_sde_pytorch's) disagrees with `model`, the network `network` built from the
  config."""
  if not meta:
    return
  want = checkpoint_metadata(network, model)
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


__all__ = ['NETWORKS', 'NetworkSpec', 'ScoreModel', 'ExponentialMovingAverage', 'MLP', 'SmallUNet',
           'resolve_conventions', 'network_spec', 'checkpoint_metadata', 'check_metadata', 'load_state']
