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
The formulas themselves live in `score_sde.maths.conventions`.

Learned variances (`learn_sigma`, Nichol & Dhariwal 2021): the network outputs twice the data
channels; the first half is the parameterization's output, the second the raw interpolation
weight v of `conventions.learned_log_variance`. `forward` still returns the score alone, so
every sampler works unchanged; `score_and_variance` (or `forward(..., with_variance=True)`, the
form DDP needs during training) returns both.
"""
from __future__ import annotations

import torch
from torch import nn

from score_sde.maths import conventions
from score_sde.maths.conventions import PARAMETERIZATIONS, TIME_LABELS
from score_sde.maths.sdes import SDE


class ScoreModel(nn.Module):
  """Wrap `net(x, time_label, y=None) -> [B, ...]` and an SDE into `score(x, t, y=None)`.

  Args:
    net: the network; called with x `[B, ...]`, a `[B]` time label and optionally labels y.
    sde: the forward SDE, which fixes alpha(t) and sigma(t).
    parameterization: one of PARAMETERIZATIONS.
    time_label: one of TIME_LABELS.
    learn_sigma: the network also outputs IDDPM's variance interpolation v (doubled channels).
  """

  def __init__(self, net: nn.Module, sde: SDE, parameterization: str = 'eps',
               time_label: str = 't999', learn_sigma: bool = False):
    super().__init__()
    if parameterization not in PARAMETERIZATIONS:
      raise ValueError(f"unknown parameterization '{parameterization}'; "
                       f"choose one of: {', '.join(PARAMETERIZATIONS)}")
    if time_label not in TIME_LABELS:
      raise ValueError(f"unknown time label '{time_label}'; choose one of: {', '.join(TIME_LABELS)}")
    self.net, self.sde = net, sde
    self.parameterization, self.time_label = parameterization, time_label
    self.learn_sigma = bool(learn_sigma)

  def labels(self, t: torch.Tensor) -> torch.Tensor:
    """The network's time conditioning for continuous times t `[B]`."""
    return conventions.time_label(self.time_label, self.sde, t)

  def kernel(self, t: torch.Tensor):
    """(alpha, sigma) `[B]` used to turn an eps / x0 output into the score."""
    return conventions.label_kernel(self.time_label, self.sde, t)

  def forward(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor | None = None,
              with_variance: bool = False):
    """Score s_theta(x, t[, y]) shaped like x (float32 whatever the autocast dtype); with
    `with_variance`, the pair (score, v) with v shaped like x (learned-variance models only)."""
    labels = self.labels(t)
    out = self.net(x, labels) if y is None else self.net(x, labels, y)
    out = out.to(x.dtype)
    v = None
    if self.learn_sigma:
      if out.shape[1] != 2 * x.shape[1]:
        raise ValueError(f'a learn_sigma network must output {2 * x.shape[1]} channels, got {out.shape[1]}')
      out, v = out.chunk(2, dim=1)
    elif with_variance:
      raise ValueError('this model has no learned variance (model.learn_sigma is False)')
    if self.parameterization != 'score':
      alpha, sigma = self.kernel(t)
      out = conventions.to_score(out, x, self.parameterization, alpha, sigma)
    return (out, v) if with_variance else out

  @property
  def score_and_variance(self):
    """`(x, t, y=None) -> (score, v)` when the model learns its variance, else None
    (see `conventions.variance_fn`)."""
    if not self.learn_sigma:
      return None
    return lambda x, t, y=None: self(x, t, y, with_variance=True)

  def conventions(self) -> dict:
    """What a checkpoint records about this model (see `checkpoint_metadata`)."""
    meta = {'parameterization': self.parameterization, 'time_label': self.time_label}
    if self.learn_sigma:  # absent for fixed-variance models, so older checkpoints still match
      meta['learn_sigma'] = True
    return meta


def resolve_conventions(parameterization: str, time_label: str, continuous: bool, sde: SDE,
                        default: tuple[str, str] = ('sde', 'sde')) -> tuple[str, str]:
  """(parameterization, time_label) of a network from `model.parameterization` /
  `model.time_label` and `training.continuous`.

  Explicit values win. 'auto' takes the network's declared default (`default`, from its
  `NETWORKS` entry), where 'sde' means score_sde_pytorch's choice for this SDE
  (`sde.score_sde_conventions`). A discretely trained model (`continuous` False) is always
  labelled by its chain index.
  """
  param, label = parameterization, time_label
  ref_param, ref_label = sde.score_sde_conventions(continuous)
  if param == 'auto':
    param = ref_param if default[0] == 'sde' else default[0]
  if label == 'auto':
    if not continuous:
      label = 'index'
    else:
      label = ref_label if default[1] == 'sde' else default[1]
  return param, label
