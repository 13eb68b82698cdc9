"""What a training run trains, and the settings of its loop: the objects the build layer
(`score_sde.app.build.build_trainer`) makes from the config, so that `Trainer` reads no config.

A task owns the trained module and everything that depends on what it is: the loss of one
micro-batch, the module a checkpoint holds, the metadata a checkpoint records about it, and the
check of that metadata on resuming. `ScoreTask` trains a `ScoreModel` (denoising score matching,
or IDDPM's hybrid / VLB objectives); `ClassifierTask` a noisy classifier for guidance.
"""
from __future__ import annotations

import dataclasses

import torch

from score_sde.maths.sdes import SDE
from score_sde.models import ScoreModel, check_metadata, checkpoint_metadata
from score_sde.training.classifier import check_classifier_metadata, classifier_loss, classifier_metadata


NAN_POLICIES = ('stop', 'skip')   # on a non-finite loss: stop, or skip the step (bounded)


@dataclasses.dataclass(frozen=True)
class TrainSettings:
  """The loop's settings (config keys in brackets).

  seed [seed]; batch_size: the global batch [training.batch_size]; grad_accum; nan_policy,
  max_nan_skips; snapshot_freq, keep_checkpoints; t_min: the smallest training time
  [training.eps]; uniform_dequantization [data]; channels_last, compile, amp ('none' | 'bf16')
  [runtime]; ema_rate [model]; lr, warmup, grad_clip [optim]; num_workers [data].
  """
  seed: int
  batch_size: int
  grad_accum: int = 1
  nan_policy: str = 'stop'
  max_nan_skips: int = 20
  snapshot_freq: int = 50000
  keep_checkpoints: int = 3
  t_min: float = 1e-5
  uniform_dequantization: bool = False
  channels_last: bool = False
  compile: bool = False
  amp: str = 'none'
  ema_rate: float = 0.9999
  lr: float = 2e-4
  warmup: int = 5000
  grad_clip: float = 1.0
  num_workers: int = 0


class ScoreTask:
  """Train `model` (a `ScoreModel` of network `network`) with `loss_fn` (`score_sde.training.losses`
  or a `VLBLoss`). With `num_classes` > 0 the model is class conditional and labels are dropped
  to the null label `num_classes` with probability `p_uncond` (classifier-free guidance)."""
  name = 'score'
  autocast = True   # the loss runs under runtime.amp

  def __init__(self, model: ScoreModel, loss_fn, network: str, num_classes: int = 0,
               p_uncond: float = 0.0):
    self.model, self.loss_fn, self.network = model, loss_fn, network
    self.num_classes, self.p_uncond = num_classes, p_uncond

  @property
  def resampler(self):
    """The VLB loss's importance sampler of t (None for the other losses)."""
    return getattr(self.loss_fn, 'resampler', None)

  def weights(self) -> torch.nn.Module:
    """The module a checkpoint holds: the network, as score_sde_pytorch."""
    return self.model.net

  def metadata(self, sde: SDE) -> dict:
    return checkpoint_metadata(self.network, self.model)

  def check(self, meta: dict | None, sde: SDE, where: str) -> None:
    check_metadata(meta, self.network, self.model, where)

  def loss(self, net, sde: SDE, x: torch.Tensor, y: torch.Tensor, noise: dict, t_min: float):
    """(loss, (t_index, L_t bits) for the VLB t sampler or None) of micro-batch x `[b, ...]`,
    labels y `[b]`, with its share of the step's noise (u, z, drop)."""
    if self.num_classes:
      y = torch.where(noise['drop'] < self.p_uncond, torch.full_like(y, self.num_classes), y)
    else:
      y = None
    out = self.loss_fn(net, x, y, noise=(noise['u'], noise['z']))
    record = (out.t_index, out.vlb_terms.float()) if out.vlb_terms is not None else None
    return out.loss, record


class ClassifierTask:
  """Train a noisy classifier p(y | x_t, t) by cross-entropy (`score_sde.training.classifier`)."""
  name = 'classifier'
  resampler = None
  autocast = False  # the classifier trains in fp32

  def __init__(self, model: torch.nn.Module):
    self.model = model

  def weights(self) -> torch.nn.Module:
    return self.model

  def metadata(self, sde: SDE) -> dict:
    return classifier_metadata(sde)

  def check(self, meta: dict | None, sde: SDE, where: str) -> None:
    check_classifier_metadata(meta, sde, where)

  def loss(self, net, sde: SDE, x: torch.Tensor, y: torch.Tensor, noise: dict, t_min: float):
    return classifier_loss(net, sde, x, y, eps=t_min, noise=(noise['u'], noise['z'])), None
