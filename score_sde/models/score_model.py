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
  - 'index': the discrete step: t (N - 1) for VP (DDPM), round((T - t)(N - 1)) for VE
             (SMLD, whose sigmas are stored in descending order).
  - 't':     t itself.
For a discrete-time VP model the 'eps' scaling uses the DDPM table's sqrt(1 - abar_i), as
the reference does; otherwise the continuous sigma(t).
"""
from __future__ import annotations

import torch
from torch import nn

from score_sde.sdes import SDE, VESDE, VPSDE
from score_sde.utils import bcast

PARAMETERIZATIONS = ('eps', 'score', 'x0')
TIME_LABELS = ('t999', 'sigma', 'index', 't')


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
    if self.time_label == 't999':
      return 999.0 * t
    if self.time_label == 'sigma':
      return self.sde.marginal_std(t)
    if self.time_label == 'index':
      if isinstance(self.sde, VESDE):  # SMLD stores its sigmas in descending order
        return (self.sde.N - 1) - self.sde.step_index(t)
      return t * (self.sde.N - 1)
    return t

  def std(self, t: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """sigma used to scale an eps/x0 output: the DDPM table for discrete VP, else sigma(t)."""
    if self.time_label == 'index' and isinstance(self.sde, VPSDE):
      return self.sde.sqrt_1m_alphas_cumprod[self.sde.step_index(t).cpu()].to(t)
    return self.sde.marginal_std(t)

  def forward(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor | None = None):
    """Score s_theta(x, t[, y]) shaped like x (float32 whatever the autocast dtype)."""
    labels = self.labels(t)
    out = self.net(x, labels) if y is None else self.net(x, labels, y)
    out = out.to(x.dtype)
    if self.parameterization == 'score':
      return out
    std = bcast(self.std(t, labels), x)
    if self.parameterization == 'eps':
      return -out / std
    alpha = bcast(self.sde.mean_coeff(t), x)
    return (alpha * out - x) / std ** 2


def resolve_conventions(config, sde: SDE) -> tuple[str, str]:
  """Pick (parameterization, time_label) for `config.model`, resolving 'auto' as
  score_sde_pytorch does: VP/sub-VP networks predict eps; VE networks (NCSN++ with
  `scale_by_sigma`, NCSNv2) are read as the score itself; continuous VP labels are
  999 t, continuous VE labels are sigma(t), discrete models get the step index. The small
  toy networks ('mlp', 'unet') predict eps with label 999 t for every SDE.
  """
  m, continuous = config.model, config.training.continuous
  param, label = m.parameterization, m.time_label
  small = m.name in ('mlp', 'unet')
  if param == 'auto':
    param = 'score' if isinstance(sde, VESDE) and not small else 'eps'
  if label == 'auto':
    if not continuous:
      label = 'index'
    elif isinstance(sde, VESDE) and not small:
      label = 'sigma'
    else:
      label = 't999'
  return param, label
