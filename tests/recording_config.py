"""A ConfigDict that records which leaf keys the code reads (test helper of test_config_keys).

`recording(config)` returns a deep copy of an ml_collections ConfigDict as a
`RecordingConfigDict` (a ConfigDict subclass, so `isinstance(c, ConfigDict)`, locking,
`--config.x=y` overrides, `to_dict`, `to_json`, `copy.deepcopy` and
`copy_and_resolve_references` behave as before) plus the `Recorder` that collects the dotted
path ('training.eps') of every leaf read through `c.training.eps`, `c['training']['eps']`,
`c['training.eps']`, `getattr(...)` or `.get(...)`.

ConfigDict routes all of those through `__getitem__`, and so does its own bulk machinery
(`items`, `values`, `to_dict`, `__repr__`, `copy_and_resolve_references`, ...). A read counts
only when the first caller outside ConfigDict's pass-through methods (`__getattr__`, `get`,
`__getitem__`) is neither in the ml_collections package (serialising or iterating a config for
a run record or a checkpoint is not using a key) nor in one of the `skip_modules` (e.g. the
config validator, which looks at every key). Copies made by the code (deepcopy, pickling in
this process, copy_and_resolve_references) share the original's Recorder.

Not recorded: values the code takes from `items()` / `values()` (bulk by the rule above),
leaves of `ml_collections.ConfigDict(c)`'s new top level (its sections stay recording), and
sections the code replaces with plain ConfigDicts; a test that misses a read this way fails
(the key looks dead), it never passes wrongly.
"""
from __future__ import annotations

import copy
import os
import sys
import weakref

import ml_collections
from ml_collections.config_dict import config_dict as _cd

_ML_COLLECTIONS_DIR = os.path.dirname(os.path.abspath(ml_collections.__file__)) + os.sep
_LIVE: weakref.WeakValueDictionary = weakref.WeakValueDictionary()  # id -> Recorder


def _live_recorder(key: int):
  """The Recorder `key` of this process (unpickling), else a new one (another process)."""
  return _LIVE.get(key) or Recorder()


class Recorder:
  """The shared record of one test: `read` (dotted keys) and `where` ({key: {'module:line'}}).
  Copying or pickling a config (in this process) keeps its Recorder, never copies it."""

  def __init__(self, skip_modules=()):
    self.read: set[str] = set()
    self.where: dict[str, set[str]] = {}
    self.skip_modules = frozenset(skip_modules)
    _LIVE[id(self)] = self

  def __deepcopy__(self, memo):
    return self

  def __copy__(self):
    return self

  def __reduce__(self):
    return _live_recorder, (id(self),)

  def add(self, key: str, frame) -> None:
    self.read.add(key)
    module = frame.f_globals.get('__name__', '?')
    self.where.setdefault(key, set()).add(f'{module}:{frame.f_lineno}')


class RecordingConfigDict(ml_collections.ConfigDict):
  """A ConfigDict whose leaf reads are added to `_rec_recorder` as `_rec_prefix + key`."""

  def _rec_attach(self, recorder, prefix: str) -> None:
    object.__setattr__(self, '_rec_recorder', recorder)
    object.__setattr__(self, '_rec_prefix', prefix)

  def __getitem__(self, key):
    value = super().__getitem__(key)
    recorder = self.__dict__.get('_rec_recorder')
    if recorder is None or isinstance(value, ml_collections.ConfigDict):
      return value  # a dotted key recursed into the section, which records its own leaf
    frame = _reader_frame(sys._getframe(1))
    if frame is not None and frame.f_globals.get('__name__') not in recorder.skip_modules:
      recorder.add(self.__dict__.get('_rec_prefix', '') + str(key), frame)
    return value

  def __setstate__(self, state):  # deepcopy / unpickle: ConfigDict's own restores only _fields
    super().__setstate__(state)
    self._rec_attach(state.get('_rec_recorder'), state.get('_rec_prefix', ''))

  def copy_and_resolve_references(self, visit_map=None):
    out = super().copy_and_resolve_references(visit_map)
    out._rec_attach(self.__dict__.get('_rec_recorder'), self.__dict__.get('_rec_prefix', ''))
    return out

  def __eq__(self, other):  # equal to a plain ConfigDict with the same fields, as a copy is
    if not isinstance(other, ml_collections.ConfigDict):
      return False
    return (self._fields == other._fields and self.is_locked == other.is_locked
            and self.is_type_safe == other.is_type_safe)

  __hash__ = None


# ConfigDict methods that only forward a read to __getitem__ on behalf of their caller
_CD = ml_collections.ConfigDict
_PASS_THROUGH = {f.__code__ for f in (_CD.__getattr__, _CD.get, _CD.__getitem__,
                                       RecordingConfigDict.__getitem__)}


def _reader_frame(frame):
  """The frame of the code that asked for the value, or None for ml_collections' own bulk
  reads (items, values, to_dict, repr, equality, copies, config_flags' overrides)."""
  while frame is not None and frame.f_code in _PASS_THROUGH:
    frame = frame.f_back
  if frame is None or frame.f_code.co_filename.startswith(_ML_COLLECTIONS_DIR):
    return None
  return frame


def _convert(node: ml_collections.ConfigDict, recorder: Recorder,
             prefix: str) -> RecordingConfigDict:
  out = RecordingConfigDict(type_safe=node.is_type_safe, convert_dict=node.convert_dict)
  for key, value in node._fields.items():
    if isinstance(value, _cd.FieldReference):
      value = value.get()
    out._fields[key] = (_convert(value, recorder, f'{prefix}{key}.')
                        if isinstance(value, ml_collections.ConfigDict) else copy.deepcopy(value))
  out._rec_attach(recorder, prefix)
  if node.is_locked:
    out.lock()
  return out


def recording(config: ml_collections.ConfigDict, recorder: Recorder | None = None,
              skip_modules=()) -> tuple[RecordingConfigDict, Recorder]:
  """(a recording deep copy of `config` (locked if it is), its Recorder). Pass one `recorder`
  to several configs to collect the union of their reads; `skip_modules` (module names) are
  callers whose reads do not count (used only when a new Recorder is made)."""
  recorder = Recorder(skip_modules) if recorder is None else recorder
  return _convert(config, recorder, ''), recorder


def leaf_keys(config, prefix: str = '') -> list[str]:
  """Every leaf key of `config` as a dotted path (read without recording)."""
  out = []
  for key, value in config.items():
    if isinstance(value, ml_collections.ConfigDict):
      out += leaf_keys(value, f'{prefix}{key}.')
    else:
      out.append(prefix + key)
  return out
