"""From a checkpoint to images in three lines:

    pipe = score_sde.load('runs/digits')      # a workdir (its newest checkpoint) or a checkpoint file
    images = pipe.sample(16, solver='dpm_solver', steps=20, seed=0)   # uint8 [16, C, H, W]
    pipe.save_grid(images, 'grid.png')

Our checkpoints carry their resolved config, so `load` needs none; score_sde_pytorch's take
one (`load(path, config='vp_cifar')`: a ConfigDict, a config file or a packaged config's
name). Images go in and out as uint8 `[B, C, H, W]` (floats in [0, 1] are taken too); 2-D
toys as float vectors `[B, D]` in data units. Latents (Song et al. 2021, Sec. 4.3): `encode`
maps data to x_T through the probability-flow ODE (deterministic, invertible), `decode` maps
back, `interpolate` decodes the spherical interpolation of two latents, and `sample(...,
temperature=)` scales the prior draw. Everything runs through score_sde.app.generate and the
samplers / likelihood of the command-line modes.
"""
from __future__ import annotations

import math
import os

import torch

from score_sde.app import config_check
from score_sde.app.build import data_shape
from score_sde.app.cli import resolve_config
from score_sde.app.eval_loop import _batch_values
from score_sde.app.eval_model import load_eval_model
from score_sde.app.generate import generate, guided_score_fn
from score_sde.app.loading import checkpoint_config, load_guidance_classifier
from score_sde.data import datasets
from score_sde.errors import ConfigError, UserError
from score_sde.files import checkpoint as ckpt
from score_sde.files import visualize
from score_sde.files.workdir import ckpt_dir, latest_checkpoint, write_output
from score_sde.maths.pf_ode import ode_integrate, probability_flow_drift


def load(path: str, config=None, device: str | None = None) -> 'Pipeline':
  """A `Pipeline` for workdir `path` (its newest checkpoint) or checkpoint file `path`, with
  the config the checkpoint records, or `config` (a ConfigDict, a config file `FILE.py[:ARG]`
  or a packaged config's name, e.g. 'vp_cifar'; needed for score_sde_pytorch's files).
  `device`: 'cpu', 'cuda', ... (default: config.runtime.device). Problems are one-line
  UserErrors."""
  workdir, checkpoint = _locate(path)
  if config is None:
    config = _recorded_config(checkpoint)
    config.runtime.device = 'auto'  # where it was trained says nothing about this machine
  elif isinstance(config, str):
    config = config_from_file(config)
  else:
    config = config.copy_and_resolve_references()
  config_check.validate(config)
  if device is not None:
    config.runtime.device = str(device)
  model, checkpoint = load_eval_model(config, workdir, checkpoint)
  return Pipeline(config, model, checkpoint, workdir)


def _locate(path: str) -> tuple[str, str]:
  """(workdir or '', checkpoint file) of a workdir or a checkpoint file."""
  path = os.fspath(path)
  if os.path.isdir(path):
    found = latest_checkpoint(path)
    if found is None:
      raise UserError(f'no checkpoint in {ckpt_dir(path)}; train first (--mode train) or give a '
                      'checkpoint file')
    return path, found[1]
  if not os.path.isfile(path):
    raise UserError(f'{path}: no such workdir or checkpoint file')
  folder = os.path.dirname(os.path.abspath(path))
  return (os.path.dirname(folder) if os.path.basename(folder) == 'checkpoints' else ''), path


def _recorded_config(checkpoint: str):
  """The config recorded in `checkpoint` (read fully, checksums verified)."""
  try:
    state = ckpt.read_checkpoint(checkpoint)
  except (ckpt.CheckpointError, OSError) as e:
    raise UserError(str(e)) from None
  try:
    return checkpoint_config(state, checkpoint)
  except ckpt.CheckpointError as e:
    raise UserError(f"{e} (score_sde.load(path, config=...))") from None


def config_from_file(spec: str):
  """The config of `FILE.py[:ARG]` or of a packaged config `NAME[:ARG]` (`get_config(ARG)`)."""
  import importlib.util
  file, sep, arg = resolve_config(spec).partition(':')
  try:
    module_spec = importlib.util.spec_from_file_location('_score_sde_user_config', file)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    return module.get_config(arg) if sep else module.get_config()
  except Exception as e:  # noqa: BLE001 - anything raised by the user's config file
    raise ConfigError(f'config file {file} failed to load: {type(e).__name__}: {e}') from None


