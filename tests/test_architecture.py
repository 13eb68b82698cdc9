"""The package's structure, read from its source (no imports run):

- the import graph of `score_sde` (every import, function-local ones included, and the package
  `__init__` each import runs) has no cycle;
- imports point down the layers: maths <- models <- sampling / training / evaluation <- app;
- only the application layer (`score_sde/app/`, and `score_sde/interop/`, which translates
  foreign configs) takes a whole config: elsewhere no function has a `config` parameter, and
  no name is read for two config sections (`c.model` and `c.data`, say);
- function-local imports of our own modules only in the application layer (where they keep
  `--help` free of torch) and for optional dependencies.
"""
from __future__ import annotations

import ast
import collections
import os

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGE = os.path.join(ROOT, 'score_sde')
APP = ('score_sde.app', 'score_sde.interop', 'score_sde.__main__', 'score_sde.configs')
# the top-level config sections (configs/default.py)
SECTIONS = {'training', 'sampling', 'eval', 'inverse', 'classifier', 'data', 'model', 'optim',
            'runtime'}
# layer of each folder: a module may import its own layer and the layers below it
LAYERS = {'errors': 0, 'maths': 1, 'files': 1, 'runtime': 2, 'data': 2, 'models': 3,
          'sampling': 4, 'evaluation': 4, 'training': 5, 'app': 6, 'interop': 6,
          'configs': 0, '__main__': 7, '': 7, 'sdes': 1, 'likelihood': 1, 'vlb': 1, 'guidance': 1}


def _modules() -> dict[str, str]:
  found = {}
  for folder, _, files in os.walk(PACKAGE):
    for f in files:
      if f.endswith('.py'):
        path = os.path.join(folder, f)
        name = os.path.relpath(path[:-3], ROOT).replace(os.sep, '.')
        found[name[:-9] if name.endswith('.__init__') else name] = path
  return found


MODULES = _modules()
TREES = {name: ast.parse(open(path).read(), path) for name, path in MODULES.items()}


def _targets(node) -> list[str]:
  """Our modules an import statement loads (absolute imports only: the package uses no others)."""
  if isinstance(node, ast.Import):
    names = [a.name for a in node.names]
  else:
    assert node.level == 0, 'relative import'
    base = node.module or ''
    names = [f'{base}.{a.name}' if f'{base}.{a.name}' in MODULES else base for a in node.names]
  out = set()
  for name in names:
    parts = name.split('.')
    out.update('.'.join(parts[:i]) for i in range(1, len(parts) + 1)
               if '.'.join(parts[:i]) in MODULES)   # packages' __init__ run too
  return sorted(out)


def _imports(tree):
  """(node, inside a function) for every import statement of `tree`."""
  def walk(node, local):
    for child in ast.iter_child_nodes(node):
      inner = local or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef))
      if isinstance(child, (ast.Import, ast.ImportFrom)):
        yield child, inner
      yield from walk(child, inner)
  yield from walk(tree, False)


def _graph() -> dict[str, set[str]]:
  edges = collections.defaultdict(set)
  for name, tree in TREES.items():
    for node, _ in _imports(tree):
      for target in _targets(node):
        if target != name and not name.startswith(target + '.'):  # a package's own __init__
          edges[name].add(target)
  return edges


def _cycles(edges) -> list[list[str]]:
  """Strongly connected components with more than one module (Tarjan)."""
  index, low, stack, on, found = {}, {}, [], set(), []

  def visit(v):
    index[v] = low[v] = len(index)
    stack.append(v)
    on.add(v)
    for w in edges.get(v, ()):
      if w not in index:
        visit(w)
        low[v] = min(low[v], low[w])
      elif w in on:
        low[v] = min(low[v], index[w])
    if low[v] == index[v]:
      comp = []
      while True:
        w = stack.pop()
        on.discard(w)
        comp.append(w)
        if w == v:
          break
      if len(comp) > 1:
        found.append(sorted(comp))

  for v in sorted(set(edges) | {w for ws in edges.values() for w in ws}):
    if v not in index:
      visit(v)
  return found


def _layer(module: str) -> int:
  parts = module.split('.')
  return LAYERS[parts[1] if len(parts) > 1 else '']


def test_the_import_graph_has_no_cycle():
  assert _cycles(_graph()) == []


def test_the_cycle_check_can_fail():
  assert _cycles({'a': {'b'}, 'b': {'c'}, 'c': {'a'}, 'd': {'a'}}) == [['a', 'b', 'c']]


def test_imports_point_down_the_layers():
  upward = sorted(f'{m} -> {t}' for m, ts in _graph().items() for t in ts
                  if t != 'score_sde' and _layer(t) > _layer(m))
  assert upward == []


def _whole_config_uses(tree) -> list[str]:
  """Functions of `tree` that take a `config` parameter or read two sections off one name."""
  bad = []
  for fn in ast.walk(tree):
    if not isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
      continue
    args = fn.args.posonlyargs + fn.args.args + fn.args.kwonlyargs
    if any(a.arg == 'config' for a in args):
      bad.append(f'{fn.name} (a config parameter)')
      continue
    sections = collections.defaultdict(set)
    for node in ast.walk(fn):  # name.section.key reads
      inner = node.value if isinstance(node, ast.Attribute) else None
      if (isinstance(inner, ast.Attribute) and inner.attr in SECTIONS
          and isinstance(inner.value, ast.Name)):
        sections[inner.value.id].add(inner.attr)
    bad += [f'{fn.name} ({name}.{"/".join(sorted(s))})' for name, s in sections.items() if len(s) > 1]
  return bad


def test_only_the_application_layer_takes_a_whole_config():
  found = {name: _whole_config_uses(tree) for name, tree in TREES.items()
           if not name.startswith(APP) and name != 'score_sde'}  # score_sde.load forwards to app
  assert {k: v for k, v in found.items() if v} == {}


def test_the_config_check_can_fail():
  tree = ast.parse('def f(config):\n  pass\n\ndef g(c):\n  return c.model.nf, c.data.image_size\n'
                   '\ndef h(model):\n  return model.nf, model.eval(), model.training\n')
  assert _whole_config_uses(tree) == ['f (a config parameter)', 'g (c.data/model)']


@pytest.mark.parametrize('name', sorted(n for n in MODULES if not n.startswith(APP)))
def test_no_function_local_import_of_our_own_modules(name):
  local = [ast.unparse(node) for node, inner in _imports(TREES[name])
           if inner and any(t.startswith('score_sde') for t in _targets(node))]
  if name == 'score_sde':  # `score_sde.load` imports torch only when called
    local = [line for line in local if line != 'from score_sde.app.pipeline import load as _load']
  assert local == []
