"""Files for other tools: byte-reproducible `.npz` shards, and an evaluation's samples exported
for external evaluators (`eval.export`).

Export (rank 0, after every shard is drawn), next to the report <workdir>/eval/<name>.json:
  - 'png': <name>_samples/<index 000000>.png, one image per sample, in sample order (the
    folder layout pytorch-fid, clean-fid and torch-fidelity read); grey images as 1-channel PNG;
  - 'npz': <name>_samples.npz with `arr_0`, uint8 `[N, H, W, 3]` (NHWC; grey repeated to RGB),
    the format of ADM's (guided-diffusion) evaluator; 2-D toys: float `[N, D]` points;
  - 'both': the two. '' exports nothing.
"""
from __future__ import annotations

import io
import os
import re
import zipfile

import numpy as np

from score_sde.files.atomic import atomic_file
from score_sde.files.visualize import save_png
from score_sde.errors import UserError

EXPORTS = ('', 'png', 'npz', 'both')
_EPOCH = (1980, 1, 1, 0, 0, 0)  # the zip format's earliest time: no clock in the bytes


def npz_bytes(compressed: bool = False, **arrays) -> bytes:
  """An .npz archive of `arrays` whose bytes depend only on the arrays (np.savez stamps each
  member with the current time, so two writes of the same arrays would differ)."""
  buf = io.BytesIO()
  method = zipfile.ZIP_DEFLATED if compressed else zipfile.ZIP_STORED
  with zipfile.ZipFile(buf, 'w', compression=method) as archive:
    for name, value in arrays.items():
      info = zipfile.ZipInfo(name + '.npy', date_time=_EPOCH)
      info.compress_type = method
      with archive.open(info, 'w', force_zip64=True) as f:
        np.lib.format.write_array(f, np.asanyarray(value), allow_pickle=False)
  return buf.getvalue()


def save_npz(path: str, compressed: bool = False, **arrays) -> None:
  """Atomically write `npz_bytes(compressed, **arrays)` to `path` (never through a link)."""
  data = npz_bytes(compressed, **arrays)
  with atomic_file(path) as f:
    f.write(data)


def export_paths(out_root: str, name: str, what: str) -> list[str]:
  """The files / folders `what` ('png', 'npz', 'both', '') writes for evaluation `name`."""
  out = []
  if what in ('png', 'both'):
    out.append(os.path.join(out_root, f'{name}_samples'))
  if what in ('npz', 'both'):
    out.append(os.path.join(out_root, f'{name}_samples.npz'))
  return out


def export_samples(shards: list[str], out_root: str, name: str, what: str, flat: bool) -> list[str]:
  """Write the samples of the `shards` (samples_<i>.npz, in order) as `what` says (see the module
  docstring); returns what was written."""
  if not what:
    return []
  if flat and what != 'npz':
    raise UserError(f"config.eval.export = '{what}': 2-D toy samples are points, not images; use "
                    "'npz'")
  parts = []
  for path in shards:
    with np.load(path, allow_pickle=False) as f:
      parts.append(f['samples'])
  x = np.concatenate(parts)
  if not flat:
    x = np.ascontiguousarray(x.transpose(0, 2, 3, 1))  # uint8 NHWC
  written = export_paths(out_root, name, what)
  try:
    for target in written:
      if target.endswith('.npz'):
        save_npz(target, False, arr_0=x if flat or x.shape[-1] == 3 else np.repeat(x, 3, axis=-1))
        continue
      os.makedirs(target, exist_ok=True)
      for old in os.listdir(target):  # a previous, larger export's extra images
        if re.fullmatch(r'\d{6}\.png', old) and int(old[:6]) >= len(x):
          os.remove(os.path.join(target, old))
      for i, image in enumerate(x):
        save_png(image, os.path.join(target, f'{i:06d}.png'))
  except OSError as e:
    raise UserError(f'cannot export the samples to {out_root}: {e.strerror or e}') from None
  return written


__all__ = ['EXPORTS', 'npz_bytes', 'save_npz', 'export_paths', 'export_samples']
