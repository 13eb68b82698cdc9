"""Small helpers shared by every module: rank-agnostic broadcasting and flattening."""
from __future__ import annotations

import torch


def append_dims(v: torch.Tensor, ndim: int) -> torch.Tensor:
  """Append trailing singleton dims so that a `[B]` tensor broadcasts against `[B, ...]`.

  Args:
    v: tensor of shape `[B]` (or a scalar tensor).
    ndim: rank of the tensor it must broadcast against.
  Returns:
    `v` viewed as `[B, 1, ..., 1]` with `ndim` dims in total.
  """
  if v.ndim == 0:
    return v
  if v.ndim > ndim:
    raise ValueError(f'cannot broadcast a tensor of shape {tuple(v.shape)} to rank {ndim}')
  return v.reshape(v.shape + (1,) * (ndim - v.ndim))


def bcast(v: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
  """`append_dims(v, x.ndim)`: a per-sample `[B]` coefficient shaped to multiply `x`."""
  return append_dims(v, x.ndim)


def noisy(alpha: torch.Tensor, sigma: torch.Tensor, x0: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
  """The forward perturbation x_t = alpha x0 + sigma z, with per-sample `[B]` coefficients
  (Song et al. 2021, Eq. 29; Ho et al. 2020, Eq. 4): the one place noisy samples are made.

  Args:
    alpha, sigma: `[B]` (or scalar) kernel coefficients.
    x0, z: data and standard Gaussian noise, `[B, ...]`.
  Returns:
    x_t `[B, ...]`.
  """
  return bcast(alpha, x0) * x0 + bcast(sigma, x0) * z


def batch_sum(x: torch.Tensor) -> torch.Tensor:
  """Sum over every dim but the first: `[B, ...] -> [B]`."""
  return x.reshape(x.shape[0], -1).sum(dim=1)


def batch_norm2(x: torch.Tensor) -> torch.Tensor:
  """Per-sample Euclidean norm: `[B, ...] -> [B]`."""
  return x.reshape(x.shape[0], -1).norm(dim=1)


def num_dims(x: torch.Tensor) -> int:
  """Number of data dimensions D of a batch `[B, ...]`."""
  return x[0].numel()


def full_t(t, batch: int, like: torch.Tensor) -> torch.Tensor:
  """A `[B]` float tensor of time `t` on the device/dtype of `like`."""
  return torch.full((batch,), float(t), device=like.device, dtype=like.dtype)


def randn(shape, generator=None, device=None, dtype=torch.float32) -> torch.Tensor:
  """Gaussian noise from an optional generator; the generator's device wins if given."""
  if generator is not None:
    device = generator.device
  return torch.randn(shape, generator=generator, device=device, dtype=dtype)


def randn_like(x: torch.Tensor, generator=None) -> torch.Tensor:
  """Gaussian noise shaped like `x`, drawn on the generator's device then moved to x's."""
  return randn(x.shape, generator, x.device, x.dtype).to(x.device)


def cached_to(owner, name: str, device, dtype=None) -> torch.Tensor:
  """`owner.<name>` (a tensor) on `device` (and in `dtype`), copied once per (device, dtype) and
  kept on `owner`, so that a hot loop indexes a device-resident table without host copies."""
  cache = owner.__dict__.setdefault('_cached_to', {})
  key = (name, str(device), dtype)
  if key not in cache:
    cache[key] = getattr(owner, name).to(device=device, dtype=dtype)
  return cache[key]
