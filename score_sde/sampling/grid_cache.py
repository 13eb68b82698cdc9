"""The JSON cache of optimized time grids, `<cache_dir>/optimized_grids.json`: a dict
`{cache key: [T, ..., eps]}` (steps + 1 times).

Read back, nothing is trusted: a file that is not JSON or not a dict is ignored (with a
one-line notice; the next write replaces it), and an entry that is not steps + 1 finite,
strictly decreasing times from T down to eps within (0, T] is ignored and recomputed. Writers
take a lock next to the file (`optimized_grids.json.lock`) around read-merge-replace, and
replace the file atomically, so that concurrent processes keep every entry.
"""
from __future__ import annotations

import json
import logging
import math
import os

from score_sde.files.atomic import probe_writable
from score_sde.files.checkpoint import save_json
from score_sde.errors import UserError

CACHE_FILE = 'optimized_grids.json'
LOCK_TIMEOUT = 120.0  # seconds to wait for another process's write of the cache


class GridCacheError(UserError, ValueError):
  """The grid cache cannot be used (e.g. its folder is not writable): one line."""


def cache_path(cache_dir: str) -> str:
  return os.path.join(cache_dir, CACHE_FILE)


def read_table(cache_dir: str) -> dict:
  """The cache's `{key: times}` ({} when absent; a file that is not a JSON dict is ignored with
  a one-line notice). Entries are not checked here: see `valid_times`."""
  path = cache_path(cache_dir)
  try:
    with open(path) as f:
      table = json.load(f)
  except FileNotFoundError:
    return {}
  except (OSError, ValueError) as e:  # unreadable, not UTF-8, not JSON
    logging.warning('ignoring the grid cache %s (%s); grids will be recomputed and the file '
                    'rewritten', path, str(e).splitlines()[0] if str(e) else type(e).__name__)
    return {}
  if not isinstance(table, dict):
    logging.warning('ignoring the grid cache %s: it holds a JSON %s, not a dict of grids; grids '
                    'will be recomputed and the file rewritten', path, type(table).__name__)
    return {}
  return table


def valid_times(ts, steps: int, T: float, eps: float) -> str | None:
  """Why `ts` is not a usable grid of `steps` steps from T down to eps (None if it is)."""
  if not isinstance(ts, list) or any(isinstance(t, bool) or not isinstance(t, (int, float)) for t in ts):
    return 'not a list of numbers'
  if len(ts) != steps + 1:
    return f'{len(ts)} times for {steps} steps (needs {steps + 1})'
  if not all(math.isfinite(t) for t in ts):
    return 'non-finite times'
  if any(b >= a for a, b in zip(ts, ts[1:])):
    return 'times not strictly decreasing'
  if not (0 < ts[-1] and ts[0] <= T) or not (math.isclose(ts[0], T, rel_tol=1e-9)
                                             and math.isclose(ts[-1], eps, rel_tol=1e-9)):
    return f'times not from T = {T} down to eps = {eps}'
  return None


def lookup(cache_dir: str, key: str, steps: int, T: float, eps: float) -> list[float] | None:
  """The cached grid of `key`, or None (absent or invalid: the latter with a one-line notice)."""
  stored = read_table(cache_dir).get(key)
  if stored is None:
    return None
  why = valid_times(stored, steps, T, eps)
  if why is not None:
    logging.warning('ignoring a bad entry of the grid cache %s (%s); recomputing it',
                    cache_path(cache_dir), why)
    return None
  return [float(t) for t in stored]


def check_writable(cache_dir: str) -> None:
  """Create `cache_dir` if needed and check that files can be written in it, before a long
  tuning whose result would otherwise be lost; a one-line GridCacheError if not."""
  try:
    probe_writable(cache_dir)
  except OSError as e:
    raise GridCacheError(f'cannot write the grid cache in {cache_dir}: {e.strerror or e}; set '
                         'sampling.grid_cache_dir to a writable folder') from None


def merge(cache_dir: str, key: str, ts: list[float]) -> None:
  """Add key -> ts to the cache: under the lock, re-read, merge and replace atomically."""
  from filelock import FileLock, Timeout
  path = cache_path(cache_dir)
  os.makedirs(cache_dir, exist_ok=True)
  try:
    with FileLock(path + '.lock', timeout=LOCK_TIMEOUT):
      table = read_table(cache_dir)
      table[key] = [float(t) for t in ts]
      save_json(path, table)
  except Timeout:
    raise GridCacheError(f'the grid cache {path} stayed locked for {LOCK_TIMEOUT:.0f} s by another '
                         f'process; if none is running, delete {path}.lock') from None
  except OSError as e:
    raise GridCacheError(f'cannot write the grid cache {path}: {e.strerror or e}') from None


__all__ = ['CACHE_FILE', 'GridCacheError', 'read_table', 'valid_times', 'lookup', 'check_writable', 'merge']
