"""The experiment configs are deltas: each sets only what differs from the config it builds on.

A config's base is the config function its `get_config()` calls first (`default.get_default_config`
or another config's `get_config`). Three checks:
- every packaged config resolves exactly (values and their types) to the snapshot
  tests/data/resolved_configs.json, so that editing a config file changes no value unnoticed
  (regenerate the snapshot with tests/data/make_resolved_configs.py only on purpose);
- no config restates a value of its base: get_config() runs with every ConfigDict assignment
  recorded, and each assignment made after the base returned must change the value it sets
  (and set a key at most once);
- the config files of configs/ are exactly the snapshot's configs (a new config needs a snapshot).
"""
from __future__ import annotations

import importlib
import importlib.util
import json
import os
import traceback

import pytest
from ml_collections import ConfigDict


def _load(path):
  """The Python file `path`, imported as a module named after it."""
  spec = importlib.util.spec_from_file_location(os.path.basename(str(path))[:-3], path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


HERE = os.path.dirname(os.path.abspath(__file__))
snapshot_tool = _load(os.path.join(HERE, 'data', 'make_resolved_configs.py'))
with open(snapshot_tool.SNAPSHOT) as _f:
  SNAPSHOT = json.load(_f)
NAMES = snapshot_tool.config_names()
_MISSING = object()


def differences(got, want, path: str = '') -> list[str]:
  """Dotted paths where `got` and `want` differ in keys, value or type (1 vs 1.0, True vs 1)."""
  if isinstance(got, dict) and isinstance(want, dict):
    out = [f'{path}{k}: missing' if k not in got else f'{path}{k}: unexpected'
           for k in sorted(set(got) ^ set(want))]
    for k in sorted(set(got) & set(want)):
      out += differences(got[k], want[k], f'{path}{k}.')
    return out
  if isinstance(got, list) and isinstance(want, list) and len(got) == len(want):
    return [d for i, (g, w) in enumerate(zip(got, want)) for d in differences(g, w, f'{path}{i}.')]
  return [] if type(got) is type(want) and got == want else [f'{path[:-1]}: {got!r} != {want!r}']


def _sections(config: ConfigDict, prefix: str = '') -> dict:
  """id of each ConfigDict in `config` (itself included) -> its dotted prefix ('model.')."""
  out = {id(config): prefix}
  for k, v in config.items():
    if isinstance(v, ConfigDict):
      out.update(_sections(v, f'{prefix}{k}.'))
  return out


def assignments(module, monkeypatch) -> list[tuple]:
  """(line, key, value before, value after) of each assignment `module.get_config()` makes to the
  config its base returned, in order. The base: the first config function (one of
  score_sde.configs.*, imported into `module`) that get_config() calls."""
  base, records = {}, []

  def wrap(fn):
    def first_call_is_the_base(*args, **kwargs):
      config = fn(*args, **kwargs)
      base.setdefault('sections', _sections(config))
      return config
    return first_call_is_the_base

  for attr, value in list(vars(module).items()):
    if (callable(value) and attr != 'get_config' and
        getattr(value, '__module__', '').startswith('score_sde.configs.')):
      monkeypatch.setattr(module, attr, wrap(value))
  setitem = ConfigDict.__setitem__

  def recording_setitem(self, key, value):
    old = self[key] if key in self else _MISSING
    setitem(self, key, value)
    section = base.get('sections', {}).get(id(self))
    if section is not None:
      line = next((f.lineno for f in reversed(traceback.extract_stack())
                   if f.filename == module.__file__), None)
      records.append((line, section + key, old, self[key]))

  monkeypatch.setattr(ConfigDict, '__setitem__', recording_setitem)
  module.get_config()
  monkeypatch.setattr(ConfigDict, '__setitem__', setitem)
  assert 'sections' in base, f'{module.__name__}.get_config() calls no base config'
  return records


def restated(records) -> list[str]:
  """The assignments of `records` that set a key to the value (and type) it already had."""
  return [f'line {line}: {key} = {new!r} (the base has {old!r})'
          for line, key, old, new in records if type(old) is type(new) and old == new]


def test_the_config_files_are_the_snapshot_configs():
  assert NAMES == sorted(SNAPSHOT), 'a config was added or removed: run make_resolved_configs.py'
  assert {'vp_cifar', 'digits', 'toy_gmm', 've_ffhq_256'} <= set(NAMES)


@pytest.mark.parametrize('name', NAMES)
def test_config_resolves_to_the_snapshot(name):
  changed = differences(snapshot_tool.resolve(name), SNAPSHOT[name])
  assert not changed, (f'{name} no longer resolves to its snapshot (a change on purpose, a new '
                       'default key included: run tests/data/make_resolved_configs.py):\n'
                       + '\n'.join(changed))


@pytest.mark.parametrize('name', NAMES)
def test_config_sets_only_what_differs_from_its_base(name, monkeypatch):
  records = assignments(importlib.import_module(f'score_sde.configs.{name}'), monkeypatch)
  found = restated(records)
  assert not found, f'{name}.py restates its base:\n' + '\n'.join(found)
  keys = [key for _, key, _, _ in records]
  assert sorted(k for k in set(keys) if keys.count(k) > 1) == []  # each key set once


def test_the_check_catches_a_restated_value(tmp_path, monkeypatch):
  """A derived config that restates its parent's batch size and a default is caught, with lines;
  a real change is not."""
  path = tmp_path / 'restating.py'
  path.write_text('from score_sde.configs.vp_cifar import get_config as _base\n\n\n'
                  'def get_config():\n'
                  '  config = _base()\n'
                  '  training = config.training\n'
                  '  training.batch_size = 128\n'
                  '  config.model.num_res_blocks = 8\n'
                  '  config.model.dropout = 0.1\n'
                  '  config.model.sigma_max = 50\n'  # int 50 is cast to the float 50. it has
                  '  return config\n')
  records = assignments(_load(path), monkeypatch)
  assert [(line, key) for line, key, _, _ in records] == [
      (7, 'training.batch_size'), (8, 'model.num_res_blocks'), (9, 'model.dropout'),
      (10, 'model.sigma_max')]
  assert [r.split(':')[0] for r in restated(records)] == ['line 7', 'line 9', 'line 10']
  assert differences({'a': [1, 2.0]}, {'a': [1, 2]}) == ['a.1: 2.0 != 2']


def test_a_config_without_a_base_is_refused(tmp_path, monkeypatch):
  path = tmp_path / 'baseless.py'
  path.write_text('import ml_collections\n\n\ndef get_config():\n'
                  '  return ml_collections.ConfigDict({"seed": 1})\n')
  with pytest.raises(AssertionError, match='calls no base config'):
    assignments(_load(path), monkeypatch)
