"""Graceful stops: SIGTERM / SIGINT turned into a flag the training loop polls."""
from __future__ import annotations

import signal


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
