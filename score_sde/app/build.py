"""The build layer: config values turned into the library's objects, so that the maths modules
take objects and never a whole config. (First piece: the training loss.)"""
from __future__ import annotations

from score_sde.data.datasets import data_range
from score_sde.training.losses import get_loss_fn
from score_sde.maths.sdes import SDE
from score_sde.models.classifier import MLPClassifier, NoisyClassifier
from score_sde.training.vlb_loss import get_vlb_loss_fn


def build_loss(config, sde: SDE):
  """The training loss of `config.training`: weighted denoising score matching (`losses`), or
  IDDPM's hybrid / VLB objectives (`vlb_loss`) for training.loss 'hybrid' / 'vlb'."""
  tr = config.training
  if tr.loss != 'dsm':
    return get_vlb_loss_fn(sde, tr.loss, learn_sigma=config.model.learn_sigma,
                           vlb_weight=tr.vlb_weight, reduce_mean=tr.reduce_mean,
                           data_range=data_range(config))
  return get_loss_fn(sde, continuous=tr.continuous,
                     weighting='likelihood' if tr.likelihood_weighting else 'score',
                     importance_sampling=tr.importance_sampling, reduce_mean=tr.reduce_mean,
                     eps=tr.eps)


def build_classifier(config, flat: bool):
  """The noisy classifier for `config.data` (`score_sde.models.classifier`): an MLP for flat
  (toy) data, else the conv encoder; sizes from `config.classifier`."""
  c, d = config.classifier, config.data
  if flat:
    return MLPClassifier(d.num_channels, d.num_classes, hidden=c.hidden, depth=c.depth)
  return NoisyClassifier(d.num_channels, d.num_classes, ch=c.ch, levels=c.levels)
