"""Graceful stops: SIGTERM / SIGINT turned into a flag the training loop polls, and the
agreement of the DDP ranks on it (all ranks must stop, and save, at the same step)."""
from __future__ import annotations

import signal
import time

import torch

from score_sde.runtime import distributed


class StopSignals:
  """Context manager: SIGTERM / SIGINT set `.received` (the signal number) instead of killing
  the process, so the loop can save a checkpoint at the current step and exit cleanly. A
  second signal of the same kind stops at once."""

  SIGNALS = (signal.SIGTERM, signal.SIGINT)

  def __init__(self):
    self.received, self._old = None, {}

  def _handle(self, signum, frame):
    if self.received is not None:
      signal.signal(signum, self._old.get(signum, signal.SIG_DFL))
      raise KeyboardInterrupt
    self.received = signum

  def __enter__(self):
    for s in self.SIGNALS:
      try:
        self._old[s] = signal.signal(s, self._handle)
      except ValueError:  # not the main thread: leave the default behaviour
        pass
    return self

  def __exit__(self, *exc):
    for s, old in self._old.items():
      signal.signal(s, old)
    return False


class StopAgreement:
  """Whether any rank received a stop signal, agreed by all ranks at the same step.

  One process: the local flag itself, every step. Several ranks: a MAX all-reduce of
  [flag, interval] (a collective and a host sync) at agreed steps only, about every `period_s`
  seconds of training whatever training.log_freq is, so that the ranks stop and save well
  within the grace period torchrun gives after forwarding a SIGTERM (30 s) and no step pays a
  host sync. Rank 0 proposes `interval`, the number of steps to the next check, from its
  measured time per step (at most doubling from one check to the next; every rank adds 0),
  so every rank knows the same next step to check at.
  """

  def __init__(self, dist: distributed.Dist, device: torch.device, period_s: float = 1.0,
               max_interval: int = 100_000):
    self.dist, self.device, self.period_s, self.max_interval = dist, device, period_s, max_interval
    self.next_step, self.interval = None, 1   # None: check at the first call
    self._since = None                        # (monotonic time, step) of the last check

  def __call__(self, step: int, local: bool) -> bool:
    """Called once per loop iteration with the current step and this rank's flag."""
    if not self.dist.enabled:
      return local
    if self.next_step is not None and step < self.next_step:
      return False
    proposal = self._propose(step) if self.dist.is_main else 0
    mine = torch.tensor([1.0 if local else 0.0, float(proposal)], device=self.device)
    stop, interval = distributed.max_over_ranks(mine, self.dist).tolist()
    self.interval = max(1, int(interval))
    self.next_step, self._since = step + self.interval, (time.monotonic(), step)
    return stop > 0

  def _propose(self, step: int) -> int:
    """Rank 0: steps that take about period_s at the pace since the last check."""
    if self._since is None or step <= self._since[1]:
      return self.interval
    per_step = max(time.monotonic() - self._since[0], 1e-9) / (step - self._since[1])
    return int(max(1, min(self.period_s / per_step, 2 * self.interval, self.max_interval)))
