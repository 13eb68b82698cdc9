"""Process groups for `torchrun` (DistributedDataParallel): NCCL on CUDA, gloo on CPU.

`torchrun --nproc_per_node=K main.py --mode train ...` sets RANK, LOCAL_RANK and WORLD_SIZE;
`setup()` reads them and joins the group. Without them (plain `python main.py`) it returns a
single-process `Dist` and nothing is initialised, so the same code runs either way.
"""
from __future__ import annotations

import dataclasses
import datetime
import os

import torch
import torch.distributed as torch_dist

from score_sde.errors import UserError

TORCHRUN_VARS = ('RANK', 'WORLD_SIZE', 'MASTER_ADDR', 'MASTER_PORT')
# Joining the group: a missing or mis-numbered peer is an error after this long, not a hang.
RENDEZVOUS_TIMEOUT = datetime.timedelta(seconds=60)
# Each collective afterwards (both backends): rank 0 alone may spend minutes on a checkpoint or
# on snapshot samples while the others wait at the next barrier / all-reduce.
COLLECTIVE_TIMEOUT = datetime.timedelta(minutes=30)


@dataclasses.dataclass(frozen=True)
class Dist:
  """rank, world_size and local_rank of this process; `device` is the one it should use."""
  rank: int = 0
  world_size: int = 1
  local_rank: int = 0
  device: torch.device = torch.device('cpu')

  @property
  def is_main(self) -> bool:
    return self.rank == 0

  @property
  def enabled(self) -> bool:
    return self.world_size > 1


def _int_var(name: str, default: str | None = None) -> int:
  """Integer value of environment variable `name` (a one-line UserError if it is not one)."""
  text = os.environ.get(name, default)
  try:
    return int(text)
  except (TypeError, ValueError):
    raise UserError(f'{name}={text!r} is not an integer; launch with torchrun, or unset the '
                    'torchrun variables for one process') from None


def _ranks_from_env(device: torch.device) -> tuple[int, int, int]:
  """(rank, world_size, local_rank) from the torchrun variables, range-checked *before* any
  rendezvous: a rank that can never be matched would otherwise wait out the group timeout."""
  present = [k for k in TORCHRUN_VARS if os.environ.get(k)]
  if present and len(present) < len(TORCHRUN_VARS):
    missing = [k for k in TORCHRUN_VARS if k not in present]
    raise UserError(f"a half-set torchrun environment: {', '.join(present)} set but "
                    f"{', '.join(missing)} not; launch with torchrun, or unset them for one process")
  if not present:
    return 0, 1, 0
  world, rank, local = _int_var('WORLD_SIZE'), _int_var('RANK'), _int_var('LOCAL_RANK', '0')
  port = _int_var('MASTER_PORT')
  env = f'RANK={rank}, WORLD_SIZE={world}, LOCAL_RANK={local}'
  if world < 1 or not 0 <= rank < world:
    raise UserError(f'{env}: WORLD_SIZE must be >= 1 and RANK in [0, WORLD_SIZE); launch with '
                    'torchrun, or unset them for one process')
  local_world = _int_var('LOCAL_WORLD_SIZE', str(world))
  if not 0 <= local < min(local_world, world):
    raise UserError(f'{env}: LOCAL_RANK must be in [0, {min(local_world, world)}) (the processes '
                    'of this machine); launch with torchrun')
  if device.type == 'cuda' and world > 1 and local >= torch.cuda.device_count():
    raise UserError(f'{env}: LOCAL_RANK names a GPU but this machine has '
                    f'{torch.cuda.device_count()}; start at most that many processes per machine')
  if not 0 < port < 2 ** 16:
    raise UserError(f'MASTER_PORT={port} is not a port number (1..65535)')
  return rank, world, local


def setup(device: torch.device, rendezvous_timeout: datetime.timedelta = RENDEZVOUS_TIMEOUT) -> Dist:
  """Join the torchrun process group if WORLD_SIZE > 1 (else a no-op).

  On CUDA each process takes GPU LOCAL_RANK and the backend is NCCL; on CPU it is gloo. Joining
  (finding MASTER_ADDR:MASTER_PORT and every peer) must finish within `rendezvous_timeout`, else
  a one-line UserError; afterwards each collective may wait COLLECTIVE_TIMEOUT (rank 0 alone
  writes checkpoints and snapshot samples while the others wait)."""
  rank, world, local = _ranks_from_env(device)
  if world <= 1:
    return Dist(device=device)
  if device.type == 'cuda':
    device = torch.device('cuda', local)
    torch.cuda.set_device(device)
  if not torch_dist.is_initialized():
    _join(rank, world, 'nccl' if device.type == 'cuda' else 'gloo', rendezvous_timeout)
  return Dist(rank, world, local, device)


