"""What an evaluation folder holds: the settings its shards were made with, and shards read
back only after they are checked.

`--mode eval` keeps resumable shards in <workdir>/eval/<name>/: `samples_<i>.npz` (drawn
samples) and `bpd_<i>.npy` / `vlb_<i>.npy` (per-example likelihood values of batch i). The
report <workdir>/eval/<name>.json is the folder's manifest: its 'manifest' entry holds one
section per kind of shard ('samples', 'bpd', 'vlb'), each with the checkpoint's SHA-256 and
every setting that shapes that kind's values. The report is written (with 'complete': false)
before the first shard and completed at the end, so a pre-empted evaluation resumes.

Policy. A section that differs from this run's (another solver, seed, batch size, split,
checkpoint content, ...) or is missing (a report deleted, or from an older version) makes its
shards stale: they are deleted (only regular files named like our shards) with a one-line
notice, and recomputed. The kinds are independent: another solver keeps the likelihood cache
and another `eval.bpd_dataset` keeps the samples. A shard that does not read back as expected
(truncated, wrong shape or dtype, not finite) is recomputed with a notice; a shard name taken
by a folder, link or device is a one-line UserError.

<name> is the checkpoint file's stem ('final.pt' -> 'final'); a checkpoint from outside this
workdir's checkpoints folder (`--checkpoint` of another run) gets '-<first 12 hex digits of its
SHA-256>' appended, so it never reuses or overwrites this run's results.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import zipfile

import numpy as np

from score_sde.files.atomic import finite_json
from score_sde.errors import UserError

KINDS = {'samples': re.compile(r'samples_\d+\.npz$'), 'bpd': re.compile(r'bpd_\d+\.npy$'),
         'vlb': re.compile(r'vlb_\d+\.npy$')}


def checkpoint_sha256(path: str) -> str:
  """SHA-256 of the checkpoint file's bytes: its `<path>.sha256` side file (verified against the
  file when the checkpoint was loaded), or else the file hashed here."""
  side = path + '.sha256'
  if os.path.isfile(side):
    with open(side) as f:
      text = f.read(100).strip()
    if re.fullmatch(r'[0-9a-f]{64}', text):
      return text
  h = hashlib.sha256()
  with open(path, 'rb') as f:
    for block in iter(lambda: f.read(1 << 20), b''):
      h.update(block)
  return h.hexdigest()


def folder_name(path: str, sha256: str, own_dir: str) -> str:
  """The checkpoint's stem, with '-<sha256[:12]>' when it is not in `own_dir`."""
  base = os.path.basename(path)
  stem = os.path.splitext(base)[0] or base
  if os.path.realpath(os.path.dirname(os.path.abspath(path))) != os.path.realpath(own_dir):
    stem = f'{stem}-{sha256[:12]}'
  return stem


def plain(obj):
  """JSON-normal form (tuples -> lists), so that a section compares equal to its reread copy."""
  return json.loads(json.dumps(obj))


def read_manifest(report_path: str) -> dict:
  """The 'manifest' of the report at `report_path` ({} when there is none or it is unreadable)."""
  try:
    with open(report_path) as f:
      manifest = json.load(f).get('manifest')
  except (OSError, ValueError, AttributeError):
    return {}
  if not isinstance(manifest, dict):
    return {}
  return {k: v for k, v in manifest.items() if k in KINDS and isinstance(v, dict)}


def shard_files(folder: str, kind: str) -> list[str]:
  """Our shard files of `kind` in `folder` (regular files only, never links)."""
  if not os.path.isdir(folder):
    return []
  names = sorted(n for n in os.listdir(folder) if KINDS[kind].match(n))
  paths = [os.path.join(folder, n) for n in names]
  return [p for p in paths if os.path.isfile(p) and not os.path.islink(p)]


def _changes(old: dict | None, new: dict) -> str:
  if old is None:
    return 'no record of their settings'
  keys = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
  return 'other settings: ' + ', '.join(f'{k} {old.get(k)!r} -> {new.get(k)!r}'[:120] for k in keys)


