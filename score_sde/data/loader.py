"""`InfiniteLoader`: an endless, deterministic, resumable and shardable iterator of batches."""
from __future__ import annotations

from typing import Optional

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler


def mix_seed(*words: int) -> int:
  """A 63-bit seed from integers via numpy's SeedSequence (stable across runs and platforms)."""
  state = np.random.SeedSequence([int(w) % 2**64 for w in words]).generate_state(1, np.uint64)
  return int(state[0]) >> 1


class InfiniteLoader:
  """Endless iterator of `(x, y)` batches: x `[B, ...]` float32, y int64 `[B]` (on `device`).

  Order. Epoch e visits `randperm(N)` drawn from a CPU generator seeded with (seed, e) (or
  `arange(N)` if not shuffle); torch's global RNG is never used. The permutation is cut (drop_last)
  or padded by wrapping around (otherwise) to a multiple of world_size, and rank r takes
  `perm[r::world_size]`, so all ranks get the same number of batches; with drop_last their items
  are disjoint. Batch p of an epoch is `shard[p * B:(p + 1) * B]`; with drop_last a short final
  batch is dropped, otherwise it is yielded.

  Resuming. `state_dict()` is `{'epoch': e, 'position': p}`, p = batches of epoch e already
  yielded; a loader given it by `load_state_dict` yields exactly the batches that would have
  come next.

  Random flips. For a dataset with `random_flip` true and a `get(index, flip)` method (the ones
  of `score_sde.data.datasets`), the loader decides the flips: for batch p of epoch e on rank r they are
  `torch.rand(len(batch), generator=Generator().manual_seed(mix_seed(seed, e, p, r))) < 0.5`.
  Both paths below use these flips, so they give identical batches and resumption is exact.
  Other datasets are read through `dataset[i]` and flip (or not) on their own.

  Paths. A dataset with `batch(indices, flips)` and `to(device)` (`InMemoryDataset`), when
  num_workers == 0, is moved to `device` once and each batch is one gather (no per-item Python).
  Otherwise a `DataLoader` with a batch sampler, num_workers, pin_memory and persistent workers
  reads the items, and the batch is moved to `device` if given.
  """

  def __init__(self, dataset: Dataset, batch_size: int, *, seed: int, shuffle: bool = True,
               drop_last: bool = True, rank: int = 0, world_size: int = 1, num_workers: int = 0,
               pin_memory: bool = False, device: Optional[torch.device | str] = None):
    if not 0 <= rank < world_size:
      raise ValueError(f'need 0 <= rank < world_size, got rank={rank}, world_size={world_size}')
    n = len(dataset)
    per_rank = n // world_size if drop_last else -(-n // world_size)
    self.batches_per_epoch = per_rank // batch_size if drop_last else -(-per_rank // batch_size)
    if self.batches_per_epoch == 0:
      raise ValueError(f'{n} items give no batch of {batch_size} on each of {world_size} rank(s)')
    self.dataset, self.batch_size, self.seed, self.shuffle = dataset, batch_size, seed, shuffle
    self.rank, self.world_size, self._per_rank = rank, world_size, per_rank
    self.device = torch.device(device) if device is not None else None
    self.epoch, self.position = 0, 0
    self._flip = bool(getattr(dataset, 'random_flip', False)) and hasattr(dataset, 'get')
    self._shard_cache: tuple[int, torch.Tensor] = (-1, torch.empty(0))
    self._iterator = None
    self._source, self._loader = None, None
    if num_workers == 0 and hasattr(dataset, 'batch') and hasattr(dataset, 'to'):
      self._source = dataset.to(self.device) if self.device is not None else dataset
    else:
      self._pin = pin_memory
      self._sampler_start = (0, 0)
      self._loader = DataLoader(
          _LoaderFlips(dataset) if self._flip else dataset, batch_sampler=_EpochSampler(self),
          num_workers=num_workers, pin_memory=pin_memory, persistent_workers=num_workers > 0,
          generator=torch.Generator().manual_seed(mix_seed(seed, rank, 1)))

  def state_dict(self) -> dict[str, int]:
    """`{'epoch': e, 'position': p}`: the next batch is batch p of epoch e."""
    return {'epoch': self.epoch, 'position': self.position}

  def load_state_dict(self, state: dict[str, int]) -> None:
    """Continue from a `state_dict()`; the next batch is the one the saving loader would yield."""
    epoch, position = int(state['epoch']), int(state['position'])
    if epoch < 0 or not 0 <= position <= self.batches_per_epoch:
      raise ValueError(f'bad loader state {state} ({self.batches_per_epoch} batches per epoch)')
    self.epoch, self.position, self._iterator = epoch, position, None

  def __iter__(self) -> InfiniteLoader:
    return self

  def __next__(self) -> tuple[torch.Tensor, torch.Tensor]:
    if self.position >= self.batches_per_epoch:
      self.epoch, self.position, self._iterator = self.epoch + 1, 0, None
    if self._source is not None:
      indices, flips = self.plan(self.epoch, self.position)
      device = self._source.labels.device
      x, y = self._source.batch(indices.to(device), None if flips is None else flips.to(device))
    else:
      if self._iterator is None:   # (re)start the DataLoader at the current batch
        self._sampler_start = (self.epoch, self.position)
        self._iterator = iter(self._loader)
      x, y = next(self._iterator)
      if self.device is not None:
        x = x.to(self.device, non_blocking=self._pin)
        y = y.to(self.device, non_blocking=self._pin)
    self.position += 1
    return x, y

  def shard(self, epoch: int) -> torch.Tensor:
    """This rank's dataset indices for `epoch`, int64 `[per_rank]` (cached for the last epoch)."""
    if self._shard_cache[0] != epoch:
      n = len(self.dataset)
      if self.shuffle:
        generator = torch.Generator().manual_seed(mix_seed(self.seed, epoch))
        perm = torch.randperm(n, generator=generator)
      else:
        perm = torch.arange(n)
      total = self._per_rank * self.world_size
      perm = perm.repeat(-(-total // n))[:total]   # cut, or pad by wrapping around
      self._shard_cache = (epoch, perm[self.rank::self.world_size])
    return self._shard_cache[1]

  def plan(self, epoch: int, position: int) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
    """Indices (int64 `[B]`) and flips (bool `[B]`, or None) of batch `position` of `epoch`."""
    indices = self.shard(epoch)[position * self.batch_size:(position + 1) * self.batch_size]
    if not self._flip:
      return indices, None
    generator = torch.Generator().manual_seed(mix_seed(self.seed, epoch, position, self.rank))
    return indices, torch.rand(len(indices), generator=generator) < 0.5


class _EpochSampler(Sampler):
  """Batch sampler for the DataLoader path: from the loader's `_sampler_start` (epoch, position)
  to the end of that epoch, yields index lists (or (index, flip) lists when the loader flips)."""

  def __init__(self, loader: InfiniteLoader):
    self.loader = loader

  def __len__(self) -> int:
    return self.loader.batches_per_epoch

  def __iter__(self):
    epoch, start = self.loader._sampler_start   # read now, not lazily
    return (self._items(epoch, p) for p in range(start, self.loader.batches_per_epoch))

  def _items(self, epoch: int, position: int) -> list:
    indices, flips = self.loader.plan(epoch, position)
    return indices.tolist() if flips is None else list(zip(indices.tolist(), flips.tolist()))


class _LoaderFlips(Dataset):
  """Reads `(index, flip)` items through `dataset.get(index, flip)`."""

  def __init__(self, dataset: Dataset):
    self.dataset = dataset

  def __len__(self) -> int:
    return len(self.dataset)

  def __getitem__(self, item: tuple[int, bool]):
    return self.dataset.get(*item)
