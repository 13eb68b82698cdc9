"""What every config key means, read from the comments of configs/default.py (the one place
where keys are defined), and the `--mode config` listing of a resolved config.

In default.py each key is set on its own line, `  t.batch_size = 128   # what it means`,
inside a section function (`_training()` builds `config.training`); the comment may continue
on the comment-only lines below it. The comment on a section's `ConfigDict()` line describes
the section. No torch: `--mode config` and `--help` stay fast.
"""
from __future__ import annotations

import ast
import io
import os
import tokenize


def default_config_path() -> str:
  """configs/default.py of this checkout or installation (score_sde.configs)."""
  import score_sde.configs
  return os.path.join(list(score_sde.configs.__path__)[0], 'default.py')


def _comments(source: str) -> dict[int, str]:
  """{line number: comment text without '#'} of every comment in `source`."""
  tokens = tokenize.generate_tokens(io.StringIO(source).readline)
  return {tok.start[0]: tok.string.lstrip('#').strip() for tok in tokens if tok.type == tokenize.COMMENT}


def _described(stmt: ast.stmt, next_line: int, comments: dict[int, str], lines: list[str]) -> str:
  """The comment on `stmt`'s lines plus those on the comment-only lines before `next_line`."""
  parts = [comments[n] for n in range(stmt.lineno, stmt.end_lineno + 1) if n in comments]
  for n in range(stmt.end_lineno + 1, next_line):
    if n in comments and lines[n - 1].lstrip().startswith('#'):
      parts.append(comments[n])
  return ' '.join(p for p in parts if p)


def _assigned(stmt: ast.stmt) -> tuple[str, str] | None:
  """(variable, attribute) of a statement `variable.attribute = value`, else None."""
  if isinstance(stmt, ast.Assign) and len(stmt.targets) == 1:
    target = stmt.targets[0]
    if isinstance(target, ast.Attribute) and isinstance(target.value, ast.Name):
      return target.value.id, target.attr
  return None


def _body_descriptions(body: list[ast.stmt], end: int, comments, lines) -> dict[str, str]:
  """{attribute: description} of the `x.attr = ...` statements of one function body, plus
  {'': description} of the statement that creates the ConfigDict (`x = ...ConfigDict()`)."""
  found = {}
  for i, stmt in enumerate(body):
    next_line = body[i + 1].lineno if i + 1 < len(body) else end + 1
    pair = _assigned(stmt)
    if pair is not None:
      found[pair[1]] = _described(stmt, next_line, comments, lines)
    elif isinstance(stmt, ast.Assign) and 'ConfigDict' in ast.unparse(stmt.value):
      found[''] = _described(stmt, next_line, comments, lines)
  return found


def descriptions(path: str | None = None) -> dict[str, str]:
  """{'section.key' or 'section' or top-level 'key': one-line description} from default.py's
  comments ('' where a key has none). Sections are found through get_default_config()'s
  `config.<section> = _<function>()` lines."""
  path = path or default_config_path()
  with open(path) as f:
    source = f.read()
  tree, comments, lines = ast.parse(source), _comments(source), source.splitlines()
  funcs = {node.name: node for node in tree.body if isinstance(node, ast.FunctionDef)}
  root = funcs['get_default_config']
  out = {}
  for stmt in root.body:
    pair = _assigned(stmt)
    if pair is None:
      continue
    value = stmt.value
    if isinstance(value, ast.Call) and isinstance(value.func, ast.Name) and value.func.id in funcs:
      func = funcs[value.func.id]
      inner = _body_descriptions(func.body, func.end_lineno, comments, lines)
      out[pair[1]] = inner.pop('', '')
      out.update({f'{pair[1]}.{k}': v for k, v in inner.items()})
  top = _body_descriptions(root.body, root.end_lineno, comments, lines)
  out.update({k: v for k, v in top.items() if k and k not in out})
  return out


def flat_items(config, prefix: str = ''):
  """('section.key', value) of every leaf of a (nested) ConfigDict, in its order."""
  for k, v in config.items():
    if hasattr(v, 'items'):
      yield from flat_items(v, f'{prefix}{k}.')
    else:
      yield f'{prefix}{k}', v


def describe(config, defaults=None, title: str = '') -> str:
  """The resolved `config` as lines `section.key = value  # description`, one section after
  another under a `# section: description` header; a `*` after the value marks a value
  that differs from `defaults` (get_default_config()), i.e. set by the config file or a flag."""
  docs = descriptions()
  base = dict(flat_items(defaults)) if defaults is not None else {}
  rows, section = [f'# {title}'] if title else [], None
  width = min(max(len(f'{k} = {v!r}') for k, v in flat_items(config)) + 4, 56)
  for key, value in flat_items(config):
    head = key.split('.', 1)[0] if '.' in key else ''
    if head != section:
      section = head
      about = docs.get(head, '')
      rows += ['', f"# {head or 'top level'}" + (f': {about}' if about else '')]
    mark = ' *' if base and key in base and base[key] != value else ''
    text = f'{key} = {value!r}{mark}'
    rows.append(f"{text.ljust(width - 2)}  # {docs.get(key) or '(no description)'}")
  return '\n'.join(rows).lstrip('\n')
