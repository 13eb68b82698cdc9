"""Tests for score_sde.data.datasets: readers on tiny fixtures in the real file formats, toys,
scalers, dequantisation and the resumable InfiniteLoader. No network, CPU only."""
from __future__ import annotations

import gzip
import math
import os
import pickle
import struct

import numpy as np
import pytest
import torch
from PIL import Image

from configs.default import get_default_config
from score_sde.data import toy_data
from score_sde.data.datasets import (DATASETS, InfiniteLoader, InMemoryDataset, dequantize,
                                get_data_inverse_scaler, get_data_scaler, get_dataset)
from score_sde.data.readers import read_idx


def _config(**data):
  config = get_default_config()
  for key, value in data.items():
    setattr(config.data, key, value)
  return config


# ----------------------------------------------------------------------------- fixtures


def _write_cifar(directory, rng):
  """CIFAR-10 python batches like the real ones: pickled dicts, bytes keys, data uint8 [N, 3072]."""
  os.makedirs(directory)
  batches = {}
  for name, n in [(f'data_batch_{i}', 4) for i in range(1, 6)] + [('test_batch', 3)]:
    batch = {b'batch_label': name.encode(), b'labels': rng.integers(0, 10, n).tolist(),
             b'data': rng.integers(0, 256, (n, 3072), dtype=np.uint8),
             b'filenames': [f'img_{i}.png'.encode() for i in range(n)]}
    with open(os.path.join(directory, name), 'wb') as f:
      pickle.dump(batch, f, protocol=2)
    batches[name] = batch
  return batches


def _write_idx(path, array, gz):
  # magic: two zero bytes, type 0x08 (unsigned byte), ndim; so 0x00000803 / 0x00000801
  header = struct.pack('>HBB', 0, 0x08, array.ndim) + struct.pack(f'>{array.ndim}I', *array.shape)
  with (gzip.open if gz else open)(path, 'wb') as f:
    f.write(header + array.astype(np.uint8).tobytes())


def _write_mnist(root, rng):
  """Train files gzipped in root/MNIST/raw, test files plain in root (both layouts are accepted)."""
  raw = os.path.join(root, 'MNIST', 'raw')
  os.makedirs(raw)
  arrays = {}
  for prefix, n, where, gz in [('train', 5, raw, True), ('t10k', 3, root, False)]:
    images = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
    labels = rng.integers(0, 10, n).astype(np.uint8)
    suffix = '.gz' if gz else ''
    _write_idx(os.path.join(where, f'{prefix}-images-idx3-ubyte{suffix}'), images, gz)
    _write_idx(os.path.join(where, f'{prefix}-labels-idx1-ubyte{suffix}'), labels, gz)
    arrays[prefix] = images, labels
  return arrays


def _write_folder(root, rng, sizes=((40, 30), (17, 23), (31, 31), (50, 12), (9, 13), (64, 48))):
  """Odd-sized RGB PNG, grey JPG and WEBP images in class subfolders 'cat' and 'dog'."""
  paths = []
  for i, (w, h) in enumerate(sizes):
    cls = ('cat', 'dog')[i % 2]
    os.makedirs(os.path.join(root, cls), exist_ok=True)
    ext, mode = [('png', 'RGB'), ('jpg', 'L'), ('webp', 'RGB')][i % 3]
    pixels = rng.integers(0, 256, (h, w, 3) if mode == 'RGB' else (h, w), dtype=np.uint8)
    paths.append(os.path.join(root, cls, f'{i}.{ext}'))
    Image.fromarray(pixels, mode).save(paths[-1])
  return paths


# ----------------------------------------------------------------------------- registry


def test_unknown_dataset_lists_choices_and_lookup_is_case_insensitive():
  with pytest.raises(ValueError, match="unknown dataset 'nope'; choose one of: .*digits"):
    get_dataset(_config(dataset='nope').data, 'train')
  assert len(get_dataset(_config(dataset='DiGiTs').data, 'test')) == 297
  with pytest.raises(ValueError, match='split'):
    get_dataset(_config().data, 'valid')
  for name in ('digits', 'checkerboard', 'moons', 'gmm', 'swissroll', 'cifar10', 'mnist',
               'image_folder', 'celeba', 'ffhq', 'lsun', 'celebahq'):
    assert name in DATASETS


