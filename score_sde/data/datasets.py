"""Datasets for score-based models: `DATASETS`, `get_dataset`, data scalers, dequantisation.

`get_dataset(data, split)` returns a `torch.utils.data.Dataset` of `(x, y)` items:
  - images: x float32 `[C, H, W]`, H = W = data.image_size, C = data.num_channels
    (grey <-> RGB converted as needed), values k / 255 for 8-bit k, so x in [0, 1];
    y an int64 scalar tensor (the class, 0 if the data has none);
  - 2-D toys: x float32 `[2]`, unscaled (roughly in [-4, 4]); y the component (see toy_data).
Small sets (toys, digits, CIFAR-10, MNIST) are `InMemoryDataset`s (images as uint8 in memory);
image folders are read lazily from disk. Nothing is ever downloaded: missing files raise a
one-line `FileNotFoundError` saying what to put where. An empty data.root means
DEFAULT_ROOT. Batches come from `InfiniteLoader` (score_sde.data.loader, re-exported here); the
training loop applies `dequantize` (if data.uniform_dequantization) and then the scaler.
"""
from __future__ import annotations

import functools
import os
from typing import Callable, Optional

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from score_sde.data import toy_data
from score_sde.data.loader import InfiniteLoader
from score_sde.errors import UserError
from score_sde.data.readers import (IMAGE_EXTENSIONS, ImageFolderDataset, InMemoryDataset,
                                    convert_channels, file_identities, folder_labels, list_images,
                                    locate, read_cifar_batch, read_idx, resize_uint8)

__all__ = ['DATASETS', 'get_dataset', 'load_split', 'get_data_scaler', 'get_data_inverse_scaler', 'dequantize',
           'InfiniteLoader', 'InMemoryDataset', 'ImageFolderDataset', 'data_range']

SPLITS = ('train', 'test')
TOY_SEEDS = {'train': 0, 'test': 1}   # toy points: fixed per split, independent of config.seed
DEFAULT_ROOT = 'data'
DIGITS_TRAIN = 1500                   # of sklearn's 1797 digits; the other 297 are the test split
FOLDER_TEST_FRACTION = 20             # image folders without train/ and test/: 1 in 20 is test
CIFAR_URL = 'https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz'
MNIST_URL = ('https://ossci-datasets.s3.amazonaws.com/mnist/ '
             '(mirror of http://yann.lecun.com/exdb/mnist/)')
MNIST_FILES = {'train': ('train-images-idx3-ubyte', 'train-labels-idx1-ubyte'),
               't10k': ('t10k-images-idx3-ubyte', 't10k-labels-idx1-ubyte')}


# ----------------------------------------------------------------------------- scaling


def _is_toy(data) -> bool:
  return data.dataset.lower() in toy_data.TOYS


def _identity(x: torch.Tensor) -> torch.Tensor:
  return x


def _to_centered(x: torch.Tensor) -> torch.Tensor:
  return 2 * x - 1


def _from_centered(x: torch.Tensor) -> torch.Tensor:
  return (x + 1) / 2


def get_data_scaler(data) -> Callable[[torch.Tensor], torch.Tensor]:
  """[0, 1] data -> [-1, 1] (x -> 2x - 1) if data.centered, else (and for toys) identity."""
  return _to_centered if data.centered and not _is_toy(data) else _identity


def data_range(data) -> tuple[float, float]:
  """The (lo, hi) range of image data after `get_data_scaler(data)`: (-1, 1) when centred,
  else (0, 1)."""
  return (-1.0, 1.0) if data.centered else (0.0, 1.0)


def get_data_inverse_scaler(data) -> Callable[[torch.Tensor], torch.Tensor]:
  """The inverse of `get_data_scaler(data)`: [-1, 1] -> [0, 1] when centred, else identity."""
  return _from_centered if data.centered and not _is_toy(data) else _identity


