"""The entry point of every command-line mode: the training loop here, the sampling modes in
score_sde.app.sample_modes and the evaluation modes in score_sde.app.eval_modes (re-exported below).
Orchestration only: the maths is in score_sde/.

Work directory layout:
  <workdir>/checkpoints/checkpoint_<step>.pth (+ .sha256)   rolling + permanent snapshots
  <workdir>/config.json, run.json, log.txt, train.lock      the run's record and its lock
  <workdir>/tensorboard/                                    scalars and sample grids
  <workdir>/samples/                                        PNG grids and .npz of the sampling modes
  <workdir>/likelihood.json                                 from --mode likelihood
  <workdir>/eval/<checkpoint stem>/ (+ .json)               eval shards and report (--mode eval)
  <workdir>/grids/                                          cached optimized time grids
  <workdir>/classifier/                                     the guidance classifier's own run
"""
from __future__ import annotations

import contextlib
import logging
import os
import signal
import sys

import numpy as np
import torch

from score_sde.app import config_check, run_record
from score_sde.app.build_train import build_trainer
from score_sde.app.generate import generate
from score_sde.data import datasets
from score_sde.errors import Interrupted, TrainingError, UserError  # noqa: F401 (re-exported)
from score_sde.files import run_lock, visualize
from score_sde.files.workdir import ckpt_dir, ensure_writable
from score_sde.runtime.progress import progress
from score_sde.training.classifier import accuracy_by_noise_level
from score_sde.training.stop_signals import StopAgreement, StopSignals
from score_sde.training.trainer import Trainer



def check_config(config) -> None:
  """Validate every config value (a one-line ConfigError names the key and its range)."""
  config_check.validate(config)


def train(config, workdir: str, task: str = 'score') -> dict:
  """Train (resuming from the newest checkpoint) until config.training.n_iters, on one process
  or under torchrun (DDP; rank 0 logs and writes checkpoints and samples). `task` 'classifier'
  trains the noisy classifier of classifier guidance (--mode train_classifier) in
  <workdir>/classifier/, with its accuracy per noise level in TensorBoard.

  SIGTERM / SIGINT save a checkpoint at the current step and raise `Interrupted`. One training
  per workdir: it holds <workdir>/train.lock until it returns or raises (score_sde.files.run_lock)."""
  ensure_writable(ckpt_dir(workdir, task), 'checkpoints')
  with run_lock.hold(workdir, task):
    return _train(config, workdir, task)


def _train(config, workdir: str, task: str) -> dict:
  """`train` while holding the workdir's lock; rank 0 appends every log line to <folder>/log.txt
  and writes config.json and run.json there once resuming succeeded (score_sde.app.run_record;
  <folder> is the workdir, or <workdir>/classifier)."""
  folder = os.path.dirname(ckpt_dir(workdir, task))
  rank0 = os.environ.get('RANK', '0').strip() in ('', '0')
  with run_record.log_file(folder) if rank0 else contextlib.nullcontext():
    return _train_logged(config, workdir, task, folder)


def _train_logged(config, workdir: str, task: str, folder: str) -> dict:
  """`_train` with its log file open: restore, write the run records, then the loop."""
  from torch.utils.tensorboard import SummaryWriter
  trainer = build_trainer(config, workdir, task)
  try:
    trainer.restore()
    main = trainer.dist.is_main
    if main:
      run_record.write_records(config, folder, trainer.dist.world_size)
      logging.info('training %s in %s to step %d (%s)', task, folder, config.training.n_iters,
                   ' '.join(sys.argv))
    logs = os.path.join(folder, 'tensorboard')
    writer = SummaryWriter(logs) if main else None
    metrics = _train_loop(config, trainer, writer)
    if writer is not None:
      writer.close()
  finally:
    trainer.close()
  return metrics


def _train_loop(config, trainer: Trainer, writer) -> dict:
  """Steps until n_iters or a stop signal (under torchrun, agreed by the ranks within about a
  second: StopAgreement), then a checkpoint at the step reached and `Interrupted`."""
  tr, metrics = config.training, {}
  agreed = StopAgreement(trainer.dist, trainer.device)
  with StopSignals() as stop, progress(total=tr.n_iters, initial=trainer.step, desc='train',
                                       disable=writer is None) as bar:
    while trainer.step < tr.n_iters and not agreed(trainer.step, stop.received is not None):
      before = trainer.step
      metrics = trainer.train_step()
      if trainer.step == before:
        continue  # a skipped non-finite step: nothing to log or save
      bar.update(1)
      _after_step(config, trainer, writer, metrics, bar)
    if trainer.step < tr.n_iters:
      path = trainer.save()
      signum = stop.received or signal.SIGTERM
      name = 'SIGINT' if signum == signal.SIGINT else 'SIGTERM'
      raise Interrupted(f'stopped by {name} at step {trainer.step}; saved {path}; run the same '
                        'command again to resume', signum)
  trainer.check_finite()
  return {k: float(v) for k, v in metrics.items()}