# ----------------------------------------------------------------------------- digits


def test_digits_split_values_and_labels():
  from sklearn.datasets import load_digits
  train, test = (get_dataset(_config().data, s) for s in ('train', 'test'))
  assert (len(train), len(test)) == (1500, 297)
  assert train.data.dtype == torch.uint8 and train.data.shape == (1500, 1, 16, 16)
  x, y = train[0]
  assert x.shape == (1, 16, 16) and x.dtype == torch.float32 and y.dtype == torch.int64
  assert 0 <= train.data.min() and train.data.max() == 255
  assert set(train.labels.tolist()) == set(range(10)) == set(test.labels.tolist())
  # at image_size 8 the stored values are exactly round(v * 255 / 16) of the fixed permutation
  raw = load_digits()
  order = np.random.default_rng(0).permutation(1797)
  small = get_dataset(_config(image_size=8).data, 'test')
  expected = np.rint(raw.images[order[1500:]] * 255 / 16)
  np.testing.assert_array_equal(small.data[:, 0].numpy(), expected)
  np.testing.assert_array_equal(small.labels.numpy(), raw.target[order[1500:]])
  x, _ = small[5]
  torch.testing.assert_close(x[0], torch.from_numpy(expected[5]).float() / 255)


def test_digits_grey_to_rgb_copies_the_channel():
  ds = get_dataset(_config(num_channels=3, image_size=12).data, 'test')
  x, _ = ds[3]
  assert x.shape == (3, 12, 12)
  assert torch.equal(x[0], x[1]) and torch.equal(x[0], x[2])


# ----------------------------------------------------------------------------- toys


@pytest.mark.parametrize('name', sorted(toy_data.TOYS))
def test_toys_shapes_determinism_and_range(name):
  config = _config(dataset=name, toy_size=4000)
  a, b, test = (get_dataset(config.data, split) for split in ('train', 'train', 'test'))
  assert a.data.shape == (4000, 2) and a.data.dtype == torch.float32
  assert a.labels.dtype == torch.int64 and a[0][0].shape == (2,)
  assert torch.equal(a.data, b.data) and torch.equal(a.labels, b.labels)
  assert not torch.equal(a.data, test.data)
  assert (a.data.abs() <= 4).float().mean() > 0.995
  assert get_data_scaler(_config(dataset=name, centered=True).data)(a.data) is a.data


def test_gmm_components_sit_on_the_ring():
  ds = get_dataset(_config(dataset='gmm', toy_size=8000).data, 'train')
  for c in range(8):
    mean = ds.data[ds.labels == c].mean(0)
    angle = 2 * math.pi * c / 8
    centre = toy_data.GMM_RADIUS * torch.tensor([math.cos(angle), math.sin(angle)])
    assert torch.linalg.norm(mean - centre) < 0.05
    assert abs(mean.norm() - toy_data.GMM_RADIUS) < 0.05