def dequantize(x: torch.Tensor, generator: Optional[torch.Generator] = None,
               u: Optional[torch.Tensor] = None) -> torch.Tensor:
  """Uniform dequantisation of 8-bit data x = k / 255 in [0, 1] (Theis et al. 2016).

  Returns (k + u) / 256 with k = round(255 x) and u ~ U[0, 1) per element: the 256 levels map onto
  the 256 bins [k/256, (k+1)/256) of width 1/256 that tile [0, 1), so a density on the output has
  bits/dim = -log p / (D ln 2) + 8. Shape, dtype and device of x are kept; the result is clamped
  below (k+1)/256 so float rounding cannot leave the bin. Apply it before the data scaler.
  `u` (shaped like x, in [0, 1)) replaces the draw from `generator`.
  """
  k = torch.round(x * 255)
  if u is None:
    u = torch.rand(x.shape, generator=generator, dtype=x.dtype, device=x.device)
  u = u.to(x)
  top = torch.nextafter((k + 1) / 256, torch.zeros((), dtype=x.dtype, device=x.device))
  return torch.minimum((k + u) / 256, top)


# ----------------------------------------------------------------------------- builders


def _root(data) -> str:
  return data.root or DEFAULT_ROOT


def _in_memory(data, split: str, images: torch.Tensor, labels) -> InMemoryDataset:
  """uint8 `[N, c, h, w]` -> an InMemoryDataset at the configured channels and size (bilinear resize)."""
  images = resize_uint8(convert_channels(images, data.num_channels),
                        data.image_size)
  return InMemoryDataset(images, torch.as_tensor(np.asarray(labels), dtype=torch.int64),
                         random_flip=data.random_flip and split == 'train')


def _toy(name: str, data, split: str) -> InMemoryDataset:
  """data.toy_size points of a toy (toy_data.TOYS), seeded by TOY_SEEDS[split]."""
  x, y = toy_data.sample_toy(name, data.toy_size, TOY_SEEDS[split])
  return InMemoryDataset(x, y)


def _digits(data, split: str) -> InMemoryDataset:
  """scikit-learn's 1797 8x8 digits (values 0..16 -> k = round(16ths * 255)), 10 classes. A fixed
  permutation (numpy default_rng(0)) puts the first DIGITS_TRAIN in train, the other 297 in test."""
  from sklearn.datasets import load_digits   # shipped with scikit-learn: no download
  digits = load_digits()
  images = np.rint(digits.images * (255 / 16)).astype(np.uint8)
  order = np.random.default_rng(0).permutation(len(images))
  keep = order[:DIGITS_TRAIN] if split == 'train' else order[DIGITS_TRAIN:]
  return _in_memory(data, split, torch.from_numpy(images[keep])[:, None], digits.target[keep])


def _cifar10(data, split: str) -> InMemoryDataset:
  """CIFAR-10 python batches in <root>/cifar-10-batches-py/ or <root>: 32x32 RGB, 10 classes."""
  root = _root(data)
  names = tuple(f'data_batch_{i}' for i in range(1, 6)) if split == 'train' else ('test_batch',)
  dirs = [os.path.join(root, 'cifar-10-batches-py'), root]
  paths = locate(dirs, names, gz=False)
  if paths is None:
    raise FileNotFoundError(
        f"cifar10: expected data_batch_1..5 and test_batch in '{dirs[0]}' (or '{root}'); "
        f"download {CIFAR_URL} and extract it into '{root}' (data.root)")
  parts = [read_cifar_batch(p) for p in paths]
  images = torch.from_numpy(np.concatenate([d for d, _ in parts]))
  return _in_memory(data, split, images, np.concatenate([l for _, l in parts]))