def _after_step(config, trainer: Trainer, writer, metrics: dict, bar) -> None:
  """Logging, checkpoints and snapshot samples after optimisation step `trainer.step`."""
  tr, step = config.training, trainer.step
  if step % tr.log_freq == 0:  # the only host sync of a training step
    trainer.check_finite()
    if writer is not None:
      values = {k: float(v) for k, v in metrics.items()}
      for k, v in values.items():
        writer.add_scalar(f'train/{k}', v, step)
      bar.set_postfix(loss=f"{values['loss']:.4g}")
      logging.info('step %d: %s', step, ', '.join(f'{k} {v:.5g}' for k, v in values.items()))
  if step % tr.snapshot_freq_for_preemption == 0 or step % tr.snapshot_freq == 0 or step == tr.n_iters:
    trainer.save()
    if trainer.task.name == 'classifier' and writer is not None:
      _classifier_accuracy(config, trainer, writer)
  if trainer.task.name == 'classifier':
    return
  sample_now = step % tr.snapshot_freq == 0 or (tr.sample_freq > 0 and step % tr.sample_freq == 0)
  if tr.snapshot_sampling and sample_now and writer is not None:
    writer.add_image('samples', _snapshot_samples(config, trainer), step, dataformats='HWC')


def _classifier_accuracy(config, trainer: Trainer, writer, bins: int = 5) -> None:
  """The classifier's test accuracy on x_t in `bins` equal ranges of t, as TensorBoard scalars
  accuracy/t_<lo>-<hi> (EMA weights, restored afterwards)."""
  test = datasets.load_split(config.data, 'test')
  loader = datasets.InfiniteLoader(test, min(config.eval.batch_size, len(test)), seed=config.seed,
                                   shuffle=False, drop_last=False, device=trainer.device)
  scaler, gen = datasets.get_data_scaler(config.data), torch.Generator(device=trainer.device).manual_seed(0)
  trainer.ema.store(trainer.params)
  trainer.ema.copy_to(trainer.params)
  trainer.model.eval()
  accs = []
  for _ in range(min(config.classifier.eval_batches, loader.batches_per_epoch)):
    x, y = next(loader)
    accs.append(accuracy_by_noise_level(trainer.model, trainer.sde, scaler(x), y, bins, gen))
  trainer.model.train()
  trainer.ema.restore(trainer.params)
  edges = torch.linspace(config.training.eps, trainer.sde.T, bins + 1).tolist()
  for k, acc in enumerate(torch.stack(accs).mean(0).tolist()):
    writer.add_scalar(f'accuracy/t_{edges[k]:.2f}-{edges[k + 1]:.2f}', acc, trainer.step)


def _snapshot_samples(config, trainer: Trainer) -> np.ndarray:
  """Sample with the EMA weights (restored afterwards) and write samples/step_<n>.png."""
  trainer.ema.store(trainer.params)
  trainer.ema.copy_to(trainer.params)
  trainer.model.eval()
  x, _ = generate(config, trainer.model, num_samples=min(64, config.sampling.num_samples),
                  check_finite=False)   # the weights were checked when saved; a picture only
  trainer.model.train()
  trainer.ema.restore(trainer.params)
  if not torch.isfinite(x).all():
    logging.warning('step %d: the snapshot samples are not finite (the sampler diverged); '
                    'training goes on', trainer.step)
  path = os.path.join(trainer.workdir, 'samples', f'step_{trainer.step}.png')
  visualize.save_samples_png(x, path)
  return visualize.points_image(x) if x.ndim == 2 else visualize.image_grid(x)


# The other modes live in their own modules; run_lib is the one entry point of the CLI.
from score_sde.app.eval_modes import bpd_methods, evaluate, likelihood  # noqa: E402,F401
from score_sde.app.sample_modes import inverse_problem, interpolate, sample  # noqa: E402,F401
