"""The state of one training run (model, EMA, optimizer, data order, step) on one process or
many (torchrun + DistributedDataParallel), and what keeps it safe: atomic checkpoints that
record their loss and conventions, resumption, a bounded non-finite-loss policy, and a clean
stop on SIGTERM / SIGINT. The loop is in `score_sde.app.run_lib.train`; the build layer
(`score_sde.app.build.build_trainer`) makes the task, settings and data from the config.

Distribution. `settings.batch_size` is the *global* batch B. With W processes and
A = `settings.grad_accum` micro-batches per step, each process reads micro-batches of
b = B / (W A) items: the loader gives rank r the items perm[r::W], so micro-batch m of rank r
holds global positions W (m b + j) + r, j < b, and the union over ranks and micro-batches of
one step is exactly the B items one process would read. The training noise (t, z, label
dropout, dequantisation) of step s is drawn for all B positions from a generator seeded by
(seed, s) and each process takes its positions, so a sample gets the same noise for any W
and A: W processes equal one process with the same global batch, up to float summation
order. Only rank 0 logs and writes checkpoints.
"""
from __future__ import annotations

import contextlib
import errno
import logging
import os

import torch
from torch.nn.parallel import DistributedDataParallel

from score_sde.data import datasets
from score_sde.data.loader import mix_seed
from score_sde.errors import TrainingError, UserError
from score_sde.files import checkpoint as ckpt
from score_sde.files.workdir import ckpt_dir, last_good_checkpoint, latest_checkpoint
from score_sde.maths.sdes import SDE
from score_sde.models import ExponentialMovingAverage
from score_sde.runtime import distributed
from score_sde.runtime.device import autocast
from score_sde.training import optim
from score_sde.training.task import TrainSettings