def test_checkerboard_labels_name_dark_squares_and_swissroll_bins_grow_outwards():
  ds = get_dataset(_config(dataset='checkerboard', toy_size=3000).data, 'train')
  col, row = ((ds.data + 4) // 2).long().unbind(1)
  assert torch.equal(col % 2, row % 2)            # only the dark cells are filled
  assert torch.equal(ds.labels, 2 * row + col // 2)
  assert torch.bincount(ds.labels).min() > 300
  roll = get_dataset(_config(dataset='swissroll', toy_size=4000).data, 'train')
  radii = [roll.data[roll.labels == b].norm(dim=1).mean() for b in range(4)]
  assert all(r0 < r1 for r0, r1 in zip(radii, radii[1:]))
  moons = get_dataset(_config(dataset='moons', toy_size=2000).data, 'train')
  assert moons.data[moons.labels == 0, 1].mean() > moons.data[moons.labels == 1, 1].mean() + 1


# ----------------------------------------------------------------------------- cifar10


@pytest.mark.parametrize('point_at_batches_dir', [False, True])
def test_cifar10_reads_real_format(tmp_path, point_at_batches_dir):
  batches = _write_cifar(tmp_path / 'cifar-10-batches-py', np.random.default_rng(0))
  root = tmp_path / 'cifar-10-batches-py' if point_at_batches_dir else tmp_path
  config = _config(dataset='cifar10', root=str(root), image_size=32, num_channels=3)
  train, test = get_dataset(config.data, 'train'), get_dataset(config.data, 'test')
  assert (len(train), len(test)) == (20, 3) and train.data.dtype == torch.uint8
  x, y = test[2]
  assert x.shape == (3, 32, 32) and x.dtype == torch.float32 and 0 <= x.min() and x.max() <= 1
  row = batches['test_batch'][b'data'][2]
  for c, h, w in [(0, 0, 0), (1, 5, 7), (2, 31, 30), (0, 17, 3)]:
    assert x[c, h, w] == row[c * 1024 + h * 32 + w] / 255
  assert y == batches['test_batch'][b'labels'][2]
  expected = sum((batches[f'data_batch_{i}'][b'labels'] for i in range(1, 6)), [])
  assert train.labels.tolist() == expected
  second = torch.from_numpy(batches['data_batch_2'][b'data'])
  assert torch.equal(train.data[4:8].reshape(4, -1), second)


def test_cifar10_grey_resize_and_flip(tmp_path):
  batches = _write_cifar(tmp_path / 'cifar-10-batches-py', np.random.default_rng(1))
  grey = get_dataset(_config(dataset='cifar10', root=str(tmp_path), image_size=32).data, 'test')
  rgb = batches['test_batch'][b'data'][0].reshape(3, 32, 32).astype(np.float64)
  luma = np.rint(0.299 * rgb[0] + 0.587 * rgb[1] + 0.114 * rgb[2])
  np.testing.assert_array_equal(grey.data[0, 0].numpy(), luma)
  config = _config(dataset='cifar10', root=str(tmp_path), image_size=16, num_channels=3,
                   random_flip=True)
  train = get_dataset(config.data, 'train')
  assert train.data.shape == (20, 3, 16, 16) and train.random_flip
  assert not get_dataset(config.data, 'test').random_flip
  assert torch.equal(train.get(1, flip=True)[0], train.get(1)[0].flip(-1))


def test_missing_files_give_one_line_errors(tmp_path):
  for name, needles in [('cifar10', ['data_batch_1', 'cifar-10-python.tar.gz']),
                        ('mnist', ['train-images-idx3-ubyte', 'mnist']),
                        ('ffhq', ['images'])]:
    with pytest.raises(FileNotFoundError) as info:
      get_dataset(_config(dataset=name, root=str(tmp_path / 'nowhere')).data, 'train')
    message = str(info.value)
    assert '\n' not in message and str(tmp_path / 'nowhere') in message
    assert all(needle in message for needle in needles), message


# ----------------------------------------------------------------------------- mnist


def test_mnist_idx_plain_and_gz_padding_and_resize(tmp_path):
  arrays = _write_mnist(str(tmp_path), np.random.default_rng(2))
  config = _config(dataset='mnist', root=str(tmp_path), image_size=32)
  train, test = get_dataset(config.data, 'train'), get_dataset(config.data, 'test')
  assert (len(train), len(test)) == (5, 3)
  images, labels = arrays['train']
  x, y = train[4]
  assert x.shape == (1, 32, 32) and y == labels[4]
  torch.testing.assert_close(x[0, 2:30, 2:30], torch.from_numpy(images[4]).float() / 255)
  assert x[0, :2].abs().sum() == 0 and x[0, :, 30:].abs().sum() == 0
  assert test.labels.tolist() == arrays['t10k'][1].tolist()
  exact = get_dataset(_config(dataset='mnist', root=str(tmp_path), image_size=28).data, 'test')
  assert torch.equal(exact.data[:, 0], torch.from_numpy(arrays['t10k'][0]))
  rgb16 = get_dataset(_config(dataset='mnist', root=str(tmp_path), image_size=16,
                              num_channels=3).data, 'train')
  assert rgb16[0][0].shape == (3, 16, 16)
  bad = tmp_path / 'bad'
  bad.write_bytes(b'\x01\x02\x03\x04')
  with pytest.raises(ValueError, match='not an IDX file'):
    read_idx(str(bad))


# ----------------------------------------------------------------------------- image folders


def test_image_folder_split_labels_and_shapes(tmp_path):
  paths = _write_folder(str(tmp_path), np.random.default_rng(3))
  config = _config(dataset='celeba', root=str(tmp_path), image_size=16, num_channels=3)
  train, test = get_dataset(config.data, 'train'), get_dataset(config.data, 'test')
  assert (len(train), len(test)) == (5, 1)
  assert sorted(train.files + test.files) == sorted(paths)
  for ds in (train, test):
    for i in range(len(ds)):
      x, y = ds[i]
      assert x.shape == (3, 16, 16) and x.dtype == torch.float32 and 0 <= x.min() <= x.max() <= 1
      assert y.dtype == torch.int64 and y == ('cat', 'dog').index(ds.files[i].split(os.sep)[-2])
  grey = get_dataset(_config(dataset='image_folder', root=str(tmp_path), image_size=8).data, 'train')
  assert grey[0][0].shape == (1, 8, 8)


def test_image_folder_train_test_dirs_centre_crop_and_flip(tmp_path):
  wide = np.zeros((10, 30, 3), np.uint8)
  wide[:, 10:20] = 255                          # only the centre square is white
  wide[0, 10] = (0, 128, 255)                   # one marked pixel at the top-left of that square
  for split in ('train', 'test'):
    os.makedirs(tmp_path / split)
    Image.fromarray(wide).save(tmp_path / split / 'a.png')
  config = _config(dataset='lsun', root=str(tmp_path), image_size=10, num_channels=3,
                   random_flip=True)
  train, test = get_dataset(config.data, 'train'), get_dataset(config.data, 'test')
  assert (len(train), len(test)) == (1, 1) and train.labels == [0]
  x, _ = test[0]
  assert torch.equal(x[:, 0, 0], torch.tensor([0, 128, 255]) / 255)
  assert (x[:, 1:] == 1).all()
  assert torch.equal(train.get(0, flip=True)[0], x.flip(-1))


# ----------------------------------------------------------------------------- scaling


def test_scalers_are_inverse_and_map_to_unit_interval():
  x = torch.rand(4, 1, 8, 8)
  x[0, 0, 0, :2] = torch.tensor([0.0, 1.0])
  scaler, inverse = get_data_scaler(_config().data), get_data_inverse_scaler(_config().data)
  z = scaler(x)
  assert z.min() == -1 and z.max() == 1 and z[0, 0, 0, 0] == -1
  torch.testing.assert_close(inverse(z), x)
  torch.testing.assert_close(z, 2 * x - 1)
  plain = _config(centered=False)
  assert get_data_scaler(plain.data)(x) is x and get_data_inverse_scaler(plain.data)(x) is x


def test_dequantize_stays_in_its_bin():
  k = torch.arange(256.).repeat(200)
  x = dequantize(k / 255, torch.Generator().manual_seed(0))
  assert x.dtype == torch.float32
  assert (x >= k / 256).all() and (x < (k + 1) / 256).all()
  u = x * 256 - k
  assert abs(u.mean() - 0.5) < 0.01 and abs(u.var() - 1 / 12) < 0.01
  again = dequantize(k / 255, torch.Generator().manual_seed(0))
  assert torch.equal(x, again)
  images = torch.randint(0, 256, (3, 3, 4, 4)) / 255
  assert dequantize(images).shape == images.shape


def test_dequantize_clamps_float_rounding_at_the_bin_edge(monkeypatch):
  # u = 1 - 2^-24 is a legal draw of torch.rand; in float32 255 + u rounds to 256
  largest = lambda shape, generator=None, **kw: torch.full(shape, 1 - 2**-24, **kw)
  monkeypatch.setattr(torch, 'rand', largest)
  k = torch.arange(256.)
  x = dequantize(k / 255)
  assert (x < (k + 1) / 256).all() and (x >= k / 256).all() and x.max() < 1


# ----------------------------------------------------------------------------- InfiniteLoader


def _points(n):
  return InMemoryDataset(torch.arange(n, dtype=torch.float32)[:, None], torch.arange(n) % 3)


def _take(loader, n):
  return [next(loader) for _ in range(n)]


def _ids(batches):
  return torch.cat([x[:, 0] for x, _ in batches]).long()


def test_loader_covers_every_item_once_per_epoch():
  loader = InfiniteLoader(_points(53), 10, seed=1)
  assert loader.batches_per_epoch == 5
  first, second = _ids(_take(loader, 5)), _ids(_take(loader, 5))
  assert len(set(first.tolist())) == 50 and len(set(second.tolist())) == 50
  assert not torch.equal(first, second)
  full = InfiniteLoader(_points(50), 10, seed=1)
  x, y = next(full)
  assert x.shape == (10, 1) and y.dtype == torch.int64 and torch.equal(y, x[:, 0].long() % 3)
  assert torch.equal(torch.sort(torch.cat([x[:, 0].long(), _ids(_take(full, 4))]))[0],
                     torch.arange(50))
  ordered = InfiniteLoader(_points(23), 10, seed=0, shuffle=False, drop_last=False)
  assert [len(b[0]) for b in _take(ordered, 3)] == [10, 10, 3]


def test_loader_is_deterministic_and_ignores_global_rng():
  torch.manual_seed(0)
  a = _ids(_take(InfiniteLoader(_points(40), 8, seed=7), 12))
  torch.manual_seed(123)
  b = _ids(_take(InfiniteLoader(_points(40), 8, seed=7), 12))
  c = _ids(_take(InfiniteLoader(_points(40), 8, seed=8), 12))
  assert torch.equal(a, b) and not torch.equal(a, c)


@pytest.mark.parametrize('consumed', [3, 5, 7, 10])
def test_loader_resumes_with_identical_batches(consumed):
  flips = get_dataset(_config(random_flip=True, image_size=8).data, 'train')
  for dataset in (_points(53), flips):
    loader = InfiniteLoader(dataset, 10 if len(dataset) < 100 else 300, seed=3)
    _take(loader, consumed)
    state = loader.state_dict()
    expected = _take(loader, 6)
    resumed = InfiniteLoader(dataset, 10 if len(dataset) < 100 else 300, seed=3)
    resumed.load_state_dict(state)
    for (x, y), (x2, y2) in zip(expected, _take(resumed, 6)):
      assert torch.equal(x, x2) and torch.equal(y, y2)
  assert state == {'epoch': consumed // 5 - (consumed % 5 == 0), 'position': consumed % 5 or 5}


def test_loader_shards_ranks_disjointly():
  for n in (40, 41):
    shards = [_ids(_take(InfiniteLoader(_points(n), 5, seed=4, rank=r, world_size=2), 4))
              for r in (0, 1)]
    assert not set(shards[0].tolist()) & set(shards[1].tolist())
    assert len(set(torch.cat(shards).tolist())) == 40
  with pytest.raises(ValueError):
    InfiniteLoader(_points(10), 5, seed=0, rank=2, world_size=2)
  with pytest.raises(ValueError):
    InfiniteLoader(_points(9), 5, seed=0, world_size=2)


class _ReadThrough(torch.utils.data.Dataset):
  """Hides `batch`/`to` so that InfiniteLoader takes its DataLoader path."""

  def __init__(self, dataset):
    self.dataset, self.random_flip = dataset, dataset.random_flip

  def __len__(self):
    return len(self.dataset)

  def get(self, index, flip=False):
    return self.dataset.get(index, flip)


@pytest.mark.parametrize('num_workers', [0, 1])
def test_loader_flips_are_seeded_and_paths_agree(num_workers):
  dataset = get_dataset(_config(random_flip=True, image_size=8).data, 'train')
  fast = _take(InfiniteLoader(dataset, 64, seed=5, device='cpu'), 30)
  slow_loader = InfiniteLoader(_ReadThrough(dataset), 64, seed=5, num_workers=num_workers)
  slow = _take(slow_loader, 25)
  for (x, y), (x2, y2) in zip(fast, slow):
    assert torch.equal(x, x2) and torch.equal(y, y2)
  x, _ = fast[0]
  plain = dataset.data[InfiniteLoader(dataset, 64, seed=5).plan(0, 0)[0]].float() / 255
  flipped = (x == plain.flip(-1)).flatten(1).all(1) & ~(x == plain).flatten(1).all(1)
  assert 10 < flipped.sum() < 54                  # about half of the batch is flipped
  state = slow_loader.state_dict()                 # resume the DataLoader path mid-epoch
  slow_loader.load_state_dict({'epoch': 0, 'position': 20})
  assert torch.equal(next(slow_loader)[0], fast[20][0])
  slow_loader.load_state_dict(state)
  assert all(torch.equal(next(slow_loader)[0], fast[i][0]) for i in range(25, 30))
