"""`ScoreModel`: the ONE place that knows what a network outputs and how it is told the time.

Samplers, losses, the likelihood and guidance only ever see `score_fn(x, t)`; every
convention that turns a raw network into a score lives here (cf. `get_score_fn` of
score_sde_pytorch and `EDMPrecond` of Karras et al. 2022):

Parameterisation (what the network predicts):
  - 'eps':   the noise z of x_t = alpha x_0 + sigma z, so score = -out / sigma
             (Ho et al. 2020; the DDPM++ VP models of Song et al. 2021).
  - 'score': the score itself, e.g. NCSN++ with `scale_by_sigma` (VE) or NCSNv2.
  - 'x0':    the clean data, so score = (alpha x0_hat - x) / sigma^2 (Tweedie).

Time label (what the network is conditioned on):
  - 't999':  999 t (continuous VP / sub-VP in score_sde_pytorch).
  - 'sigma': sigma(t) (continuous VE; NCSN++ embeds log sigma with Fourier features).
  - 'index': the integer chain index `sde.index_of_time(t)` (DDPM), N - 1 - i for VE (SMLD,
             whose sigmas are stored in descending order).
  - 't':     t itself.
For a discrete-time model of an SDE with a chain, eps / x0 outputs are scaled by the chain's
kernel (DDPM's sqrt(1 - abar_i)), as the reference does; otherwise by the continuous sigma(t).
The formulas themselves live in `score_sde.conventions`.
"""
from __future__ import annotations

import torch
from torch import nn

from score_sde import conventions
from score_sde.conventions import PARAMETERIZATIONS, TIME_LABELS
from score_sde.sdes import SDE


class ScoreModel(nn.Module):
  """Wrap `net(x, time_label, y=None) -> [B, ...]` and an SDE into `score(x, t, y=None)`.

  Args:
    net: the network; called with x `[B, ...]`, a `[B]` time label and optionally labels y.
    sde: the forward SDE, which fixes alpha(t) and sigma(t).
    parameterization: one of PARAMETERIZATIONS.
    time_label: one of TIME_LABELS.
  """

  def __init__(self, net: nn.Module, sde: SDE, parameterization: str = 'eps',
               time_label: str = 't999'):
    super().__init__()
    if parameterization not in PARAMETERIZATIONS:
      raise ValueError(f"unknown parameterization '{parameterization}'; "
                       f"choose one of: {', '.join(PARAMETERIZATIONS)}")
    if time_label not in TIME_LABELS:
      raise ValueError(f"unknown time label '{time_label}'; choose one of: {', '.join(TIME_LABELS)}")
    self.net, self.sde = net, sde
    self.parameterization, self.time_label = parameterization, time_label

  def labels(self, t: torch.Tensor) -> torch.Tensor:
    """The network's time conditioning for continuous times t `[B]`."""
    return conventions.time_label(self.time_label, self.sde, t)

  def kernel(self, t: torch.Tensor):
    """(alpha, sigma) `[B]` used to turn an eps / x0 output into the score."""
    return conventions.label_kernel(self.time_label, self.sde, t)

  def forward(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor | None = None):
    """Score s_theta(x, t[, y]) shaped like x (float32 whatever the autocast dtype)."""
    labels = self.labels(t)
    out = self.net(x, labels) if y is None else self.net(x, labels, y)
    out = out.to(x.dtype)
    if self.parameterization == 'score':
      return out
    alpha, sigma = self.kernel(t)
    return conventions.to_score(out, x, self.parameterization, alpha, sigma)

  def conventions(self) -> dict:
    """What a checkpoint records about this model (see `checkpoint_metadata`)."""
    return {'parameterization': self.parameterization, 'time_label': self.time_label}


def resolve_conventions(config, sde: SDE, default: tuple[str, str] = ('sde', 'sde')) -> tuple[str, str]:
  """(parameterization, time_label) for `config.model`.

  Explicit config values win. 'auto' takes the network's declared default (`default`, from
  its `NETWORKS` entry), where 'sde' means score_sde_pytorch's choice for this SDE
  (`sde.score_sde_conventions`). A discretely trained model (`training.continuous=False`)
  is always labelled by its chain index.
  """
  m, continuous = config.model, config.training.continuous
  param, label = m.parameterization, m.time_label
  ref_param, ref_label = sde.score_sde_conventions(continuous)
  if param == 'auto':
    param = ref_param if default[0] == 'sde' else default[0]
  if label == 'auto':
    if not continuous:
      label = 'index'
    else:
      label = ref_label if default[1] == 'sde' else default[1]
  return param, label
