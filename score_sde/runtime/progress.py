"""Progress reports: a tqdm bar on a terminal, plain log lines in a batch job's log.

When stderr is not a terminal (a batch job, a pipe, a file), `\\r`-redrawn bars would fill the
log with partial lines; there a report is one INFO log line at most every
`SCORE_SDE_PROGRESS_SECONDS` seconds (default 30), plus one at the end:

    train: 1500/3000 (50%), 12.3 it/s, 2 min 2 s left, loss=0.0312
"""
from __future__ import annotations

import logging
import os
import sys
import time

DEFAULT_SECONDS = 30.0


def interval() -> float:
  """Seconds between two plain progress lines (SCORE_SDE_PROGRESS_SECONDS, default 30)."""
  try:
    return max(0.0, float(os.environ.get('SCORE_SDE_PROGRESS_SECONDS', DEFAULT_SECONDS)))
  except ValueError:
    return DEFAULT_SECONDS


def progress(iterable=None, desc: str = '', total: int | None = None, *, initial: int = 0,
             leave: bool = True, disable: bool = False, unit: str = 'it', stream=None):
  """A progress reporter used like `tqdm.tqdm(iterable, desc, total)`: iterate over it, or
  call `update(n)` / `set_postfix(...)`, optionally as a context manager. A tqdm bar when
  `stream` (default stderr) is a terminal, else `PlainProgress`."""
  stream = sys.stderr if stream is None else stream
  if total is None and iterable is not None and hasattr(iterable, '__len__'):
    total = len(iterable)
  tty = getattr(stream, 'isatty', lambda: False)()
  if tty or disable:
    import tqdm
    return tqdm.tqdm(iterable, desc=desc, total=total, initial=initial, leave=leave,
                     disable=disable, unit=unit, dynamic_ncols=True, file=stream)
  return PlainProgress(iterable, desc, total, initial=initial, unit=unit, every=interval())


class PlainProgress:
  """tqdm's interface (iteration, update, set_postfix, close, context manager) writing one
  INFO log line at most every `every` seconds, and one when closed."""

  def __init__(self, iterable=None, desc: str = '', total: int | None = None, *, initial: int = 0,
               unit: str = 'it', every: float = DEFAULT_SECONDS):
    self.iterable, self.desc, self.total, self.unit, self.every = iterable, desc, total, unit, every
    self.n = self.start_n = initial
    self.postfix, self.closed = '', False
    self.start = self.last = time.monotonic()

  def __iter__(self):
    for item in self.iterable:
      yield item
      self.update(1)
    self.close()

  def __len__(self):
    return self.total if self.total is not None else len(self.iterable)

  def __enter__(self):
    return self

  def __exit__(self, *exc):
    self.close()
    return False

  def update(self, n: int = 1) -> None:
    self.n += n
    now = time.monotonic()
    if now - self.last >= self.every:
      self.last = now
      logging.info('%s', self.line(now))

  def set_postfix(self, ordered_dict=None, refresh: bool = True, **kwargs) -> None:
    del refresh
    items = {**(ordered_dict or {}), **kwargs}
    self.postfix = ', '.join(f'{k}={v}' for k, v in items.items())

  def close(self) -> None:
    if not self.closed:
      self.closed = True
      logging.info('%s', self.line(time.monotonic(), done=True))

  def line(self, now: float, done: bool = False) -> str:
    """`desc: n/total (p%), rate, time left[, postfix]`."""
    elapsed = max(now - self.start, 1e-9)
    rate = (self.n - self.start_n) / elapsed
    parts = [f'{self.n}/{self.total} ({100 * self.n / max(self.total, 1):.0f}%)'
             if self.total else f'{self.n}', f'{rate:.3g} {self.unit}/s']
    if done:
      parts.append(f'{_duration(elapsed)} in all')
    elif self.total and rate > 0:
      parts.append(f'{_duration((self.total - self.n) / rate)} left')
    if self.postfix:
      parts.append(self.postfix)
    return f"{self.desc or 'progress'}: " + ', '.join(parts)


def _duration(seconds: float) -> str:
  s = int(round(seconds))
  if s < 60:
    return f'{s} s'
  if s < 3600:
    return f'{s // 60} min {s % 60} s'
  return f'{s // 3600} h {s % 3600 // 60} min'
