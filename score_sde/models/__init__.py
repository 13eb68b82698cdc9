"""Score networks and the `ScoreModel` wrapper.

`NETWORKS` maps `config.model.name` to a builder `config -> nn.Module`; every network is
called as `net(x, time_label, y=None)`. `create_model(config, sde)` returns the wrapped
`ScoreModel`, whose `forward(x, t, y=None)` is the score.
"""
from __future__ import annotations

from score_sde import checkpoint as _ckpt
from score_sde.models.ema import ExponentialMovingAverage
from score_sde.models.mlp import MLP
from score_sde.models.networks import NETWORKS as _REFERENCE_NETWORKS
from score_sde.models.score_model import ScoreModel, resolve_conventions
from score_sde.models.unet import SmallUNet

NETWORKS = {
    'mlp': MLP.from_config,
    'unet': SmallUNet.from_config,
    **_REFERENCE_NETWORKS,   # ncsnpp (NCSN++/DDPM++), ddpm, ncsnv2_*: built as Net(config)
}


def create_network(config):
  """Build the raw network named by `config.model.name`."""
  name = config.model.name.lower()
  if name not in NETWORKS:
    raise ValueError(f"unknown model '{config.model.name}'; choose one of: {', '.join(NETWORKS)}")
  return NETWORKS[name](config)


def create_model(config, sde) -> ScoreModel:
  """The network for `config` wrapped with the SDE's conventions into a `ScoreModel`."""
  param, label = resolve_conventions(config, sde)
  return ScoreModel(create_network(config), sde, param, label)


def load_checkpoint(path: str, config, device='cpu', use_ema: bool = True, sde=None) -> ScoreModel:
  """A `ScoreModel` for `config` with the weights of checkpoint `path`, ready for evaluation.

  Reads our checkpoints and score_sde_pytorch's (`module.`-prefixed keys) with
  `weights_only=True`; loads the EMA weights when `use_ema` and the file has them. A
  mismatched file raises a one-line `CheckpointError` naming the first bad key or shape.
  """
  from score_sde.sdes import get_sde
  model = create_model(config, sde if sde is not None else get_sde(config))
  state = _ckpt.read_checkpoint(path)
  _ckpt.load_weights(model.net, state['model'], where=f'checkpoint {path}')
  if use_ema and state.get('ema'):
    ema = ExponentialMovingAverage(model.net.parameters(), decay=0.999)
    try:
      ema.load_state_dict(state['ema'])
    except (KeyError, ValueError) as e:
      raise _ckpt.CheckpointError(f'checkpoint {path} has a bad EMA entry: {e}') from None
    ema.copy_to(model.net.parameters())
  return model.to(device).eval()


__all__ = ['load_checkpoint', 'NETWORKS', 'ScoreModel', 'ExponentialMovingAverage', 'MLP', 'SmallUNet',
           'create_network', 'create_model', 'resolve_conventions']
