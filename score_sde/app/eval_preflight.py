"""Checks run before the first sample of `--mode eval` / `sample` / `likelihood` / inpaint /
colorize, so that a run that would fail on a missing file or a bad option fails in seconds,
not after hours of sampling: the output folders are writable, the solver accepts its options
(a dry run on one sample with a zero score: no network call, milliseconds per step), the
class label is valid, the datasets the run will read load, and (eval, images) the Inception
weights load and the reference statistics (or the dataset they are computed from) are readable
and of the Inception features' dimension.
"""
from __future__ import annotations

import torch

from score_sde.app import eval_loop as loop
from score_sde.app.build import build_sde, data_shape, solver_kwargs
from score_sde.app.generate import class_labels_for
from score_sde.data import datasets
from score_sde.errors import UserError
from score_sde.evaluation.export import EXPORTS
from score_sde.sampling import SOLVERS, sample as run_sampler


class _ZeroScore:
  """score(x, t) = 0, with the model's interface: `score_and_variance` when the config's model
  learns its variance (config.model.learn_sigma), as the DDPM / DDIM samplers ask."""

  def __init__(self, learn_sigma: bool):
    if learn_sigma:
      self.score_and_variance = lambda x, t: (torch.zeros_like(x), torch.zeros_like(x))

  def __call__(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    return torch.zeros_like(x)


def check_solver(config, solver: str) -> None:
  """Run `solver` with config.sampling's options on one prior draw with a zero score (an
  optimized grid is replaced by 'logsnr': it is tuned on the network later); a bad option or
  step count is a one-line UserError."""
  if solver not in SOLVERS:
    raise UserError(f"unknown solver '{solver}'; choose one of: {', '.join(SOLVERS)}")
  s = config.sampling
  kwargs = solver_kwargs(config, solver)
  if kwargs.get('grid') == 'optimized':
    kwargs = {**kwargs, 'grid': 'logsnr'}
  class_labels_for(config, 1, 'cpu')  # a bad sampling.label is a ConfigError
  try:
    run_sampler(build_sde(config), _ZeroScore(config.model.learn_sigma), (1, *data_shape(config)),
                solver, steps=s.steps or None, eps=s.eps, denoise=s.noise_removal,
                generator=torch.Generator().manual_seed(0), device='cpu', **kwargs)
  except ValueError as e:
    raise UserError(f'{e} (config.sampling.*, checked before sampling)') from None


def check_eval(config, workdir: str, solver: str, cache: dict, device, flat: bool,
               main: bool = True) -> None:
  """Everything `--mode eval` will need, before its first sample (see the module docstring).
  Only rank 0 (`main`) loads the Inception network and the reference: it alone scores."""
  e = config.eval
  if e.export not in EXPORTS:
    raise UserError(f"config.eval.export = {e.export!r}: choose one of {EXPORTS}")
  if e.enable_sampling:
    if flat and e.export not in ('', 'npz'):
      raise UserError(f"config.eval.export = '{e.export}': 2-D toy samples are points, not "
                      "images; use 'npz'")
    check_solver(config, solver)
    if flat:
      datasets.load_split(config.data, 'test')
    elif main:
      loop.quality_reference(config, workdir, cache, device)
  if e.enable_bpd:
    datasets.load_split(config.data, e.bpd_dataset)


__all__ = ['check_solver', 'check_eval']
