"""Learned variances and IDDPM's objectives (score_sde.training.vlb_loss) through the trainer and the
command line: the networks' doubled outputs, the hybrid loss training only the variance with
its VLB term, the importance sampler of t and its place in the checkpoint, and
`--mode likelihood --config.eval.bpd_method=both`."""
from __future__ import annotations

import json

import pytest
import torch
from conftest import run_main

from configs.digits import get_config as digits_config
from score_sde.errors import ConfigError
from score_sde.app.build import create_model
from score_sde.sdes import VPSDE
from score_sde.training.vlb_loss import TimestepResampler, get_vlb_loss_fn

DIGITS = ['--config', 'configs/digits.py', '--config.model.nf=8', '--config.training.batch_size=8',
          '--config.eval.batch_size=6', '--config.eval.bpd_num_batches=1', '--config.training.continuous=False',
          '--config.model.num_scales=100', '--config.sampling.rtol=1e-2', '--config.sampling.atol=1e-2']


def tiny_config(name='unet', **model):
  config = digits_config()
  config.model.nf, config.model.learn_sigma, config.model.name = 8, True, name
  config.training.continuous = False
  config.model.num_scales = 100
  for k, v in model.items():
    setattr(config.model, k, v)
  if name in ('ncsnpp', 'ddpm'):   # GroupNorm(32) needs >= 32 channels
    config.model.nf, config.model.ch_mult, config.model.num_res_blocks = 32, (1, 1), 1
    config.model.attn_resolutions = (4,)
  return config


@pytest.mark.parametrize('name', ['unet', 'ddpm', 'ncsnpp', 'mlp'])
def test_learn_sigma_doubles_the_output_and_exposes_the_variance(name):
  config = tiny_config(name)
  if name == 'mlp':
    config.data.num_channels, config.model.hidden, config.model.depth = 2, 16, 1
  sde = VPSDE(N=100)
  model = create_model(config, sde)
  x = torch.randn(3, 2) if name == 'mlp' else torch.randn(3, 1, 8, 8)
  t = torch.full((3,), 0.5)
  score, v = model.score_and_variance(x, t)
  assert score.shape == v.shape == x.shape
  torch.testing.assert_close(model(x, t), score)
  config.model.learn_sigma = False
  plain = create_model(config, sde)
  assert plain.score_and_variance is None
  with pytest.raises(ValueError, match='no learned variance'):
    plain(x, t, with_variance=True)


def test_hybrid_loss_trains_the_variance_only_through_the_vlb_term():
  config = tiny_config()
  sde = VPSDE(N=100)
  model = create_model(config, sde)
  for p in model.net.out[-1].parameters():  # the zero-initialised output conv
    torch.nn.init.normal_(p, std=0.01)
  x = torch.randint(0, 256, (6, 1, 8, 8)) / 127.5 - 1
  loss_fn = get_vlb_loss_fn(sde, 'hybrid', learn_sigma=True, vlb_weight=1e-3)
  out = loss_fn(model, x, generator=torch.Generator().manual_seed(0))
  assert torch.isfinite(out.loss) and out.t_index.shape == (6,) and out.vlb_terms is None
  out.loss.backward()
  w = model.net.out[-1].weight.grad
  assert w[1].abs().sum() > 0 and w[0].abs().sum() > 0   # variance and mean channels both learn
  # the VLB term alone moves only the variance channel (stop-gradient on the mean)
  model.zero_grad()
  vlb_only = get_vlb_loss_fn(sde, 'hybrid', learn_sigma=True, vlb_weight=1.0)
  mse_only = get_vlb_loss_fn(sde, 'hybrid', learn_sigma=True, vlb_weight=0.0)
  g = torch.Generator().manual_seed(0)
  (vlb_only(model, x, generator=g).loss - mse_only(model, x, generator=torch.Generator().manual_seed(0)).loss).backward()
  assert model.net.out[-1].weight.grad[0].abs().max() < 1e-6 < model.net.out[-1].weight.grad[1].abs().max()


def test_resampler_is_uniform_until_warm_then_follows_the_second_moment():
  r = TimestepResampler(4, history=2, uniform_prob=0.0)
  u = torch.rand(10000, generator=torch.Generator().manual_seed(0))
  t, w = r.draw(u)
  assert torch.allclose(w, torch.ones_like(w)) and set(t.tolist()) == {0, 1, 2, 3}
  r.update(torch.tensor([0, 0, 1, 1, 2, 2, 3, 3, 3]), torch.tensor([1., 1., 2., 2., 3., 3., 9., 4., 4.]))
  p = r.probabilities()
  torch.testing.assert_close(p, torch.tensor([1., 2., 3., 4.], dtype=torch.float64) / 10)
  t, w = r.draw(u)
  losses = torch.tensor([1., 2., 3., 4.])
  # importance weights keep the estimate unbiased: E_p[w L_t] = mean_t L_t
  assert abs((w * losses[t]).mean().item() - losses.mean().item()) < 0.05
  r2 = TimestepResampler(4, history=2, uniform_prob=0.0)
  r2.load_state_dict(r.state_dict())
  torch.testing.assert_close(r2.probabilities(), r.probabilities())