def _join(rank: int, world: int, backend: str, timeout: datetime.timedelta) -> None:
  """init_process_group with a short rendezvous and the long COLLECTIVE_TIMEOUT afterwards."""
  where = f"{os.environ['MASTER_ADDR']}:{os.environ['MASTER_PORT']}"
  try:
    store, _, _ = next(torch_dist.rendezvous('env://', rank, world, timeout=timeout))
    torch_dist.init_process_group(backend, store=torch_dist.PrefixStore('default_pg', store),
                                  rank=rank, world_size=world, timeout=COLLECTIVE_TIMEOUT)
  except (RuntimeError, ValueError) as e:  # DistStoreError, DistNetworkError, gloo errors
    why = ' '.join(str(e).split())[:300]
    raise UserError(f'rank {rank} of {world} could not join the process group at {where} within '
                    f'{timeout.total_seconds():.0f} s ({why}); start all WORLD_SIZE ranks with the '
                    'same MASTER_ADDR / MASTER_PORT (torchrun does)') from None
  store.set_timeout(COLLECTIVE_TIMEOUT)  # later store look-ups (NCCL's lazy set-up) may wait


def barrier(dist: Dist) -> None:
  if dist.enabled:
    torch_dist.barrier()


def mean_over_ranks(value: torch.Tensor, dist: Dist) -> torch.Tensor:
  """The mean of a tensor over all ranks (a copy; the input itself is unchanged)."""
  if not dist.enabled:
    return value.detach().clone()
  out = value.detach().clone()
  torch_dist.all_reduce(out, op=torch_dist.ReduceOp.SUM)
  return out / dist.world_size


def max_over_ranks(value: torch.Tensor, dist: Dist) -> torch.Tensor:
  """The elementwise maximum of a same-shaped tensor over all ranks (a copy)."""
  out = value.detach().clone()
  if dist.enabled:
    torch_dist.all_reduce(out, op=torch_dist.ReduceOp.MAX)
  return out


def gather_over_ranks(value: torch.Tensor, dist: Dist) -> torch.Tensor:
  """The rank-ordered concatenation (dim 0) of a same-shaped tensor from every rank."""
  if not dist.enabled:
    return value.detach().clone()
  parts = [torch.empty_like(value) for _ in range(dist.world_size)]
  torch_dist.all_gather(parts, value.detach().contiguous())
  return torch.cat(parts)


def teardown(dist: Dist) -> None:
  if dist.enabled and torch_dist.is_initialized():
    torch_dist.destroy_process_group()


# ------------------------------------------------- sharded work: sample / eval / likelihood / inverse
def my_shards(num_shards: int, dist: Dist) -> range:
  """The shard indices this rank works on: i with i % world_size == rank (all of them on one
  process). A shard's content depends only on its index and the seed, never on the rank."""
  return range(dist.rank, num_shards, dist.world_size)


def failed_rank(failed: bool, dist: Dist) -> int | None:
  """The lowest rank for which `failed` is True (every rank learns it; an all-reduce, so also a
  barrier), or None."""
  if not dist.enabled:
    return 0 if failed else None
  flag = torch.tensor([dist.world_size - dist.rank if failed else 0], device=dist.device)
  torch_dist.all_reduce(flag, op=torch_dist.ReduceOp.MAX)
  return None if int(flag) == 0 else dist.world_size - int(flag)


def agree(dist: Dist, fn, what: str, main_only: bool = False):
  """`fn()` on every rank (or on rank 0 only, the others waiting), then a barrier at which the
  ranks learn whether it raised anywhere: the failing rank re-raises its own error, the others a
  one-line UserError naming it, so no rank waits out the collective timeout at a later barrier.
  Returns fn's result (None where it did not run)."""
  error, result = None, None
  try:
    if dist.is_main or not main_only:
      result = fn()
  except BaseException as e:  # noqa: B902 (KeyboardInterrupt too: the others must not hang)
    error = e
  bad = failed_rank(error is not None, dist) if dist.enabled else None
  if error is not None:
    raise error
  if bad is not None:
    raise UserError(f'rank {bad} of {dist.world_size} failed while {what} (its error is above); '
                    'this rank stops too')
  return result


def gather_objects(obj, dist: Dist) -> list:
  """[obj of rank 0, obj of rank 1, ...] on every rank (pickled; small results only)."""
  if not dist.enabled:
    return [obj]
  out = [None] * dist.world_size
  torch_dist.all_gather_object(out, obj)
  return out


def gather_shards(mine: list, dist: Dist) -> list:
  """Every rank's `(shard index, ...)` tuples (this rank's are `mine`), merged in index order."""
  return sorted((p for got in gather_objects(mine, dist) for p in got), key=lambda p: p[0])


class ranks:
  """`with ranks(device) as dist:` joins the torchrun group (setup) and leaves it at the end."""

  def __init__(self, device: torch.device):
    self.device = device
    self.dist: Dist | None = None

  def __enter__(self) -> Dist:
    self.dist = setup(self.device)
    return self.dist

  def __exit__(self, *exc) -> None:
    teardown(self.dist)
