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


def setup(device: torch.device) -> Dist:
  """Join the torchrun process group if WORLD_SIZE > 1 (else a no-op).

  On CUDA each process takes GPU LOCAL_RANK and the backend is NCCL; on CPU it is gloo.
  """
  present = [k for k in TORCHRUN_VARS if os.environ.get(k)]
  if present and len(present) < len(TORCHRUN_VARS):
    missing = [k for k in TORCHRUN_VARS if k not in present]
    raise UserError(f"a half-set torchrun environment: {', '.join(present)} set but "
                    f"{', '.join(missing)} not; launch with torchrun, or unset them for one process")
  world = int(os.environ.get('WORLD_SIZE', '1'))
  if world <= 1:
    return Dist(device=device)
  rank, local = int(os.environ['RANK']), int(os.environ.get('LOCAL_RANK', '0'))
  if device.type == 'cuda':
    device = torch.device('cuda', local)
    torch.cuda.set_device(device)
  if not torch_dist.is_initialized():
    backend = 'nccl' if device.type == 'cuda' else 'gloo'
    torch_dist.init_process_group(backend, timeout=datetime.timedelta(minutes=30))
  return Dist(rank, world, local, device)


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
