"""Training, sampling and likelihood loops. Orchestration only: the maths is in score_sde/.

Work directory layout:
  <workdir>/checkpoints/checkpoint_<step>.pth (+ .sha256)   rolling + permanent snapshots
  <workdir>/tensorboard/                                    scalars and sample grids
  <workdir>/samples/                                        PNG grids and .npz from --mode sample
  <workdir>/likelihood.json                                 from --mode likelihood
"""
from __future__ import annotations

import json
import logging
import math
import os

import numpy as np
import torch
import tqdm

from score_sde import checkpoint as ckpt
from score_sde import datasets, losses, optim, visualize
from score_sde.likelihood import bits_per_dim, log_likelihood
from score_sde.models import (ExponentialMovingAverage, check_metadata, checkpoint_metadata,
                              create_model, data_shape, load_checkpoint)
from score_sde.sampling import SOLVERS, sample as run_sampler, solver_options
from score_sde.sdes import get_sde


class UserError(Exception):
  """A problem with the user's input, reported by main.py as one line without a traceback."""


class TrainingError(UserError):
  """Training cannot continue (e.g. a non-finite loss)."""


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


def _dataset(config, split):
  try:
    return datasets.get_dataset(config, split)
  except (FileNotFoundError, ValueError) as e:
    raise UserError(str(e)) from None


def _check_batch_shape(x: torch.Tensor, config) -> None:
  d = config.data
  want = (d.num_channels,) if x.ndim == 2 else (d.num_channels, d.image_size, d.image_size)
  if tuple(x.shape[1:]) != want:
    raise UserError(f'data has shape {tuple(x.shape[1:])} per item but the config expects {want} '
                    '(check config.data.image_size / num_channels)')


def _autocast(config, device):
  enabled = config.runtime.amp == 'bf16'
  return torch.autocast(device.type, dtype=torch.bfloat16, enabled=enabled)


def _drop_labels(y, config):
  """Classifier-free training: replace y by the null label with probability p_uncond."""
  if not config.model.class_conditional:
    return None
  drop = torch.rand(y.shape, device=y.device) < config.training.p_uncond
  return torch.where(drop, torch.full_like(y, config.data.num_classes), y)


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
    data = _dataset(config, 'train')
    _check_batch_shape(data[0][0][None], config)
    self.loader = datasets.InfiniteLoader(
        data, config.training.batch_size, seed=config.seed,
        num_workers=config.data.num_workers, device=self.device,
        pin_memory=self.device.type == 'cuda')
    self.scaler = datasets.get_data_scaler(config)
    self.step = 0
    self.compiled = torch.compile(self.model) if config.runtime.compile else self.model

  def state(self) -> dict:
    rng = {'cpu': torch.get_rng_state()}
    if torch.cuda.is_available():
      rng['cuda'] = torch.cuda.get_rng_state_all()
    return {'model': self.model.net.state_dict(), 'ema': self.ema.state_dict(),
            'optimizer': self.optimizer.state_dict(), 'step': self.step, 'rng': rng,
            'loader': self.loader.state_dict(), 'meta': checkpoint_metadata(self.config, self.model)}

  def save(self) -> str:
    tr = self.config.training
    path = os.path.join(ckpt_dir(self.workdir), f'checkpoint_{self.step}.pth')
    ckpt.save_checkpoint(path, self.state())
    keep_forever = lambda s: tr.snapshot_freq > 0 and s % tr.snapshot_freq == 0
    ckpt.prune_checkpoints(ckpt_dir(self.workdir), tr.keep_checkpoints, protect=keep_forever)
    return path

  def restore(self) -> None:
    """Resume from the newest checkpoint of the workdir, if any."""
    found = latest_checkpoint(self.workdir)
    if found is None:
      return
    try:
      state = ckpt.read_checkpoint(found[1], map_location=self.device)
    except (ckpt.CheckpointError, ValueError) as e:
      raise UserError(f'cannot resume from {found[1]}: {e} (delete it to resume from an older one)') from None
    try:  # a run resumed with another SDE / network / convention would silently train garbage
      check_metadata(state.get('meta'), self.config, self.model, f'checkpoint {found[1]}')
    except ckpt.CheckpointError as e:
      raise UserError(str(e)) from None
    try:
      ckpt.load_weights(self.model.net, state['model'], where=f'checkpoint {found[1]}')
      self.ema.load_state_dict(state['ema'])
      self.optimizer.load_state_dict(state['optimizer'])
    except (ckpt.CheckpointError, KeyError, ValueError) as e:
      raise UserError(f'cannot resume from {found[1]}: {e} (delete it to resume from an older one)') from None
    self.step = int(state['step'])
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
    with _autocast(self.config, self.device):
      out = self.loss_fn(self.compiled, x, _drop_labels(y, self.config))
    self.optimizer.zero_grad(set_to_none=True)
    if not torch.isfinite(out.loss):
      return self._bad_loss(out.loss)
    out.loss.backward()
    o = self.config.optim
    self.step += 1
    norm = optim.optimization_step(self.optimizer, self.params, self.step, o.lr, o.warmup, o.grad_clip)
    self.ema.update(self.params)
    return {'loss': out.loss.item(), 'lr': self.optimizer.param_groups[0]['lr'], 'grad_norm': norm}

  def _bad_loss(self, loss) -> dict:
    if self.config.training.nan_policy == 'skip':
      logging.warning('non-finite loss %s at step %d: step skipped', loss.item(), self.step + 1)
      return {'loss': float('nan')}
    last = latest_checkpoint(self.workdir)
    raise TrainingError(f'non-finite loss ({loss.item()}) at step {self.step + 1}; last good '
                        f"checkpoint: {last[1] if last else 'none'}")


