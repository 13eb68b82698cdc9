"""The state of one training run (model, EMA, optimizer, data order, step) and what keeps it
safe: atomic checkpoints that record their loss and conventions, resumption, a bounded
non-finite-loss policy, and a clean stop on SIGTERM / SIGINT. The loop is in run_lib.train.
"""
from __future__ import annotations

import errno
import logging
import math
import os
import signal

import torch

from score_sde import checkpoint as ckpt
from score_sde import datasets, losses, optim
from score_sde.errors import TrainingError, UserError
from score_sde.models import (ExponentialMovingAverage, check_metadata, checkpoint_metadata,
                              create_model, data_shape)
from score_sde.sdes import get_sde


def get_device(config) -> torch.device:
  want = config.runtime.device
  if want == 'auto':
    return torch.device('cuda' if torch.cuda.is_available() else 'cpu')
  if want.startswith('cuda') and not torch.cuda.is_available():
    raise UserError(f"config.runtime.device is '{want}' but CUDA is not available")
  return torch.device(want)


def ckpt_dir(workdir: str) -> str:
  return os.path.join(workdir, 'checkpoints')


def latest_checkpoint(workdir: str) -> tuple[int, str] | None:
  found = ckpt.list_checkpoints(ckpt_dir(workdir))
  return found[-1] if found else None


def last_good_checkpoint(workdir: str) -> str | None:
  """The newest checkpoint whose recorded loss and weights are finite (None if there is none)."""
  for _, path in reversed(ckpt.list_checkpoints(ckpt_dir(workdir))):
    try:
      state = ckpt.read_checkpoint(path)
    except (ckpt.CheckpointError, OSError):
      continue
    loss = state.get('loss', 0.0)
    if (loss is None or math.isfinite(loss)) and all(
        torch.isfinite(v).all() for v in state['model'].values() if v.is_floating_point()):
      return path
  return None


def _drop_labels(y, config):
  """Classifier-free training: replace y by the null label with probability p_uncond."""
  if not config.model.class_conditional:
    return None
  drop = torch.rand(y.shape, device=y.device) < config.training.p_uncond
  return torch.where(drop, torch.full_like(y, config.data.num_classes), y)


def _load_train_data(config):
  try:
    data = datasets.get_dataset(config, 'train')
  except (FileNotFoundError, ValueError) as e:
    raise UserError(str(e)) from None
  want = data_shape(config)
  got = tuple(data[0][0].shape)
  if got != want:
    raise UserError(f'data has shape {got} per item but the config expects {want} '
                    '(check config.data.image_size / num_channels)')
  return data