def reconcile(folder: str, report_path: str, sections: dict) -> dict:
  """Delete the shards in `folder` whose section in the old manifest differs from `sections`
  (kind -> settings of this run), with a notice each; returns the folder's new manifest (this
  run's sections, plus the old ones of kinds this run does not use)."""
  old = read_manifest(report_path)
  for kind, settings in sections.items():
    if old.get(kind) == settings:
      continue
    stale = shard_files(folder, kind)
    for path in stale:
      os.remove(path)
    if stale:
      logging.warning('%s: discarded %d %s shard(s) made with %s; recomputing', folder, len(stale),
                      kind, _changes(old.get(kind), settings))
  return {**{k: v for k, v in old.items() if k not in sections}, **sections}


def _regular(path: str) -> bool:
  """True if `path` is a regular file; False if absent; a UserError if the name is taken by a
  folder, link or device (never opened: a FIFO would block)."""
  if not os.path.lexists(path):
    return False
  if os.path.islink(path) or not os.path.isfile(path):
    raise UserError(f'{path} is not a regular file (a folder, link or device has the name of an '
                    'evaluation shard); remove it to recompute')
  return True


def _discard(path: str, problem: str) -> None:
  logging.warning('%s: %s; recomputing it', path, problem)
  os.remove(path)


def read_sample_shard(path: str, shape: tuple, flat: bool) -> tuple[np.ndarray, int] | None:
  """(samples, nfe) of a checked sample shard: `samples` of `shape` (uint8 images or finite float
  vectors) and a scalar NFE >= 0. None if absent or bad (a bad one is deleted with a notice)."""
  if not _regular(path):
    return None
  try:
    with np.load(path, allow_pickle=False) as f:
      x, nfe = f['samples'], f['nfe']
  except (OSError, ValueError, KeyError, EOFError, TypeError, AttributeError,
          zipfile.BadZipFile) as e:
    _discard(path, f'unreadable shard ({_first_line(e)})')
    return None
  problem = None
  if x.shape != tuple(shape):
    problem = f'samples of shape {x.shape}, expected {tuple(shape)}'
  elif (x.dtype.kind != 'f') if flat else (x.dtype != np.uint8):
    problem = f"samples of dtype {x.dtype}, expected {'float' if flat else 'uint8'}"
  elif flat and not np.isfinite(x).all():
    problem = 'non-finite samples'
  elif nfe.shape != () or nfe.dtype.kind not in 'iu' or int(nfe) < 0:
    problem = f'bad nfe entry {nfe!r}'[:100]
  if problem:
    _discard(path, problem)
    return None
  return x, int(nfe)


def read_values_shard(path: str, n: int) -> np.ndarray | None:
  """The `[n]` finite float per-example values of a checked likelihood shard, or None if
  absent or bad (a bad one is deleted with a notice)."""
  if not _regular(path):
    return None
  try:
    v = np.load(path, allow_pickle=False)
  except (OSError, ValueError, EOFError) as e:
    _discard(path, f'unreadable shard ({_first_line(e)})')
    return None
  if not isinstance(v, np.ndarray) or v.shape != (n,) or v.dtype.kind != 'f' \
      or not np.isfinite(v).all():
    what = (f'shape {v.shape}, dtype {v.dtype}' if isinstance(v, np.ndarray) else type(v).__name__)
    _discard(path, f'not {n} finite float values ({what})')
    return None
  return v.astype(np.float64)


def _first_line(e: Exception) -> str:
  return ((str(e).strip().splitlines() or [type(e).__name__])[0])[:150]


def finite_or_none(report: dict) -> dict:
  """`report` with every non-finite float replaced by None, with a warning naming the keys (JSON
  has no NaN)."""
  bad = []
  clean = finite_json(report, '', bad)
  if bad:
    logging.warning('non-finite %s reported as null', ', '.join(bad))
  return clean