def _mnist(data, split: str) -> InMemoryDataset:
  """MNIST idx files (plain or .gz) in <root> or <root>/MNIST/raw: 28x28 grey, 10 classes.
  image_size 29..32 zero-pads symmetrically (the usual 32x32 MNIST); other sizes resize."""
  root = _root(data)
  names = MNIST_FILES['train' if split == 'train' else 't10k']
  dirs = [root, os.path.join(root, 'MNIST', 'raw')]
  paths = locate(dirs, names, gz=True)
  if paths is None:
    every = ', '.join(n + '[.gz]' for pair in MNIST_FILES.values() for n in pair)
    raise FileNotFoundError(f"mnist: expected {every} in '{root}' (or '{dirs[1]}'); "
                            f"download them from {MNIST_URL} into '{root}' (data.root)")
  images = torch.from_numpy(read_idx(paths[0]))[:, None]
  size = data.image_size
  if 28 < size <= 32:
    lo, hi = (size - 28) // 2, (size - 28) - (size - 28) // 2
    images = F.pad(images, (lo, hi, lo, hi))
  return _in_memory(data, split, images, read_idx(paths[1]))


def _image_folder(data, split: str) -> ImageFolderDataset:
  """Image files (IMAGE_EXTENSIONS, any depth) under <root>/train and <root>/test when both exist;
  otherwise all images under <root>, split 95/5 by a fixed permutation (numpy default_rng(0)).
  Labels: the sorted class-subfolder index when every image is in a subfolder, else 0.
  The splits are disjoint by construction: each real file is listed once (links followed, each
  real folder entered once, see `list_images`), the walk of one split folder never enters the
  other, and an image reachable from both train/ and test/ (a link) belongs to test only."""
  root = _root(data)
  split_dirs = [os.path.join(root, s) for s in SPLITS]
  if all(os.path.isdir(d) for d in split_dirs):
    bases = split_dirs
    train_dir, test_dir = split_dirs
    files = list_images(test_dir, exclude=(train_dir,))
    if split == 'train':
      test_files = file_identities(files)
      files = [f for f in list_images(train_dir, exclude=(test_dir,))
               if file_identities([f]).isdisjoint(test_files)]
    labels = folder_labels(files, bases)
  else:
    bases = [root]
    files = list_images(root) if os.path.isdir(root) else []
    labels = folder_labels(files, bases)   # before splitting, so both splits share the classes
    n_test = max(1, len(files) // FOLDER_TEST_FRACTION) if len(files) > 1 else 0
    order = np.random.default_rng(0).permutation(len(files))
    keep = sorted(order[len(files) - n_test:] if split == 'test' else order[:len(files) - n_test])
    files, labels = [files[i] for i in keep], [labels[i] for i in keep]
  if not files:
    raise FileNotFoundError(
        f"{data.dataset}: no {'/'.join(IMAGE_EXTENSIONS)} images for split '{split}' under "
        f"'{' or '.join(bases)}'; put images in '{root}' (data.root), optionally in "
        f"train/ and test/ and in class subfolders")
  return ImageFolderDataset(files, labels, data.image_size, data.num_channels,
                            random_flip=data.random_flip and split == 'train')


DATASETS: dict[str, Callable[..., Dataset]] = {
    'digits': _digits,
    'checkerboard': functools.partial(_toy, 'checkerboard'),
    'moons': functools.partial(_toy, 'moons'),
    'gmm': functools.partial(_toy, 'gmm'),
    'swissroll': functools.partial(_toy, 'swissroll'),
    'cifar10': _cifar10,
    'mnist': _mnist,
    'image_folder': _image_folder,
    'celeba': _image_folder,
    'celebahq': _image_folder,
    'ffhq': _image_folder,
    'lsun': _image_folder,
}


def load_split(data, split: str) -> Dataset:
  """`get_dataset`, with a missing or malformed dataset reported as a one-line UserError."""
  try:
    return get_dataset(data, split)
  except (FileNotFoundError, ValueError) as e:
    raise UserError(str(e)) from None


def get_dataset(data, split: str) -> Dataset:
  """The `split` ('train' | 'test') of data.dataset (case-insensitive, see DATASETS).

  Items are `(x, y)` as described in the module docstring; no dequantisation and no scaling.
  """
  name = data.dataset.lower()
  if name not in DATASETS:
    raise ValueError(f"unknown dataset '{data.dataset}'; choose one of: "
                     f"{', '.join(DATASETS)}")
  if split not in SPLITS:
    raise ValueError(f"unknown split '{split}'; choose one of: {', '.join(SPLITS)}")
  return DATASETS[name](data, split)
