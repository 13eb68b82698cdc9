"""A score function replayed from a captured CUDA graph (config `runtime.cuda_graphs`).

A fixed-step sampler calls the same network on inputs of one shape hundreds of times; each
call launches hundreds of small kernels from Python. `GraphedScore` captures one call of
`score_fn(x [B, ...], t [B]) -> [B, ...]` per (shape, dtype, autocast) into a `torch.cuda.CUDAGraph`
on static input buffers, then serves every later call by copying the inputs in, replaying the
graph and returning a copy of the static output (multistep solvers keep earlier outputs, which a
later replay would otherwise overwrite). Nothing the solver sees changes: the samples equal the
eager ones up to the kernels' own nondeterminism.

Calls that cannot be replayed run eagerly: a tensor not on CUDA, a call that needs gradients
(classifier guidance differentiates the classifier), or a capture that fails (a host sync
inside the network, say; logged once). The score and variance of a learned-variance model
(`score_and_variance`) stay eager.
"""
from __future__ import annotations

import logging

import torch


def cuda_capture(fn, x: torch.Tensor, t: torch.Tensor, warmup: int = 2):
  """Capture `fn(x, t)` on static `x`, `t` into a CUDA graph: returns (replay, static output).
  Warm-up calls run on a side stream first, as `torch.cuda.graph` requires."""
  side = torch.cuda.Stream(device=x.device)
  side.wait_stream(torch.cuda.current_stream(x.device))
  with torch.cuda.stream(side):
    for _ in range(warmup):
      fn(x, t)
  torch.cuda.current_stream(x.device).wait_stream(side)
  graph = torch.cuda.CUDAGraph()
  with torch.cuda.graph(graph):
    out = fn(x, t)
  return graph.replay, out


class GraphedScore:
  """`score_fn` served from captured graphs (see the module docstring).

  Args:
    score_fn: `score_fn(x [B, ...], t [B]) -> [B, ...]`, free of host syncs.
    capture: `capture(fn, x, t) -> (replay, out)`; `cuda_capture` by default (tests pass a
      stand-in that replays by calling `fn` into the same static output).
    enabled: when False every call is eager (the wrapper is then a no-op).
  """

  def __init__(self, score_fn, capture=None, enabled: bool = True):
    self.score_fn, self.enabled = score_fn, enabled
    self._capture, self._cuda_only = capture or cuda_capture, capture is None
    self._graphs: dict = {}
    self.captures = self.replays = 0
    both = getattr(score_fn, 'score_and_variance', None)
    if both is not None:
      self.score_and_variance = both

  def _key(self, x: torch.Tensor, t: torch.Tensor):
    kind = x.device.type
    amp = torch.is_autocast_enabled(kind) and torch.get_autocast_dtype(kind)
    return tuple(x.shape), x.dtype, t.dtype, str(x.device), amp

  def _replayable(self, x: torch.Tensor) -> bool:
    if not self.enabled or torch.is_grad_enabled():
      return False
    return x.is_cuda or not self._cuda_only

  def __call__(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    if not self._replayable(x):
      return self.score_fn(x, t)
    key = self._key(x, t)
    entry = self._graphs.get(key)
    if entry is None:
      entry = self._graphs[key] = self._new_graph(x, t)
    if entry is False:  # its capture failed: eager from now on
      return self.score_fn(x, t)
    static_x, static_t, replay, out = entry
    static_x.copy_(x)
    static_t.copy_(t)
    replay()
    self.replays += 1
    return out.clone()

  def _new_graph(self, x: torch.Tensor, t: torch.Tensor):
    static_x, static_t = x.clone(), t.clone()
    try:
      replay, out = self._capture(self.score_fn, static_x, static_t)
    except RuntimeError as e:
      logging.warning('runtime.cuda_graphs: capturing the score function failed (%s); '
                      'running it eagerly', str(e).splitlines()[0] if str(e) else type(e).__name__)
      return False
    self.captures += 1
    return static_x, static_t, replay, out
