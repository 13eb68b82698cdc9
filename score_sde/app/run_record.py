"""What a training run records besides its weights, and what it checks when it resumes.

In the run's folder (the workdir; <workdir>/classifier for --mode train_classifier), rank 0
writes at the start of every training:
  config.json   the resolved config (every key), as the run uses it;
  run.json      score_sde version, git commit (if the package runs from a git checkout), Python,
                torch and CUDA versions, host name, command line, world size, start time (UTC);
  log.txt       every log line of the run, appended (losses every training.log_freq steps).

Checkpoints hold the same resolved config as a JSON string (`CONFIG_KEY`), so a checkpoint
alone rebuilds its model (`config_from_json`), and a resumed run is compared with it
(`check_resume`): keys that define the model are refused, other changes are named in a warning.
"""
from __future__ import annotations

import contextlib
import datetime
import json
import logging
import os
import platform
import socket
import subprocess
import sys

from score_sde.files import checkpoint as ckpt

CONFIG_KEY = 'config'  # the checkpoint entry holding the resolved config as a JSON string

# Keys that define what a score model is (its network, its SDE, its parameterization, the data
# it maps): a run resumed with another value would silently train something else.
_SDE_KEYS = ('training.sde', 'training.continuous', 'model.beta_min', 'model.beta_max',
             'model.sigma_min', 'model.sigma_max', 'model.num_scales', 'model.schedule')
_DATA_KEYS = ('data.image_size', 'data.num_channels', 'data.centered')
_NOT_IDENTITY = ('model.ema_rate', 'model.dropout')  # training choices, not the model


def config_to_json(config) -> str:
  """The resolved config as a JSON string (tuples become lists)."""
  return config.to_json(sort_keys=True)


def config_from_json(text: str, where: str = 'checkpoint'):
  """A config rebuilt from a JSON record (`config_to_json`'s string, or `ConfigDict.to_json`'s, as
  our checkpoints and .safetensors files carry): the defaults with the recorded values (lists
  back to tuples where the default is one). Keys this version lacks are skipped with a warning;
  a record that is not a JSON object, or a value of the wrong type, is a one-line
  CheckpointError."""
  from score_sde.configs.default import get_default_config
  try:
    values = json.loads(text) if isinstance(text, str) else None
  except ValueError:
    values = None
  if not isinstance(values, dict):
    raise ckpt.CheckpointError(f'{where} has a damaged config record (not a JSON object); pass the '
                               'config it was trained with')
  config, skipped = get_default_config(), []
  _fill(config, values, '', skipped, where)
  if skipped:
    logging.warning('%s records config keys this version does not take (ignored): %s', where,
                    ', '.join(skipped))
  return config


def _fill(node, values: dict, prefix: str, skipped: list, where: str) -> None:
  import ml_collections
  for key, value in values.items():
    name = prefix + key
    if key not in node:
      skipped.append(name)
    elif isinstance(node[key], ml_collections.ConfigDict):
      _fill(node[key], value if isinstance(value, dict) else {}, name + '.', skipped, where)
    else:
      value = tuple(value) if isinstance(node[key], tuple) and isinstance(value, list) else value
      try:
        node[key] = value
      except (TypeError, ValueError):
        raise ckpt.CheckpointError(f'{where}: config key {name} = {value!r} has the wrong type') from None


def flatten(config, prefix: str = '') -> dict:
  """`{'section.key': value}` of a (nested) config, lists as tuples."""
  out = {}
  for key, value in config.items():
    if hasattr(value, 'items'):
      out.update(flatten(value, f'{prefix}{key}.'))
    else:
      out[prefix + key] = tuple(value) if isinstance(value, list) else value
  return out


def identity_keys(flat: dict, task: str = 'score') -> list[str]:
  """The keys of flattened config `flat` that define the trained network of `task`."""
  conditional = flat.get('model.class_conditional', False) or task == 'classifier'
  keys = list(_SDE_KEYS + _DATA_KEYS) + (['data.num_classes'] if conditional else [])
  if task == 'classifier':
    return keys + ['model.name'] + [k for k in flat if k.startswith('classifier.')]
  return keys + [k for k in flat if k.startswith('model.') and k not in _NOT_IDENTITY]