def train(config, workdir: str) -> dict:
  """Train (resuming from the workdir's newest checkpoint) until config.training.n_iters."""
  from torch.utils.tensorboard import SummaryWriter
  trainer = Trainer(config, workdir)
  trainer.restore()
  tr = config.training
  writer = SummaryWriter(os.path.join(workdir, 'tensorboard'))
  metrics = {}
  with tqdm.tqdm(total=tr.n_iters, initial=trainer.step, desc='train', dynamic_ncols=True) as bar:
    while trainer.step < tr.n_iters:
      metrics = trainer.train_step()
      bar.update(1)
      step = trainer.step
      if step % tr.log_freq == 0 and 'lr' in metrics:
        for k, v in metrics.items():
          writer.add_scalar(f'train/{k}', v, step)
        bar.set_postfix(loss=f"{metrics['loss']:.4g}")
      if step % tr.snapshot_freq_for_preemption == 0 or step % tr.snapshot_freq == 0 or step == tr.n_iters:
        trainer.save()
      if tr.snapshot_sampling and step % tr.snapshot_freq == 0:
        writer.add_image('samples', _snapshot_samples(config, trainer), step, dataformats='HWC')
  writer.close()
  return metrics


def _snapshot_samples(config, trainer: Trainer) -> np.ndarray:
  """Sample with the EMA weights (restored afterwards) and write samples/step_<n>.png."""
  trainer.ema.store(trainer.params)
  trainer.ema.copy_to(trainer.params)
  trainer.model.eval()
  x, _ = generate(config, trainer.model, num_samples=min(64, config.sampling.num_samples))
  trainer.model.train()
  trainer.ema.restore(trainer.params)
  path = os.path.join(trainer.workdir, 'samples', f'step_{trainer.step}.png')
  visualize.save_samples_png(x, path)
  return visualize.points_image(x) if x.ndim == 2 else visualize.image_grid(x)


def load_eval_model(config, workdir: str, checkpoint: str = ''):
  """The EMA model of `checkpoint` (default: the workdir's newest) on the configured device."""
  if not checkpoint:
    found = latest_checkpoint(workdir)
    if found is None:
      raise UserError(f'no checkpoint in {ckpt_dir(workdir)}; train first (--mode train)')
    checkpoint = found[1]
  try:
    return load_checkpoint(checkpoint, config, device=get_device(config)), checkpoint
  except (ckpt.CheckpointError, FileNotFoundError) as e:
    raise UserError(str(e)) from None


def _solver_kwargs(config, solver: str) -> dict:
  """The solver-specific options of `solver` read from config.sampling."""
  s = config.sampling
  values = {'predictor': s.predictor, 'corrector': s.corrector, 'snr': s.snr,
            'n_steps': s.n_steps_each, 'rtol': s.rtol, 'atol': s.atol, 'eta': s.eta,
            'order': s.order}
  if solver == 'ode':
    values['method'] = s.ode_method
  allowed = solver_options(solver)
  return {k: v for k, v in values.items() if k in allowed}


