"""Exceptions that mean "the user's input is wrong", reported by main.py as one line.

Anything else (a TypeError deep in a module, say) is a bug and keeps its traceback.
"""
from __future__ import annotations


class UserError(Exception):
  """A problem with the user's input or environment: one line, exit status `exit_code`."""

  exit_code = 2


class ConfigError(UserError):
  """A config value out of its allowed range, an unknown key or a broken config file."""


class TrainingError(UserError):
  """Training cannot continue (e.g. a persistently non-finite loss)."""


class Interrupted(UserError):
  """Stopped by SIGINT / SIGTERM (after saving what there was to save)."""

  def __init__(self, message: str, signum: int):
    super().__init__(message)
    self.exit_code = 128 + signum


def one_line(message: str) -> str:
  """`message` as a single readable line (no escaped newlines or quotes)."""
  return ' '.join(str(message).split())
