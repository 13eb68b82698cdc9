"""A training step makes no host sync from our code: no `.item()`, `.cpu()`, `.tolist()`,
`.numpy()` or Python `bool/float/int` of a tensor is called from score_sde/ or run_lib.py
(on a GPU each of these waits for the device). The non-finite check is deferred to
`Trainer.check_finite`, called at log and checkpoint steps only; the fast path gives the same
weights as a run that checks every step."""
from __future__ import annotations

import contextlib
import os
import sys

import pytest
import torch

from configs.digits import get_config as digits_config
from configs.toy import get_config as toy_config
from score_sde.errors import TrainingError
from score_sde.app.build_train import build_trainer

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OURS = (os.path.join(ROOT, 'score_sde') + os.sep, os.path.join(ROOT, 'run_lib.py'))
METHODS = ('item', 'cpu', 'tolist', 'numpy', '__bool__', '__float__', '__int__', '__index__')


@contextlib.contextmanager
def count_host_syncs():
  """Patch the tensor methods that read device values on the host; record the calls made
  directly from our code as (file:line, method)."""
  calls, saved = [], {}

  def wrap(name, orig):
    def probe(self, *a, **k):
      frame = sys._getframe(1)
      if frame.f_code.co_filename.startswith(OURS):
        calls.append((f'{os.path.relpath(frame.f_code.co_filename, ROOT)}:{frame.f_lineno}', name))
      return orig(self, *a, **k)
    return probe
  for name in METHODS:
    saved[name] = getattr(torch.Tensor, name)
    setattr(torch.Tensor, name, wrap(name, saved[name]))
  try:
    yield calls
  finally:
    for name, orig in saved.items():
      setattr(torch.Tensor, name, orig)


def _config(kind: str):
  if kind == 'toy':
    config = toy_config()
    config.model.hidden, config.model.depth, config.data.toy_size = 16, 1, 256
  else:
    config = digits_config()
    config.model.nf = 8
    if kind == 'discrete_hybrid':
      config.training.continuous, config.model.num_scales = False, 100
      config.model.learn_sigma, config.training.loss = True, 'hybrid'
    if kind == 'likelihood_is':
      config.training.likelihood_weighting = config.training.importance_sampling = True
  config.training.batch_size = 8
  config.runtime.device = 'cpu'
  return config


@pytest.mark.parametrize('kind', ['toy', 'digits', 'discrete_hybrid', 'likelihood_is'])
def test_a_training_step_makes_no_host_sync(tmp_path, kind):
  trainer = build_trainer(_config(kind), str(tmp_path))
  trainer.train_step()   # first step: lazy set-up (device tables) may copy once
  with count_host_syncs() as calls:
    for _ in range(2):
      metrics = trainer.train_step()
  trainer.close()
  assert calls == [], calls
  assert torch.is_tensor(metrics['loss']) and torch.is_tensor(metrics['grad_norm'])


def test_the_probe_sees_a_sync(tmp_path):
  trainer = build_trainer(_config('toy'), str(tmp_path))
  trainer.train_step()
  with count_host_syncs() as calls:
    trainer.check_finite()   # the deliberate sync
  trainer.close()
  assert calls, 'the probe must notice a host read in our code'


def test_deferred_non_finite_check_names_the_first_bad_step(tmp_path):
  config = _config('toy')
  trainer = build_trainer(config, str(tmp_path))
  trainer.train_step()
  with torch.no_grad():
    trainer.params[0].fill_(float('nan'))
  trainer.train_step()          # step 2 is non-finite; no exception yet (no sync)
  trainer.train_step()
  with pytest.raises(TrainingError, match=r'non-finite loss \(nan\) at step 2;'):
    trainer.check_finite()
  with pytest.raises(TrainingError):
    trainer.save()              # never writes weights trained through a NaN
  assert not os.path.isdir(trainer.ckpt_dir) or not os.listdir(trainer.ckpt_dir)
  trainer.close()


def test_deferred_check_trains_exactly_like_the_per_step_check(tmp_path):
  weights = {}
  for policy in ('stop', 'skip'):   # 'skip' reads every loss on the host before stepping
    config = _config('digits')
    config.training.nan_policy = policy
    trainer = build_trainer(config, str(tmp_path / policy))
    for _ in range(3):
      trainer.train_step()
    weights[policy] = [p.detach().clone() for p in trainer.params]
    trainer.close()
  for a, b in zip(weights['stop'], weights['skip']):
    torch.testing.assert_close(a, b, rtol=0, atol=0)


@pytest.mark.parametrize('solver,options', [
    ('pc', {}), ('pc', {'predictor': 'euler_maruyama', 'corrector': 'none'}), ('ddpm', {}),
    ('ddim', {}), ('dpm_solver', {'order': 3}), ('unipc', {}), ('heun', {})])
def test_sampling_loops_never_read_the_device(solver, options):
  """On the `meta` device every tensor op works but any read of a value on the host raises,
  so a loop that runs there has no device-to-host sync per step (the schedule is host math)."""
  from score_sde.app.build import create_model
  from score_sde.sampling import sample
  from score_sde.app.build import build_sde
  config = _config('digits')
  config.training.continuous = solver not in ('ddpm', 'ddim')
  sde = build_sde(config)
  model = create_model(config, sde).to('meta').eval()
  res = sample(sde, model, (2, 1, 8, 8), solver, steps=4, device='meta', **options)
  assert res.x.device.type == 'meta' and res.x.shape == (2, 1, 8, 8)


def _train(tmp_path, name, steps=3, **runtime):
  config = _config('digits')
  config.model.dropout = 0.0
  for k, v in runtime.items():
    setattr(config.runtime, k, v)
  trainer = build_trainer(config, str(tmp_path / name))
  losses = [float(trainer.train_step()['loss']) for _ in range(steps)]
  weights = [p.detach().clone() for p in trainer.params]
  trainer.close()
  return losses, weights


def test_fast_paths_train_like_the_plain_path(tmp_path):
  """runtime.channels_last trains the same weights as the plain path (to float rounding), and
  runtime.amp='bf16' the same losses to bf16 precision."""
  base_loss, base_w = _train(tmp_path, 'plain')
  cl_loss, cl_w = _train(tmp_path, 'cl', channels_last=True)
  bf_loss, _ = _train(tmp_path, 'bf16', amp='bf16')
  torch.testing.assert_close(torch.tensor(cl_loss), torch.tensor(base_loss), rtol=1e-5, atol=1e-6)
  for a, b in zip(cl_w, base_w):
    torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
  torch.testing.assert_close(torch.tensor(bf_loss), torch.tensor(base_loss), rtol=2e-2, atol=1e-3)


@pytest.mark.skipif(not torch.cuda.is_available(), reason='needs a CUDA GPU')
@pytest.mark.parametrize('kind', ['digits', 'discrete_hybrid'])
def test_cuda_sync_debug_mode_sees_no_sync_in_a_training_step(tmp_path, kind):
  """On a GPU, torch's own sync detector (which also sees syncs inside torch ops) stays silent
  over two training steps."""
  config = _config(kind)
  config.runtime.device = 'cuda'
  trainer = build_trainer(config, str(tmp_path))
  trainer.train_step()
  torch.cuda.synchronize()
  torch.cuda.set_sync_debug_mode('error')
  try:
    for _ in range(2):
      trainer.train_step()
  finally:
    torch.cuda.set_sync_debug_mode('default')
    trainer.close()