class Pipeline:
  """A trained score model with its config: sampling, likelihood and latents in data units.

  Attributes: config (the resolved config), model (the EMA `ScoreModel`, eval mode),
  checkpoint (its file), workdir ('' for a file outside a workdir), device."""

  def __init__(self, config, model, checkpoint: str = '', workdir: str = ''):
    self.config, self.model, self.checkpoint, self.workdir = config, model, checkpoint, workdir
    self.device = next(model.parameters()).device
    self.shape = data_shape(config)
    self.images = len(self.shape) == 3

  def __repr__(self) -> str:
    return (f"Pipeline({self.config.model.name}, {self.model.sde.describe().get('name', '?')}, "
            f'data {list(self.shape)}, {self.checkpoint})')

  # ---------------------------------------------------------------- sampling
  def sample(self, num_samples: int = 16, solver: str | None = None, steps: int | None = None,
             seed: int = 0, label=None, guidance_scale: float | None = None,
             classifier_scale: float | None = None, temperature: float = 1.0,
             progress: bool = False) -> torch.Tensor:
    """`num_samples` samples: uint8 `[n, C, H, W]` images, or float `[n, D]` toy vectors.

    solver / steps: as --solver / sampling.steps (default: the config's). label: a class (int),
    `[n]` labels, or None (the config's sampling.label; -1 = one grid row per class) for
    class-conditional models and classifier guidance. guidance_scale: classifier-free w (1:
    conditional). classifier_scale: > 0 guides with the workdir's noisy classifier.
    temperature: scale of the prior draw x_T (< 1: smoother, less varied samples)."""
    cfg = self._config(steps=steps, label=label, guidance_scale=guidance_scale,
                       classifier_scale=classifier_scale)
    if not (isinstance(temperature, (int, float)) and math.isfinite(temperature) and temperature > 0):
      raise UserError(f'temperature = {temperature!r}: must be a number > 0')
    classifier = load_guidance_classifier(cfg, self.workdir, self.device)
    labels = self._labels(label, num_samples)
    bar = None
    if progress:
      from score_sde.runtime.progress import progress as progress_bar
      bar = lambda it: progress_bar(it, desc=f'sample ({solver or cfg.sampling.method})', leave=False)
    x, _ = generate(cfg, self.model, int(num_samples), solver, progress=bar, classifier=classifier,
                    seed=seed, class_labels=labels, temperature=float(temperature))
    return self._output(x)

  def save_grid(self, images, path: str, nrow: int | None = None) -> str:
    """Write images (uint8 or [0, 1] floats `[B, C, H, W]`) as a PNG grid of `nrow` columns,
    or toy vectors `[B, 2]` as a density picture; returns `path`."""
    x = self._input(images)
    write_output(path, lambda p: visualize.save_samples_png(x, p, nrow=nrow))
    return path

  # ---------------------------------------------------------------- likelihood
  def log_likelihood(self, x, seed: int = 0, method: str = 'ode') -> torch.Tensor:
    """Bits/dim `[B]` (float64) of uint8 images `x` (nats/dim for toy vectors), uniformly
    dequantised as --mode likelihood does, through the PF-ODE ('ode'; eval.bpd_divergence,
    sampling.rtol / atol) or the DDPM variational bound ('vlb'). A conditional model's is
    its unconditional density (the null label)."""
    if method not in ('ode', 'vlb'):
      raise UserError(f"method = {method!r}: choose 'ode' or 'vlb'")
    x = self._input(x).to(self.device)
    gen = torch.Generator(device=self.device).manual_seed(seed)
    bs = self.config.eval.batch_size
    values = [torch.from_numpy(_batch_values(self.config, self.model, x[i:i + bs], not self.images,
                                             gen, method)) for i in range(0, len(x), bs)]
    return torch.cat(values)

  # ---------------------------------------------------------------- latents
  def encode(self, x, label=None, rtol: float | None = None, atol: float | None = None) -> torch.Tensor:
    """Latents x_T `[B, ...]` (float) of data `x` through the probability-flow ODE from
    sampling.eps to T (the config's ode_method, rtol / atol unless given). `label`: the class
    the score is conditioned on (conditional models; None: unconditional)."""
    x = datasets.get_data_scaler(self.config.data)(self._input(x).to(self.device))
    return self._flow(x, self.config.sampling.eps, self.model.sde.T, label, rtol, atol).cpu()

  def decode(self, z, label=None, rtol: float | None = None, atol: float | None = None,
             uint8: bool = True) -> torch.Tensor:
    """Data from latents `z` `[B, ...]` through the probability-flow ODE from T to
    sampling.eps: uint8 images (floats in [0, 1] if not `uint8`), or toy vectors.
    decode(encode(x)) = x up to the solver's tolerance."""
    z = torch.as_tensor(z, dtype=torch.float32).to(self.device)
    self._check_shape(z)
    x = self._flow(z, self.model.sde.T, self.config.sampling.eps, label, rtol, atol)
    x = datasets.get_data_inverse_scaler(self.config.data)(x).cpu()
    return self._output(x) if uint8 else x

  def interpolate(self, x0, x1, num: int = 8, label=None, uint8: bool = True) -> torch.Tensor:
    """`num` images (both ends included) decoded from the spherical interpolation of the
    latents of images `x0` and `x1` (each `[C, H, W]` or `[1, C, H, W]`)."""
    if not isinstance(num, int) or num < 2:
      raise UserError(f'num = {num!r}: an interpolation needs an integer >= 2')
    pair = torch.cat([self._input(x0), self._input(x1)])
    if len(pair) != 2:
      raise UserError(f'interpolate takes two single images, got {len(pair)} in all')
    z = self.encode(pair, label)
    return self.decode(slerp(z[0], z[1], torch.linspace(0, 1, num)), label, uint8=uint8)

  # ---------------------------------------------------------------- helpers
  def _flow(self, x, t0: float, t1: float, label, rtol, atol) -> torch.Tensor:
    """x integrated along the PF-ODE from t0 to t1, in batches of sampling.batch_size."""
    s, out = self.config.sampling, []
    if label is not None and not self.config.model.class_conditional:
      raise UserError('label needs a class-conditional model (model.class_conditional)')
    labels = self._labels(label, len(x))  # None: unconditional (the null label)
    try:
      with torch.no_grad():
        for i in range(0, len(x), s.batch_size):
          y = None if labels is None else labels[i:i + s.batch_size]
          drift = probability_flow_drift(self.model.sde, guided_score_fn(self.config, self.model, y))
          out.append(ode_integrate(drift, x[i:i + s.batch_size], t0, t1, method=s.ode_method,
                                   rtol=rtol or s.rtol, atol=atol or s.atol))
    except (ValueError, AssertionError) as e:
      raise UserError(f'the probability-flow ODE failed: {e}') from None
    return torch.cat(out)

  def _config(self, steps=None, label=None, guidance_scale=None, classifier_scale=None):
    """A copy of the config with these sampling settings (None: the config's)."""
    c = self.config.copy_and_resolve_references()
    conditional = c.model.class_conditional
    if guidance_scale is not None and not conditional:
      raise UserError('guidance_scale needs a class-conditional model (model.class_conditional)')
    if label is not None and not conditional and not (classifier_scale or c.sampling.classifier_scale):
      raise UserError('label needs a class-conditional model or classifier guidance '
                      '(classifier_scale > 0)')
    for key, value in (('steps', steps), ('guidance_scale', guidance_scale),
                       ('classifier_scale', classifier_scale)):
      if value is not None:
        c.sampling[key] = value
    config_check.validate(c)
    return c

  def _labels(self, label, n: int):
    """`[n]` long labels for a class or `[n]` classes `label` (checked); None for None."""
    if label is None:
      return None
    k = self.config.data.num_classes
    y = torch.as_tensor(label).long().to(self.device).reshape(-1)
    y = y.expand(n) if y.numel() == 1 else y
    if isinstance(label, bool) or len(y) != n or bool(((y < 0) | (y >= k)).any()):
      raise UserError(f'label must be a class in [0, {k - 1}] or {n} of them, got {label!r}')
    return y

  def _input(self, x) -> torch.Tensor:
    """Data `[B, ...]` as float: uint8 images / 255, [0, 1] float images, or toy vectors."""
    x = torch.as_tensor(x)
    if x.ndim == len(self.shape):
      x = x[None]
    self._check_shape(x)
    if not self.images:
      return x.float()
    if x.dtype == torch.uint8:
      return x.float() / 255
    x = x.float()
    if not bool(torch.isfinite(x).all()) or float(x.min()) < 0 or float(x.max()) > 1:
      raise UserError('images must be uint8, or floats in [0, 1] (got values outside)')
    return x

  def _check_shape(self, x: torch.Tensor) -> None:
    if tuple(x.shape[1:]) != self.shape or len(x) == 0:
      raise UserError(f'expected a batch shaped [B, {", ".join(map(str, self.shape))}] for this '
                      f'model, got {list(x.shape)}')

  def _output(self, x: torch.Tensor) -> torch.Tensor:
    """Data-space floats to uint8 images (rounded, clamped to [0, 255]) or toy vectors."""
    return (x.clamp(0, 1) * 255).round().to(torch.uint8) if self.images else x


def slerp(z0: torch.Tensor, z1: torch.Tensor, alphas: torch.Tensor) -> torch.Tensor:
  """Spherical interpolation `[len(alphas), ...]` between latents z0 and z1 (same shape):
  sin((1 - a) theta) / sin(theta) z0 + sin(a theta) / sin(theta) z1, theta the angle between
  them (linear when they are parallel); a = 0 gives z0, a = 1 gives z1."""
  a = alphas.to(z0).reshape(-1, *([1] * z0.ndim))
  cos = torch.dot(z0.flatten(), z1.flatten()) / (z0.norm() * z1.norm()).clamp_min(1e-12)
  theta = torch.arccos(cos.clamp(-1, 1))
  if float(theta) < 1e-4:
    return (1 - a) * z0 + a * z1
  return (torch.sin((1 - a) * theta) * z0 + torch.sin(a * theta) * z1) / torch.sin(theta)