class Trainer:
  """State of one training run: model, EMA, optimizer, data order and step."""

  def __init__(self, task, sde: SDE, settings: TrainSettings, data, scaler, make_optimizer,
               dist: distributed.Dist, workdir: str, record):
    """task: a `ScoreTask` / `ClassifierTask` (its model built after `torch.manual_seed(seed)`
    on every rank); data: the training split; scaler: [0, 1] data -> model space;
    make_optimizer: `params -> optimizer`; dist: this process's group (`distributed.setup`);
    record: the run's config record (`.json()`, `.check_resume(state, task, where, path)`,
    `.hint(state, path)`)."""
    self.task, self.sde, self.settings, self.workdir, self.record = task, sde, settings, workdir, record
    self.ckpt_dir = ckpt_dir(workdir, task.name)
    self.dist, self.device = dist, dist.device
    self.model = task.model.to(self.device)
    if settings.channels_last:
      self.model = self.model.to(memory_format=torch.channels_last)
    self.params = [p for p in self.model.parameters() if p.requires_grad]
    self.ema = ExponentialMovingAverage(self.params, decay=settings.ema_rate)
    self.optimizer = make_optimizer(self.params)
    self.micro = self._micro_batch()
    try:
      self.loader = datasets.InfiniteLoader(
          data, self.micro, seed=settings.seed, rank=self.dist.rank,
          world_size=self.dist.world_size, num_workers=settings.num_workers,
          device=self.device, pin_memory=self.device.type == 'cuda')
    except ValueError as e:
      raise UserError(f'training data: {e}') from None
    self.scaler = scaler
    self.shape = tuple(data[0][0].shape)
    self.step, self.saved_step, self.last_loss, self.nan_skips = 0, -1, None, 0
    self._first_bad = None   # (step, loss) of the first non-finite loss, on the device
    self.ddp = None
    if self.dist.enabled:
      ids = [self.device.index] if self.device.type == 'cuda' else None
      self.ddp = DistributedDataParallel(self.model, device_ids=ids)
    wrapped = self.ddp or self.model
    self.compiled = torch.compile(wrapped) if settings.compile else wrapped

  def _micro_batch(self) -> int:
    tr, w = self.settings, self.dist.world_size
    if tr.batch_size % (w * tr.grad_accum):
      raise UserError(f'config.training.batch_size = {tr.batch_size} must be divisible by '
                      f'world_size x grad_accum = {w} x {tr.grad_accum}')
    return tr.batch_size // (w * tr.grad_accum)

  def state(self) -> dict:
    rng = {'cpu': torch.get_rng_state()}
    if torch.cuda.is_available():
      rng['cuda'] = torch.cuda.get_rng_state_all()
    return {'model': self.weights().state_dict(), 'ema': self.ema.state_dict(),
            'optimizer': self.optimizer.state_dict(), 'step': self.step, 'rng': rng,
            'loader': {**self.loader.state_dict(), 'stride': self.dist.world_size * self.micro},
            'loss': None if self.last_loss is None else float(self.last_loss), **self._resampler_state(),
            'meta': self.task.metadata(self.sde), **self.record.json()}

  def _resampler(self):
    """The importance sampler of t of training.loss='vlb' (None otherwise)."""
    return self.task.resampler

  def _resampler_state(self) -> dict:
    r = self._resampler()
    return {} if r is None else {'t_sampler': r.state_dict()}

  def weights(self) -> torch.nn.Module:
    """The module whose state dict a checkpoint holds (the network, as score_sde_pytorch)."""
    return self.task.weights()

  def save(self) -> str:
    """Write checkpoint_<step>.pth (once per step) and prune the rolling ones. A failed write
    (full disk, say) leaves the older checkpoints untouched and is a one-line UserError."""
    tr = self.settings
    path = os.path.join(self.ckpt_dir, f'checkpoint_{self.step}.pth')
    if self.saved_step == self.step:
      return path
    self.check_finite()  # never write weights trained through a non-finite loss
    self._check_finite_weights()
    if not self.dist.is_main:  # rank 0 writes; the others wait until it has
      distributed.barrier(self.dist)
      self.saved_step = self.step
      return path
    try:
      ckpt.save_checkpoint(path, self.state())
    except OSError as e:
      why = 'the disk is full' if e.errno in (errno.ENOSPC, errno.EDQUOT) else (e.strerror or str(e))
      last = latest_checkpoint(self.workdir, self.task.name)
      raise UserError(f'cannot write checkpoint {path}: {why}; the run can resume from '
                      f"{last[1] if last else 'the start'} once there is room") from None
    self.saved_step = self.step
    keep_forever = lambda s: s % tr.snapshot_freq == 0
    ckpt.prune_checkpoints(self.ckpt_dir, tr.keep_checkpoints, protect=keep_forever)
    distributed.barrier(self.dist)
    return path

  def _check_finite_weights(self) -> None:
    """A TrainingError (nothing written) if the weights or the EMA are not finite (one sync)."""
    bad = ckpt.non_finite_weights({'model': self.weights().state_dict(), 'ema': self.ema.state_dict()})
    if bad is not None:
      good = last_good_checkpoint(self.workdir, self.task.name)
      raise TrainingError(f'non-finite {bad} at step {self.step}, not written; last good '
                          f"checkpoint: {good or 'none'} (lower optim.lr or raise optim.warmup)")

  def restore(self) -> None:
    """Resume from the newest checkpoint of the workdir, if any (partial writes removed first)."""
    if self.dist.is_main:
      for stale in ckpt.remove_partial_writes(self.ckpt_dir):
        logging.info('removed a partial checkpoint write: %s', stale)
    found = latest_checkpoint(self.workdir, self.task.name)
    if found is None:
      return
    hint = '(delete it to resume from an older one)'
    try:
      state = ckpt.read_checkpoint(found[1], map_location=self.device)
    except (ckpt.CheckpointError, ValueError, OSError) as e:
      raise UserError(f'cannot resume from {found[1]}: {e} {hint}') from None
    bad = ckpt.non_finite_weights(state)
    if bad is not None:  # training on would only write more non-finite checkpoints
      good = last_good_checkpoint(self.workdir, self.task.name)
      raise ckpt.CheckpointError(
          f'cannot resume from {found[1]}: it has non-finite {bad}; last good checkpoint: '
          f"{good or 'none'} (move the newer checkpoints out of {self.ckpt_dir} to resume from it)")
    # a run resumed with another SDE / network / convention would silently train garbage
    try:
      self.task.check(state.get('meta'), self.sde, f'checkpoint {found[1]}')
    except ckpt.CheckpointError as e:
      raise ckpt.CheckpointError(f'{e}{self.record.hint(state, found[1])}') from None
    record = os.path.join(os.path.dirname(self.ckpt_dir), 'config.json')
    self.record.check_resume(state, self.task.name, f'checkpoint {found[1]}', record)
    try:
      ckpt.load_weights(self.weights(), state['model'], where=f'checkpoint {found[1]}')
      self.ema.load_state_dict(state['ema'])
      self.optimizer.load_state_dict(state['optimizer'])
    except (ckpt.CheckpointError, KeyError, ValueError) as e:
      raise UserError(f'cannot resume from {found[1]}: {e} {hint}') from None
    self.step = self.saved_step = int(state['step'])
    self.last_loss = state.get('loss')
    if self._resampler() is not None and 't_sampler' in state:
      self._resampler().load_state_dict(state['t_sampler'])
    if 'loader' in state:
      self._load_loader_state(state['loader'])
    if self.dist.is_main:
      logging.info('resumed from %s at step %d', found[1], self.step)

  def _load_loader_state(self, state: dict) -> None:
    """The loader position, rescaled when the number of ranks x micro-batch size changed (a
    run resumed on another number of GPUs continues from the same place in the epoch)."""
    stride = self.dist.world_size * self.micro
    position = int(state['position']) * int(state.get('stride', stride)) // stride
    position = min(position, self.loader.batches_per_epoch)
    self.loader.load_state_dict({'epoch': int(state['epoch']), 'position': position})

  def _global_noise(self, step: int) -> dict:
    """The noise of every position of step `step`'s global batch (see the module docstring)."""
    b, shape = self.settings.batch_size, self.shape
    gen = torch.Generator(device=self.device).manual_seed(mix_seed(self.settings.seed, 1, step))
    noise = {'u': torch.rand(b, generator=gen, device=self.device),
             'z': torch.randn((b,) + shape, generator=gen, device=self.device),
             'drop': torch.rand(b, generator=gen, device=self.device)}
    if self.settings.uniform_dequantization:
      noise['deq'] = torch.rand((b,) + shape, generator=gen, device=self.device)
    return noise

  def _micro_loss(self, x, y, noise) -> torch.Tensor:
    """The task's loss of one micro-batch with its share of the global noise."""
    if 'deq' in noise:
      x = datasets.dequantize(x, u=noise['deq'])
    x = self.scaler(x)
    if self.settings.channels_last and x.ndim == 4:
      x = x.contiguous(memory_format=torch.channels_last)
    with autocast(self.settings.amp if self.task.autocast else 'none', self.device):
      loss, vlb_record = self.task.loss(self.compiled, self.sde, x, y, noise, self.settings.t_min)
    if vlb_record is not None:  # training.loss='vlb': L_t values for the t sampler
      self._vlb_records.append(vlb_record)
    return loss

  def train_step(self) -> dict:
    """One optimisation step over the global batch; returns loss, lr and grad norm (or raises
    on a bad loss)."""
    accum, w, b = self.settings.grad_accum, self.dist.world_size, self.micro
    torch.manual_seed(mix_seed(self.settings.seed, 2, self.dist.rank, self.step + 1))  # dropout
    everything = self._global_noise(self.step + 1)
    self.optimizer.zero_grad(set_to_none=True)
    self._vlb_records = []
    total = torch.zeros((), device=self.device)
    for m in range(accum):
      x, y = next(self.loader)
      idx = w * (m * b + torch.arange(b, device=self.device)) + self.dist.rank
      sync = self.ddp is None or m == accum - 1
      with contextlib.nullcontext() if sync else self.ddp.no_sync():
        loss = self._micro_loss(x, y, {k: v[idx] for k, v in everything.items()}) / accum
        loss.backward()
      total = total + loss.detach().float()
    loss = distributed.mean_over_ranks(total, self.dist)
    if self.settings.nan_policy == 'skip':  # deciding to skip needs the value now
      if not torch.isfinite(loss):
        self.optimizer.zero_grad(set_to_none=True)
        return self._bad_loss(loss)
      self.nan_skips = 0
    else:  # 'stop': remember the first bad step on the device; `check_finite` raises later
      self._note_bad(loss)
    o = self.settings
    self.step += 1
    norm = optim.optimization_step(self.optimizer, self.params, self.step, o.lr, o.warmup, o.grad_clip)
    self.ema.update(self.params)
    self._update_resampler()
    self.last_loss = loss
    return {'loss': loss, 'lr': self.optimizer.param_groups[0]['lr'], 'grad_norm': norm}

  def _note_bad(self, loss: torch.Tensor) -> None:
    """Record (step, loss) of the first non-finite loss in a device tensor: no host sync."""
    here = torch.stack([torch.full_like(loss, self.step + 1), loss])
    if self._first_bad is None:
      self._first_bad = torch.full_like(here, float('nan'))
    new = torch.isnan(self._first_bad[0]) & ~torch.isfinite(loss)
    self._first_bad = torch.where(new, here, self._first_bad)

  def check_finite(self) -> None:
    """Raise the non-finite-loss TrainingError if a step since the start had one (a host
    sync: called at log and checkpoint steps, never per step)."""
    if self._first_bad is None or torch.isnan(self._first_bad[0]):
      return
    step, loss = self._first_bad.tolist()
    raise self._non_finite(loss, int(step))

  def _non_finite(self, loss: float, step: int, times: str = '') -> TrainingError:
    """The one-line error of a non-finite loss at `step`, naming the last good checkpoint."""
    good = last_good_checkpoint(self.workdir, self.task.name)
    return TrainingError(f'non-finite loss ({loss}) at step {step}{times}; last good '
                         f"checkpoint: {good or 'none'} (lower optim.lr or raise optim.warmup)")

  def _update_resampler(self) -> None:
    """Record this step's L_t values of every rank (rank order) in the t sampler, so that
    all ranks keep the same history."""
    if not self._vlb_records:
      return
    t = distributed.gather_over_ranks(torch.cat([r[0] for r in self._vlb_records]), self.dist)
    values = distributed.gather_over_ranks(torch.cat([r[1] for r in self._vlb_records]), self.dist)
    self._resampler().update(t.cpu(), values.cpu())

  def close(self) -> None:
    distributed.teardown(self.dist)

  def _bad_loss(self, loss) -> dict:
    tr = self.settings
    self.nan_skips += 1
    if tr.nan_policy == 'skip' and self.nan_skips < tr.max_nan_skips:
      logging.warning('non-finite loss %s at step %d: step skipped', loss.item(), self.step + 1)
      return {'loss': float('nan')}
    times = f' {self.nan_skips} times in a row' if tr.nan_policy == 'skip' else ''
    raise self._non_finite(loss.item(), self.step + 1, times)