def _labels_for(config, num_samples: int, device):
  """Class labels for conditional sampling: config.sampling.label, or one grid row per class."""
  if not config.model.class_conditional:
    return None
  n_cls = config.data.num_classes
  if config.sampling.label >= 0:
    return torch.full((num_samples,), config.sampling.label, device=device, dtype=torch.long)
  return (torch.arange(num_samples, device=device) * n_cls // num_samples).long()


def _score_fn(config, model, y):
  """The score the sampler sees: the model, with its label bound and CFG applied."""
  if y is None:
    return model
  from score_sde.guidance import bind, classifier_free
  guided = classifier_free(model, config.sampling.guidance_scale, null_label=config.data.num_classes)
  return bind(guided, y)


def generate(config, model, num_samples: int, solver: str | None = None, progress=None):
  """Samples `[n, ...]` in data space ([0, 1] for images) and the total NFE, in batches."""
  solver = (solver or config.sampling.method).lower()
  if solver not in SOLVERS:
    raise UserError(f"unknown solver '{solver}'; choose one of: {', '.join(SOLVERS)}")
  s = config.sampling
  shape = data_shape(config)
  device = next(model.parameters()).device
  inverse = datasets.get_data_inverse_scaler(config)
  gen = torch.Generator(device=device).manual_seed(s.seed)
  labels = _labels_for(config, num_samples, device)
  out, nfe = [], 0
  try:
    kwargs = _solver_kwargs(config, solver)
    for start in range(0, num_samples, s.batch_size):
      b = min(s.batch_size, num_samples - start)
      y = None if labels is None else labels[start:start + b]
      with _autocast(config, device):
        res = run_sampler(model.sde, _score_fn(config, model, y), (b,) + shape, solver,
                          steps=s.steps or None, generator=gen, device=device, eps=s.eps,
                          denoise=s.noise_removal, progress=progress, **kwargs)
      out.append(inverse(res.x.float()).cpu())
      nfe += res.nfe
  except ValueError as e:
    raise UserError(str(e)) from None
  return torch.cat(out), nfe


def sample(config, workdir: str, solver: str | None = None, checkpoint: str = '') -> str:
  """Sample config.sampling.num_samples; write samples/<solver>_<step>.png and .npz."""
  model, path = load_eval_model(config, workdir, checkpoint)
  solver = (solver or config.sampling.method).lower()
  bar = lambda it: tqdm.tqdm(it, desc=f'sample ({solver})', leave=False, dynamic_ncols=True)
  x, nfe = generate(config, model, config.sampling.num_samples, solver, progress=bar)
  stem = os.path.join(workdir, 'samples', f'{solver}_{os.path.basename(path)[:-4]}')
  visualize.save_samples_png(x, stem + '.png', nrow=_grid_row(config, len(x)))
  np.savez_compressed(stem + '.npz', samples=x.numpy(), nfe=nfe)
  print(f'wrote {len(x)} samples to {stem}.png and {stem}.npz (NFE per batch: '
        f'{nfe // max(1, math.ceil(len(x) / config.sampling.batch_size))})')
  return stem + '.png'


def _grid_row(config, n: int) -> int | None:
  if config.model.class_conditional and config.sampling.label < 0:
    return max(1, n // config.data.num_classes)
  return None


def likelihood(config, workdir: str, checkpoint: str = '') -> dict:
  """Mean bits/dim (nats/dim for 2-D toys) of the test split, with its standard error."""
  model, path = load_eval_model(config, workdir, checkpoint)
  device = next(model.parameters()).device
  data = _dataset(config, config.eval.bpd_dataset)
  loader = datasets.InfiniteLoader(data, config.eval.batch_size, seed=config.seed, shuffle=False,
                                   drop_last=False, device=device)
  n_batches = loader.batches_per_epoch
  if config.eval.bpd_num_batches > 0:
    n_batches = min(n_batches, config.eval.bpd_num_batches)
  toy = len(data_shape(config)) == 1
  scaler = datasets.get_data_scaler(config)
  gen = torch.Generator(device=device).manual_seed(config.seed)
  values = []
  for _ in tqdm.tqdm(range(n_batches), desc='likelihood', dynamic_ncols=True):
    x, _ = next(loader)
    if not toy:
      x = datasets.dequantize(x, gen)
    x = scaler(x)
    res = log_likelihood(model.sde, model, x, divergence=config.eval.bpd_divergence,
                         rtol=config.sampling.rtol, atol=config.sampling.atol, generator=gen)
    if toy:
      values.append((-res.logp / x[0].numel()).cpu())
    else:
      rng = (-1.0, 1.0) if config.data.centered else (0.0, 1.0)
      values.append(bits_per_dim(res.logp, x.shape, data_range=rng).cpu())
  v = torch.cat(values).double()
  unit = 'nats/dim' if toy else 'bits/dim'
  report = {'checkpoint': path, 'unit': unit, 'mean': v.mean().item(),
            'stderr': (v.std() / math.sqrt(len(v))).item() if len(v) > 1 else float('nan'),
            'num_examples': len(v)}
  with open(os.path.join(workdir, 'likelihood.json'), 'w') as f:
    json.dump(report, f, indent=2)
  print(f"{unit}: {report['mean']:.4f} +- {report['stderr']:.4f} over {len(v)} test examples "
        f'({os.path.basename(path)})')
  return report
