"""File readers and dataset classes behind `score_sde.data.datasets` (no downloads, no torchvision).

Images are 8-bit: a pixel k in 0..255 is returned as float32 k / 255, so x lies in [0, 1].
"""
from __future__ import annotations

import collections
import gzip
import os
import pickle
import stat
import struct
from typing import Callable, Optional

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch.utils.data import Dataset

from score_sde.errors import UserError

IMAGE_EXTENSIONS = ('.png', '.jpg', '.jpeg', '.webp')
IDX_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: '>i2', 0x0C: '>i4', 0x0D: '>f4', 0x0E: '>f8'}


class InMemoryDataset(Dataset):
  """A dataset held as tensors; item i is `(x[i], y[i])`.

  Args:
    data: uint8 images `[N, C, H, W]` (returned as float32 k / 255 in [0, 1]) or float points
      `[N, D]` (returned as stored).
    labels: int64 `[N]`.
    random_flip: images only; `__getitem__` flips left-right with probability 1/2 (torch's
      global RNG). `InfiniteLoader` instead passes seeded flips to `batch`.
  """

  def __init__(self, data: torch.Tensor, labels: torch.Tensor, random_flip: bool = False):
    if len(data) != len(labels):
      raise ValueError(f'{len(data)} items but {len(labels)} labels')
    self.data, self.labels = data, labels.long()
    self.random_flip = bool(random_flip) and data.dim() == 4

  def __len__(self) -> int:
    return len(self.data)

  def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
    return self.get(index, self.random_flip and bool(torch.rand(()) < 0.5))

  def get(self, index: int, flip: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Item `index`, flipped left-right if `flip`."""
    x, y = self.batch(torch.tensor([index]), torch.tensor([flip]))
    return x[0], y[0]

  def batch(self, indices: torch.Tensor,
            flips: Optional[torch.Tensor] = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Items `indices` (int64 `[B]`, on the data's device) as `([B, ...], [B])`, images flipped
    left-right where the bool `[B]` `flips` is true."""
    x = self.data[indices]
    if x.dtype == torch.uint8:
      x = x.float().div_(255)
    if flips is not None and x.dim() == 4:
      x = torch.where(flips.view(-1, 1, 1, 1), x.flip(-1), x)
    return x, self.labels[indices]

  def to(self, device) -> InMemoryDataset:
    """A copy (sharing storage where possible) with data and labels on `device`."""
    return InMemoryDataset(self.data.to(device), self.labels.to(device), self.random_flip)


class ImageFolderDataset(Dataset):
  """Image files read on access: centre-cropped to a square, resized (PIL bicubic, antialiased)
  to `image_size`, converted to grey ('L') or RGB; x float32 `[C, S, S]` = k / 255 in [0, 1]."""

  def __init__(self, files: list[str], labels: list[int], image_size: int, num_channels: int,
               random_flip: bool = False):
    if num_channels not in (1, 3):
      raise ValueError(f'num_channels must be 1 or 3 for image files, got {num_channels}')
    self.files, self.labels = list(files), list(labels)
    self.image_size, self.num_channels, self.random_flip = image_size, num_channels, random_flip

  def __len__(self) -> int:
    return len(self.files)

  def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
    return self.get(index, self.random_flip and bool(torch.rand(()) < 0.5))

  def get(self, index: int, flip: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Item `index`, flipped left-right if `flip`."""
    size = self.image_size
    with Image.open(self.files[index]) as img:
      img = img.convert('L' if self.num_channels == 1 else 'RGB')
    w, h = img.size
    s = min(w, h)
    box = ((w - s) // 2, (h - s) // 2, (w - s) // 2 + s, (h - s) // 2 + s)
    img = img.resize((size, size), Image.Resampling.BICUBIC, box=box)
    x = torch.from_numpy(np.array(img)).view(size, size, -1).permute(2, 0, 1).float() / 255
    return (x.flip(-1) if flip else x), torch.tensor(self.labels[index], dtype=torch.int64)


def _chunked(fn: Callable[[torch.Tensor], torch.Tensor], images: torch.Tensor) -> torch.Tensor:
  return torch.cat([fn(part) for part in images.split(4096)])


def resize_uint8(images: torch.Tensor, size: int) -> torch.Tensor:
  """Bilinear (antialiased) resize of uint8 `[N, C, h, w]` to `[N, C, size, size]`, re-quantised."""
  if images.shape[-2:] == (size, size):
    return images
  return _chunked(lambda part: F.interpolate(
      part.float(), size=(size, size), mode='bilinear', align_corners=False, antialias=True
  ).round_().clamp_(0, 255).to(torch.uint8), images)


def convert_channels(images: torch.Tensor, channels: int) -> torch.Tensor:
  """uint8 `[N, c, H, W]` -> `[N, channels, H, W]`: grey -> RGB by copying, RGB -> grey by luma."""
  c = images.shape[1]
  if c == channels:
    return images
  if c == 1 and channels == 3:
    return images.expand(-1, 3, -1, -1).contiguous()
  if c == 3 and channels == 1:   # ITU-R 601-2 luma, as PIL's convert('L')
    luma = torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)
    return _chunked(lambda p: (p.float() * luma).sum(1, keepdim=True).round_().to(torch.uint8),
                    images)
  raise ValueError(f'cannot convert {c}-channel images to {channels} channels')


def locate(dirs: list[str], names: tuple[str, ...], gz: bool) -> Optional[list[str]]:
  """Paths of all `names` (each plain or, if gz, `name.gz`) in the first of `dirs` with them all."""
  suffixes = ('', '.gz') if gz else ('',)
  for d in dirs:
    found = []
    for name in names:
      options = [os.path.join(d, name + suffix) for suffix in suffixes]
      found.append(next((p for p in options if os.path.isfile(p)), None))
    if all(found):
      return found
  return None


def read_idx(path: str) -> np.ndarray:
  """Read an IDX file (MNIST's format; plain or .gz): magic 0, 0, dtype code, ndim, then ndim
  big-endian uint32 sizes, then the row-major data."""
  with (gzip.open if path.endswith('.gz') else open)(path, 'rb') as f:
    raw = f.read()
  zero, code, ndim = struct.unpack('>HBB', raw[:4])
  if zero != 0 or code not in IDX_DTYPES:
    raise ValueError(f"{path}: not an IDX file (magic 0x{raw[:4].hex()})")
  shape = struct.unpack(f'>{ndim}I', raw[4:4 + 4 * ndim])
  data = np.frombuffer(raw, IDX_DTYPES[code], int(np.prod(shape)), 4 + 4 * ndim)
  return data.reshape(shape).copy()   # a writable array


class UnsafeFileError(UserError, ValueError):
  """A data file that holds more than its format allows (one line naming the file)."""


def _latin1(text, encoding='latin1'):
  """`_codecs.encode` as Python 3 protocol-2 pickles use it for bytes (latin-1 only)."""
  if not isinstance(text, str) or encoding not in ('latin1', 'latin-1'):
    raise pickle.UnpicklingError(f'_codecs.encode with {type(text).__name__}, {encoding!r}')
  return text.encode('latin1')


def _cifar_globals() -> dict:
  """The only globals a CIFAR-10 batch pickle may name: NumPy's array reconstructors (Python 2
  and 3 pickles, protocols 2-5), ndarray, dtype, and latin-1 `_codecs.encode`."""
  reconstruct = np.zeros(1).__reduce__()[0]
  frombuffer = np.zeros(1).__reduce_ex__(5)[0]
  return {**{(m, '_reconstruct'): reconstruct for m in ('numpy.core.multiarray', 'numpy._core.multiarray')},
          **{(m, '_frombuffer'): frombuffer for m in ('numpy.core.numeric', 'numpy._core.numeric')},
          ('numpy', 'ndarray'): np.ndarray, ('numpy', 'dtype'): np.dtype, ('_codecs', 'encode'): _latin1}


class _CifarUnpickler(pickle.Unpickler):
  """An unpickler that builds only dicts, lists, bytes, str, numbers and NumPy arrays: any other
  global (a function or class a crafted file would run) is refused before it is looked up."""

  def __init__(self, f, path: str):
    super().__init__(f, encoding='bytes')
    self.path, self.allowed = path, _cifar_globals()

  def find_class(self, module: str, name: str):
    if (module, name) not in self.allowed:
      raise UnsafeFileError(f'{self.path}: refusing to unpickle {module}.{name}: not a CIFAR-10 '
                            'batch (unsafe file; replace it with the one from the CIFAR-10 download)')
    return self.allowed[(module, name)]


def read_cifar_batch(path: str) -> tuple[np.ndarray, np.ndarray]:
  """One CIFAR-10 python batch (a pickled dict, read by an unpickler that can build nothing but
  dicts, lists, bytes, str, numbers and NumPy arrays): uint8 images `[N, 3, 32, 32]` (each row
  of b'data' is channel-major: R(1024) G(1024) B(1024)) and int64 labels `[N]`. A file that is
  anything else is a one-line error naming it."""
  try:
    with open(path, 'rb') as f:
      batch = _CifarUnpickler(f, path).load()
  except UnsafeFileError:
    raise
  except Exception as e:  # noqa: BLE001 - a truncated or foreign file
    raise UnsafeFileError(f'{path}: not a readable CIFAR-10 batch ({type(e).__name__}: '
                          f'{str(e)[:200]}); replace it with the one from the CIFAR-10 download') from None
  data, labels = ((batch.get(key.encode(), batch.get(key)) for key in ('data', 'labels'))
                  if isinstance(batch, dict) else (None, None))
  if not (isinstance(data, np.ndarray) and data.dtype == np.uint8 and data.ndim == 2
          and data.shape[1] == 3072) or not isinstance(labels, (list, np.ndarray)) \
          or len(labels) != len(data) or not all(isinstance(v, (int, np.integer)) and 0 <= v < 10
                                                 for v in labels):
    raise UnsafeFileError(f"{path}: not a CIFAR-10 batch (needs b'data' uint8 [N, 3072] and "
                          "b'labels' N ints in 0..9); replace it with the one from the CIFAR-10 download")
  return data.reshape(-1, 3, 32, 32), np.asarray(labels, np.int64)


def _identity(path: str) -> tuple[int, int] | None:
  """(st_dev, st_ino) of what `path` points to, or None (missing, a dangling link)."""
  try:
    st = os.stat(path)
  except OSError:
    return None
  return st.st_dev, st.st_ino


def list_images(directory: str, exclude: tuple[str, ...] = ()) -> list[str]:
  """Sorted paths of the image files (regular files with an IMAGE_EXTENSIONS suffix; links
  followed) under `directory`, recursively. Each real directory is entered once and each real
  file listed once, under the first path a breadth-first walk in name order meets (the
  shallowest), so a symlink loop neither hangs the walk nor repeats images; the directories
  `exclude` (and their contents) are not entered."""
  seen = {i for i in map(_identity, exclude) if i is not None}
  files, found, queue = set(), [], collections.deque([directory])
  while queue:
    folder = queue.popleft()
    ident = _identity(folder)
    if ident is None or ident in seen:
      continue
    seen.add(ident)
    try:
      with os.scandir(folder) as it:
        entries = sorted(it, key=lambda e: e.name)
    except OSError:
      continue
    subdirs = []
    for entry in entries:
      try:
        st = os.stat(entry.path)
      except OSError:  # a dangling link
        continue
      if stat.S_ISDIR(st.st_mode):
        subdirs.append(entry.path)
      elif (stat.S_ISREG(st.st_mode) and entry.name.lower().endswith(IMAGE_EXTENSIONS)
            and (st.st_dev, st.st_ino) not in files):
        files.add((st.st_dev, st.st_ino))
        found.append(entry.path)
    queue.extend(subdirs)
  return sorted(found)


def file_identities(paths: list[str]) -> set[tuple[int, int]]:
  """The (st_dev, st_ino) of each of `paths` (the real files, whatever links lead to them)."""
  return {i for i in map(_identity, paths) if i is not None}


def folder_labels(files: list[str], bases: list[str]) -> list[int]:
  """Class labels from subfolders. `files` come from `list_images(b)` for b in `bases`. If every
  file lies in a subfolder of its base, its label is the index of that subfolder's name among the
  sorted subfolder names of all bases (so train/ and test/ share one class list); else all 0."""
  tops = []
  for path in files:
    base = next(b for b in bases if path.startswith(os.path.join(b, '')))
    parts = os.path.relpath(path, base).split(os.sep)
    if len(parts) == 1:
      return [0] * len(files)
    tops.append(parts[0])
  real = {os.path.realpath(b) for b in bases}
  classes = sorted({d for b in bases if os.path.isdir(b) for d in os.listdir(b)
                    if os.path.isdir(os.path.join(b, d)) and not _ancestor_of(os.path.join(b, d), real)}
                   | set(tops))
  return [classes.index(top) for top in tops]


def _ancestor_of(folder: str, reals: set[str]) -> bool:
  """Whether `folder` resolves to one of `reals` or to a folder above one (a symlink loop)."""
  mine = os.path.join(os.path.realpath(folder), '')
  return any(os.path.join(r, '').startswith(mine) for r in reals)