def changed_keys(old: dict, new: dict) -> list[str]:
  """Keys of flattened configs whose values differ (keys in only one of them count too)."""
  return sorted(k for k in set(old) | set(new) if old.get(k, '<absent>') != new.get(k, '<absent>'))


def check_resume(state: dict, config, task: str, where: str, record: str) -> None:
  """Compare the config stored in checkpoint `state` (if any) with the run's `config`: a
  changed key that defines the model is a one-line CheckpointError naming the keys and their
  recorded values; other changes are one warning line."""
  if not state.get(CONFIG_KEY):
    return  # written before configs were recorded (or by score_sde_pytorch): 'meta' still checks
  old, new = flatten(config_from_json(state[CONFIG_KEY], where)), flatten(config)
  changed = changed_keys(old, new)
  fixed = [k for k in changed if k in identity_keys({**old, **new}, task)]
  if fixed:
    was = ' '.join(f'--config.{k}={show_value(old.get(k))}' for k in fixed)
    raise ckpt.CheckpointError(
        f"{where} was trained with {was} but this run's config differs in these keys, which "
        f'define the model; resume with those values (see {record}) or use a new --workdir')
  if changed:
    shown = ', '.join(f'{k} {show_value(old.get(k))} -> {show_value(new.get(k))}' for k in changed)
    logging.warning('resuming from %s with a changed config: %s', where, shown)


def show_value(value) -> str:
  if isinstance(value, tuple):
    return '(' + ','.join(map(str, value)) + (',)' if len(value) == 1 else ')')
  return str(value)


def git_commit(package: str) -> str | None:
  """The commit checked out in the git checkout whose top folder holds the package folder
  `package` (None if there is none, e.g. an installed package, or git is missing)."""
  try:
    out = subprocess.run(['git', 'rev-parse', '--show-toplevel', 'HEAD'], cwd=package,
                         capture_output=True, text=True, timeout=5)
  except (OSError, subprocess.SubprocessError):
    return None
  lines = out.stdout.split()
  if out.returncode or len(lines) != 2:
    return None
  top, commit = lines
  same = os.path.realpath(os.path.join(top, os.path.basename(package))) == os.path.realpath(package)
  return commit if same else None


def run_info(world_size: int) -> dict:
  """What run.json records about the software and the machine of this run."""
  import torch
  from importlib import metadata
  try:
    version = metadata.version('score_sde')
  except metadata.PackageNotFoundError:
    version = None
  package = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # the score_sde folder
  return {'score_sde_version': version, 'git_commit': git_commit(package),
          'python': platform.python_version(), 'torch': torch.__version__,
          'cuda': torch.version.cuda, 'cuda_available': torch.cuda.is_available(),
          'hostname': socket.gethostname(), 'command': [sys.executable, *sys.argv],
          'cwd': os.getcwd(), 'world_size': world_size,
          'started_utc': datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds')}


def write_records(config, folder: str, world_size: int) -> None:
  """config.json and run.json in `folder` (atomic writes). A failed write is a warning: the
  checkpoints, which hold the config too, are what a run must not lose."""
  for name, record in (('config.json', lambda: json.loads(config_to_json(config))),
                       ('run.json', lambda: run_info(world_size))):
    try:
      ckpt.save_json(os.path.join(folder, name), record())
    except OSError as e:
      logging.warning('cannot write %s: %s; training goes on', os.path.join(folder, name),
                      e.strerror or e)


@contextlib.contextmanager
def log_file(folder: str):
  """Every log record of level INFO and above, while the context is open, appended to
  <folder>/log.txt (opened without following a link planted there)."""
  flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | getattr(os, 'O_NOFOLLOW', 0)
  try:
    stream = os.fdopen(os.open(os.path.join(folder, 'log.txt'), flags, 0o644), 'a', buffering=1)
  except OSError as e:
    from score_sde.errors import UserError
    raise UserError(f"cannot write {os.path.join(folder, 'log.txt')}: {e.strerror or e}") from None
  handler = logging.StreamHandler(stream)
  handler.setLevel(logging.INFO)
  handler.setFormatter(logging.Formatter('%(asctime)s %(levelname)s %(message)s'))
  root = logging.getLogger()
  old_level = root.level
  root.addHandler(handler)
  if root.getEffectiveLevel() > logging.INFO:
    root.setLevel(logging.INFO)
  try:
    yield
  finally:
    root.removeHandler(handler)
    root.setLevel(old_level)
    stream.close()
