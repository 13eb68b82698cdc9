"""Class labels in `score_sde.app.generate` for batches of any size: the optimized grid of a
class-conditional model is tuned on `sampling.grid_pilot_batch` draws and checked by its guard
on `GridTuning.guard` draws, so the labels it binds must follow the batch (a fixed label vector
of the pilot size failed with 'labels must be a scalar or shaped [B]')."""
from __future__ import annotations

import pytest
import torch

from score_sde.app.build import build_sde, create_model, solver_kwargs
from score_sde.app.generate import generate, optimized_times
from score_sde.configs.toy import get_config

pytestmark = pytest.mark.usefixtures('one_thread')


def _conditional_toy(label: int):
  config = get_config()
  config.model.class_conditional, config.model.hidden, config.model.depth = True, 16, 1
  config.sampling.grid, config.sampling.grid_pilot_batch, config.sampling.grid_max_knots = 'optimized', 8, 2
  config.sampling.steps, config.sampling.label, config.sampling.batch_size = 4, label, 16
  torch.manual_seed(0)
  return config, create_model(config, build_sde(config)).eval()


@pytest.mark.parametrize('label', [3, -1])
def test_optimized_grid_of_a_class_conditional_model(label):
  config, model = _conditional_toy(label)
  kwargs = solver_kwargs(config, 'dpm_solver')
  ts = optimized_times(config, model, 'dpm_solver', kwargs, None, torch.device('cpu'))
  assert len(ts) == config.sampling.steps + 1 and ts[0] == pytest.approx(model.sde.T)
  assert all(a > b for a, b in zip(ts, ts[1:]))
  x, nfe = generate(config, model, 16, 'dpm_solver', seed=0)
  assert x.shape == (16, 2) and torch.isfinite(x).all()
