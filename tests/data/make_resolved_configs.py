"""Writes tests/data/resolved_configs.json: every packaged experiment config (configs/*.py but
default.py and __init__.py) resolved by its `get_config()`, as JSON (tuples as lists, keys sorted).

tests/test_configs_as_deltas.py checks that each config still resolves to exactly this snapshot,
so that rewriting a config file (e.g. dropping assignments that restate a default) cannot change
a value unnoticed. Run it ONLY when a config's values change on purpose (or a config is added),
and review the diff of the JSON:

  OMP_NUM_THREADS=1 python tests/data/make_resolved_configs.py
"""
from __future__ import annotations

import importlib
import json
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
CONFIGS = os.path.join(ROOT, 'configs')
SNAPSHOT = os.path.join(HERE, 'resolved_configs.json')


def config_names() -> list[str]:
  """The experiment configs: the files of configs/ less default.py and the package's __init__."""
  return sorted(f[:-3] for f in os.listdir(CONFIGS)
                if f.endswith('.py') and f not in ('default.py', '__init__.py'))


def jsonable(value):
  """`value` (a ConfigDict's to_dict() or a leaf of it) with tuples as lists."""
  if isinstance(value, dict):
    return {k: jsonable(v) for k, v in value.items()}
  if isinstance(value, (list, tuple)):
    return [jsonable(v) for v in value]
  return value


def resolve(name: str) -> dict:
  """Packaged config `name` as get_config() returns it, JSON-able."""
  return jsonable(importlib.import_module(f'score_sde.configs.{name}').get_config().to_dict())


def main() -> None:
  if ROOT not in sys.path:
    sys.path.insert(0, ROOT)
  snapshot = {name: resolve(name) for name in config_names()}
  with open(SNAPSHOT, 'w') as f:
    json.dump(snapshot, f, indent=1, sort_keys=True)
    f.write('\n')
  print(f'wrote {len(snapshot)} configs to {SNAPSHOT}')


if __name__ == '__main__':
  main()