def test_bad_variational_configs_are_one_line_errors():
  from score_sde.app.config_check import validate
  config = tiny_config()
  config.training.loss = 'hybrid'
  config.model.learn_sigma = False
  with pytest.raises(ConfigError, match='learn_sigma=True'):
    validate(config)
  config.model.learn_sigma, config.training.continuous = True, True
  with pytest.raises(ConfigError, match='continuous=False'):
    validate(config)
  config = tiny_config('ncsnv2_64')
  with pytest.raises(ConfigError, match='cannot learn variances'):
    validate(config)
  config = tiny_config()
  config.training.sde, config.eval.bpd_method = 'subvpsde', 'vlb'
  with pytest.raises(ConfigError, match='no discrete chain|has none'):
    validate(config)


def test_vlb_training_resumes_its_t_sampler_and_likelihood_reports_both(tmp_path):
  wd = tmp_path / 'run'
  train = DIGITS + ['--config.model.learn_sigma=True', '--config.training.loss=vlb',
                    '--config.training.snapshot_freq_for_preemption=4', '--config.training.snapshot_freq=1000']
  proc = run_main('--workdir', wd, '--mode', 'train', *train, '--config.training.n_iters=4')
  assert proc.returncode == 0, proc.stderr[-3000:]
  state = torch.load(wd / 'checkpoints' / 'checkpoint_4.pth', weights_only=False)
  assert int(state['t_sampler']['counts'].sum()) == 32   # 4 steps x 8 samples recorded
  proc = run_main('--workdir', wd, '--mode', 'train', *train, '--config.training.n_iters=8')
  assert proc.returncode == 0, proc.stderr[-3000:]
  state = torch.load(wd / 'checkpoints' / 'checkpoint_8.pth', weights_only=False)
  assert int(state['t_sampler']['counts'].sum()) == 64
  proc = run_main('--workdir', wd, '--mode', 'likelihood', *train, '--config.eval.bpd_method=both')
  assert proc.returncode == 0, proc.stderr[-3000:]
  report = json.loads((wd / 'likelihood.json').read_text())
  assert report['num_examples'] == 6 and report['mean'] == report['ode_mean']
  assert report['vlb_mean'] > 0 and report['ode_mean'] > 0
  b = report['vlb_breakdown']
  assert len(b['terms']) == 101
  assert abs(b['prior'] + b['kl_terms'] + b['decoder'] - report['vlb_mean']) < 1e-6 * report['vlb_mean']


@pytest.mark.slow  # two short digit trainings (~2 min on 2 cores); the pieces have fast tests
def test_hybrid_training_improves_the_vlb_over_l_simple(tmp_path):
  common = ['--config', 'configs/digits.py', '--config.training.continuous=False',
            '--config.training.n_iters=600', '--config.training.snapshot_freq=600',
            '--config.eval.batch_size=100', '--config.eval.bpd_method=vlb']
  bpd = {}
  for name, extra in (('simple', []), ('hybrid', ['--config.model.learn_sigma=True', '--config.training.loss=hybrid'])):
    wd = tmp_path / name
    for mode in ('train', 'likelihood'):
      proc = run_main('--workdir', wd, '--mode', mode, *common, *extra, timeout=900)
      assert proc.returncode == 0, proc.stderr[-3000:]
    bpd[name] = json.loads((wd / 'likelihood.json').read_text())
  simple, hybrid = bpd['simple'], bpd['hybrid']
  assert hybrid['vlb_mean'] + 3 * hybrid['vlb_stderr'] < simple['vlb_mean'], (simple, hybrid)


@pytest.mark.parametrize('kind', ['hybrid', 'vlb'])
def test_vlb_losses_keep_every_tensor_on_the_data_device(kind):
  """On the meta device a table left on the CPU, or a value read on the host, fails."""
  config = tiny_config()
  sde = VPSDE(N=100)
  model = create_model(config, sde).to('meta')
  loss_fn = get_vlb_loss_fn(sde, kind, learn_sigma=True)
  x = torch.empty(4, 1, 8, 8, device='meta')
  noise = (torch.empty(4, device='meta'), torch.empty(4, 1, 8, 8, device='meta'))
  out = loss_fn(model, x, noise=noise)
  assert out.loss.device.type == 'meta' and out.t_index.device.type == 'meta'
