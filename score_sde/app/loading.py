"""Loading trained models: a score model from a checkpoint (ours, which record their resolved
config, and score_sde_pytorch's, which need the config they were trained with; diffusers
folders and .safetensors files through `score_sde.interop.pretrained`), ready for evaluation,
and the noisy classifier of classifier guidance."""
from __future__ import annotations

from score_sde.app.build import build_classifier, build_sde, create_model, is_vector_data
from score_sde.app.run_record import (CONFIG_KEY, changed_keys, config_from_json, flatten, identity_keys,
                                      show_value)
from score_sde.errors import UserError
from score_sde.files import checkpoint as ckpt
from score_sde.files.workdir import ckpt_dir, latest_checkpoint
from score_sde.models import ScoreModel, check_metadata, load_state
from score_sde.training.classifier import check_classifier_metadata


def load_checkpoint(path: str, config=None, device='cpu', use_ema: bool = True, sde=None) -> ScoreModel:
  """A `ScoreModel` with the weights of checkpoint `path`, ready for evaluation.

  `config` None: the resolved config recorded in our checkpoints (`checkpoint_config`);
  score_sde_pytorch's files record none, and need the matching config. Reads our checkpoints
  and score_sde_pytorch's (`module.`-prefixed keys) with `weights_only=True`; loads the EMA
  weights when `use_ema` and the file has them. A mismatched file, or one whose recorded SDE /
  network / conventions differ from `config`, raises a one-line `CheckpointError` (naming the
  keys it was trained with, when it records its config).
  """
  state = ckpt.read_checkpoint(path)
  if config is None:
    config = checkpoint_config(state, path)
  model = create_model(config, sde if sde is not None else build_sde(config))
  try:
    check_metadata(state.get('meta'), config.model.name, model, f'checkpoint {path}')
    load_state(model.net, state, use_ema, f'checkpoint {path}')
  except ckpt.CheckpointError as e:
    raise ckpt.CheckpointError(f'{e}{trained_with_hint(state, config, path)}') from None
  return model.to(device).eval()


def checkpoint_config(state: dict, path: str = 'checkpoint'):
  """The resolved config that checkpoint `state` (read from `path`) records; a one-line
  `CheckpointError` for files without one (score_sde_pytorch's, or ours before configs were
  recorded)."""
  if not state.get(CONFIG_KEY):
    raise ckpt.CheckpointError(f'checkpoint {path} records no config (a score_sde_pytorch '
                                'checkpoint, or an older one): pass the config it was trained with')
  return config_from_json(state[CONFIG_KEY], f'checkpoint {path}')


def trained_with_hint(state: dict, config, path: str) -> str:
  """' (it was trained with --config.k=v ...)' for the model-defining keys where the config
  recorded in `state` differs from `config` ('' when it records none)."""
  if not state.get(CONFIG_KEY):
    return ''
  try:
    old = flatten(checkpoint_config(state, path))
  except ckpt.CheckpointError:
    return ''
  new = flatten(config)
  keys = [k for k in changed_keys(old, new) if k in identity_keys({**old, **new})]
  flags = ' '.join(f'--config.{k}={show_value(old.get(k))}' for k in keys)
  return f' (it was trained with {flags})' if keys else ''


def load_guidance_classifier(config, workdir: str, device):
  """The noisy classifier (EMA weights) for classifier guidance, or None when
  config.sampling.classifier_scale is 0; from sampling.classifier_checkpoint or the newest in
  <workdir>/classifier/checkpoints. A classifier trained with another SDE (recorded in its
  checkpoint) is a one-line UserError; an older file without the record, a warning."""
  if config.sampling.classifier_scale <= 0:
    return None
  path = config.sampling.classifier_checkpoint
  if not path:
    found = latest_checkpoint(workdir, 'classifier')
    if found is None:
      raise UserError(f"classifier guidance needs a classifier: none in {ckpt_dir(workdir, 'classifier')}; "
                      'train one with --mode train_classifier or set config.sampling.classifier_checkpoint')
    path = found[1]
  net = build_classifier(config, is_vector_data(config))
  try:
    state = ckpt.read_checkpoint(path)
    check_classifier_metadata(state.get('meta'), build_sde(config), f'classifier checkpoint {path}')
    load_state(net, state, where=f'classifier checkpoint {path}')
  except (ckpt.CheckpointError, FileNotFoundError, KeyError, ValueError) as e:
    raise UserError(str(e)) from None
  return net.to(device).eval()
