"""The build layer of training: a `Trainer` made from the config (its task, settings, data, SDE
and optimizer), and the run's config record that its checkpoints carry."""
from __future__ import annotations

import torch

from score_sde.app.build import (build_classifier, build_loss, build_optimizer, build_sde, create_model,
                                 data_shape, is_vector_data)
from score_sde.app.loading import trained_with_hint
from score_sde.app.run_record import CONFIG_KEY, check_resume, config_to_json
from score_sde.data import datasets
from score_sde.errors import UserError
from score_sde.files.workdir import TASKS
from score_sde.runtime import distributed
from score_sde.runtime.device import get_device
from score_sde.training.task import ClassifierTask, ScoreTask, TrainSettings
from score_sde.training.trainer import Trainer


class ConfigRecord:
  """The resolved config as a training run records it: `json()` is the checkpoint entry,
  `check_resume` refuses a resume whose model-defining keys changed, `hint` names the flags a
  checkpoint was trained with (see `score_sde.app.run_record`)."""

  def __init__(self, config):
    self.config = config

  def json(self) -> dict:
    return {CONFIG_KEY: config_to_json(self.config)}

  def check_resume(self, state: dict, task: str, where: str, record_path: str) -> None:
    check_resume(state, self.config, task, where, record_path)

  def hint(self, state: dict, path: str) -> str:
    return trained_with_hint(state, self.config, path)


def train_settings(config) -> TrainSettings:
  """The loop's settings of `config` (see `TrainSettings`)."""
  tr, rt, o = config.training, config.runtime, config.optim
  return TrainSettings(
      seed=config.seed, batch_size=tr.batch_size, grad_accum=tr.grad_accum,
      nan_policy=tr.nan_policy, max_nan_skips=tr.max_nan_skips, snapshot_freq=tr.snapshot_freq,
      keep_checkpoints=tr.keep_checkpoints, t_min=tr.eps,
      uniform_dequantization=config.data.uniform_dequantization, channels_last=rt.channels_last,
      compile=rt.compile, amp=rt.amp, ema_rate=config.model.ema_rate, lr=o.lr, warmup=o.warmup,
      grad_clip=o.grad_clip, num_workers=config.data.num_workers)


def build_task(config, sde, task: str):
  """The `ScoreTask` / `ClassifierTask` named `task`, its model built from `config`."""
  if task not in TASKS:
    raise ValueError(f"unknown training task '{task}'; choose one of: {', '.join(TASKS)}")
  if task == 'classifier':
    return ClassifierTask(build_classifier(config, is_vector_data(config)))
  m = config.model
  return ScoreTask(create_model(config, sde), build_loss(config, sde), m.name,
                   num_classes=config.data.num_classes if m.class_conditional else 0,
                   p_uncond=config.training.p_uncond)


def load_train_data(config):
  """The training split of `config.data`, checked against the shape the model expects."""
  data = datasets.load_split(config.data, 'train')
  want, got = data_shape(config), tuple(data[0][0].shape)
  if got != want:
    raise UserError(f'data has shape {got} per item but the config expects {want} '
                    '(check config.data.image_size / num_channels)')
  return data


def build_trainer(config, workdir: str, task: str = 'score') -> Trainer:
  """A `Trainer` of `task` ('score' | 'classifier') for `config` in `workdir`: the process
  group joined first, then every rank seeds and builds the same initial weights."""
  dist = distributed.setup(get_device(config.runtime))
  torch.manual_seed(config.seed)  # identical initial weights on every rank
  sde = build_sde(config)
  try:
    made = build_task(config, sde, task)
  except ValueError as e:
    raise UserError(str(e)) from None
  return Trainer(made, sde, train_settings(config), load_train_data(config),
                 datasets.get_data_scaler(config.data), lambda params: build_optimizer(config, params),
                 dist, workdir, ConfigRecord(config))