class Trainer:
  """State of one training run: model, EMA, optimizer, data order and step."""

  def __init__(self, config, workdir: str):
    self.config, self.workdir = config, workdir
    self.device = get_device(config)
    torch.manual_seed(config.seed)
    self.sde = get_sde(config)
    try:
      self.model = create_model(config, self.sde).to(self.device)
      self.loss_fn = losses.get_loss_fn_from_config(config, self.sde)
    except ValueError as e:
      raise UserError(str(e)) from None
    if config.runtime.channels_last:
      self.model = self.model.to(memory_format=torch.channels_last)
    self.params = [p for p in self.model.parameters() if p.requires_grad]
    self.ema = ExponentialMovingAverage(self.params, decay=config.model.ema_rate)
    self.optimizer = optim.get_optimizer(config, self.params)
    self.loader = datasets.InfiniteLoader(
        _load_train_data(config), config.training.batch_size, seed=config.seed,
        num_workers=config.data.num_workers, device=self.device,
        pin_memory=self.device.type == 'cuda')
    self.scaler = datasets.get_data_scaler(config)
    self.step, self.saved_step, self.last_loss, self.nan_skips = 0, -1, None, 0
    self.compiled = torch.compile(self.model) if config.runtime.compile else self.model

  def state(self) -> dict:
    rng = {'cpu': torch.get_rng_state()}
    if torch.cuda.is_available():
      rng['cuda'] = torch.cuda.get_rng_state_all()
    return {'model': self.model.net.state_dict(), 'ema': self.ema.state_dict(),
            'optimizer': self.optimizer.state_dict(), 'step': self.step, 'rng': rng,
            'loader': self.loader.state_dict(), 'loss': self.last_loss,
            'meta': checkpoint_metadata(self.config, self.model)}

  def save(self) -> str:
    """Write checkpoint_<step>.pth (once per step) and prune the rolling ones. A failed write
    (full disk, say) leaves the older checkpoints untouched and is a one-line UserError."""
    tr = self.config.training
    path = os.path.join(ckpt_dir(self.workdir), f'checkpoint_{self.step}.pth')
    if self.saved_step == self.step:
      return path
    try:
      ckpt.save_checkpoint(path, self.state())
    except OSError as e:
      why = 'the disk is full' if e.errno in (errno.ENOSPC, errno.EDQUOT) else (e.strerror or str(e))
      last = latest_checkpoint(self.workdir)
      raise UserError(f'cannot write checkpoint {path}: {why}; the run can resume from '
                      f"{last[1] if last else 'the start'} once there is room") from None
    self.saved_step = self.step
    keep_forever = lambda s: s % tr.snapshot_freq == 0
    ckpt.prune_checkpoints(ckpt_dir(self.workdir), tr.keep_checkpoints, protect=keep_forever)
    return path

  def restore(self) -> None:
    """Resume from the newest checkpoint of the workdir, if any (partial writes removed first)."""
    for stale in ckpt.remove_partial_writes(ckpt_dir(self.workdir)):
      logging.info('removed a partial checkpoint write: %s', stale)
    found = latest_checkpoint(self.workdir)
    if found is None:
      return
    hint = '(delete it to resume from an older one)'
    try:
      state = ckpt.read_checkpoint(found[1], map_location=self.device)
    except (ckpt.CheckpointError, ValueError) as e:
      raise UserError(f'cannot resume from {found[1]}: {e} {hint}') from None
    # a run resumed with another SDE / network / convention would silently train garbage
    check_metadata(state.get('meta'), self.config, self.model, f'checkpoint {found[1]}')
    try:
      ckpt.load_weights(self.model.net, state['model'], where=f'checkpoint {found[1]}')
      self.ema.load_state_dict(state['ema'])
      self.optimizer.load_state_dict(state['optimizer'])
    except (ckpt.CheckpointError, KeyError, ValueError) as e:
      raise UserError(f'cannot resume from {found[1]}: {e} {hint}') from None
    self.step = self.saved_step = int(state['step'])
    self.last_loss = state.get('loss')
    if 'loader' in state:
      self.loader.load_state_dict(state['loader'])
    rng = state.get('rng', {})
    if 'cpu' in rng:
      torch.set_rng_state(rng['cpu'].cpu())
    if 'cuda' in rng and torch.cuda.is_available():
      torch.cuda.set_rng_state_all([s.cpu() for s in rng['cuda']])
    logging.info('resumed from %s at step %d', found[1], self.step)

  def train_step(self) -> dict:
    """One optimisation step; returns loss, lr and grad norm (or raises on a bad loss)."""
    x, y = next(self.loader)
    if self.config.data.uniform_dequantization:
      x = datasets.dequantize(x)
    x = self.scaler(x)
    if self.config.runtime.channels_last and x.ndim == 4:
      x = x.contiguous(memory_format=torch.channels_last)
    with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.config.runtime.amp == 'bf16'):
      out = self.loss_fn(self.compiled, x, _drop_labels(y, self.config))
    self.optimizer.zero_grad(set_to_none=True)
    if not torch.isfinite(out.loss):
      return self._bad_loss(out.loss)
    self.nan_skips = 0
    out.loss.backward()
    o = self.config.optim
    self.step += 1
    norm = optim.optimization_step(self.optimizer, self.params, self.step, o.lr, o.warmup, o.grad_clip)
    self.ema.update(self.params)
    self.last_loss = out.loss.item()
    return {'loss': self.last_loss, 'lr': self.optimizer.param_groups[0]['lr'], 'grad_norm': norm}

  def _bad_loss(self, loss) -> dict:
    tr = self.config.training
    self.nan_skips += 1
    if tr.nan_policy == 'skip' and self.nan_skips < tr.max_nan_skips:
      logging.warning('non-finite loss %s at step %d: step skipped', loss.item(), self.step + 1)
      return {'loss': float('nan')}
    times = f' {self.nan_skips} times in a row' if tr.nan_policy == 'skip' else ''
    good = last_good_checkpoint(self.workdir)
    raise TrainingError(f'non-finite loss ({loss.item()}) at step {self.step + 1}{times}; last good '
                        f"checkpoint: {good or 'none'} (lower optim.lr or raise optim.warmup)")


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
