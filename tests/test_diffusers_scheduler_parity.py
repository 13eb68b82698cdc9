"""Sampler parity with diffusers (issue 25, item 5): on the same weights and noise, diffusers'
DDIMScheduler / DDPMScheduler loops on a small random UNet2DModel give our ddim / ddpm samples
(score_sde.interop.load_diffusers of the exported folder, the scheduler's options read from its
scheduler_config.json), within 1e-4 of the sample scale, for every timestep_spacing,
steps_offset, set_alpha_to_one, clip_sample and thresholding. The option mapping itself
(export and import) needs no diffusers."""
from __future__ import annotations

import json

import pytest
import torch

from score_sde.configs.default import get_default_config
from score_sde.app.build import solver_kwargs
from score_sde.interop import export_diffusers, load_diffusers
from score_sde.interop.diffusers_map import UnsupportedModelError
from score_sde.app.build import create_model
from score_sde.sampling import sample
from score_sde.app.build import build_sde

pytestmark = pytest.mark.usefixtures('one_thread')
N = 50


def small_ddpm_config():
  """A tiny google/ddpm-cifar10-32-like DDPM (Ho et al.'s layout), discrete VP with N = 50."""
  c = get_default_config()
  c.model.name, c.model.nf, c.model.ch_mult, c.model.num_res_blocks = 'ddpm', 32, (1, 2), 1
  c.model.attn_resolutions, c.model.attn_every_up_block = (4,), True
  c.data.image_size, c.data.num_channels, c.training.continuous = 8, 3, False
  c.model.num_scales = N
  return c


@pytest.fixture(scope='module')
def folder(tmp_path_factory):
  """An exported diffusers pipeline folder of a random-weight model."""
  config = small_ddpm_config()
  torch.manual_seed(0)
  model = create_model(config, build_sde(config)).eval()
  with torch.no_grad():
    for p in model.net.parameters():
      p.normal_(0, 0.05)
  path = tmp_path_factory.mktemp('pipe')
  export_diffusers(model, str(path), config)
  return path


def _with_scheduler(folder, cls: str, options: dict):
  """Our model loaded from `folder` with its scheduler_config.json rewritten to `cls` with
  `options`, and the scheduler's config as a dict."""
  path = folder / 'scheduler' / 'scheduler_config.json'
  base = json.loads(path.read_text())
  sched = {**base, '_class_name': cls, **options}
  path.write_text(json.dumps(sched))
  try:
    return load_diffusers(str(folder)), sched
  finally:
    path.write_text(json.dumps(base))


CASES = {  # name: (scheduler class, scheduler options, steps, eta)
    'ddim_leading': ('DDIMScheduler', {'clip_sample': False}, 10, 0.0),
    'ddim_leading_offset_clip': ('DDIMScheduler', {'clip_sample': True, 'steps_offset': 1,
                                                   'set_alpha_to_one': False}, 10, 0.0),
    'ddim_trailing_clip': ('DDIMScheduler', {'clip_sample': True, 'timestep_spacing': 'trailing'}, 7, 0.0),
    'ddim_linspace_clip': ('DDIMScheduler', {'clip_sample': True, 'timestep_spacing': 'linspace'}, 6, 0.0),
    'ddim_trailing_eta1': ('DDIMScheduler', {'clip_sample': True, 'timestep_spacing': 'trailing'}, 10, 1.0),
    'ddim_thresholding': ('DDIMScheduler', {'thresholding': True, 'dynamic_thresholding_ratio': 0.9,
                                            'sample_max_value': 3.0, 'set_alpha_to_one': False}, 8, 0.0),
    'ddpm_leading_clip': ('DDPMScheduler', {'clip_sample': True}, 10, None),
    'ddpm_full_chain_clip': ('DDPMScheduler', {'clip_sample': True}, N, None),
    'ddpm_trailing': ('DDPMScheduler', {'clip_sample': False, 'timestep_spacing': 'trailing'}, 7, None),
    'ddpm_linspace_offset': ('DDPMScheduler', {'clip_sample': True, 'timestep_spacing': 'linspace',
                                               'steps_offset': 1}, 9, None),
    'ddpm_thresholding': ('DDPMScheduler', {'thresholding': True, 'dynamic_thresholding_ratio': 0.8,
                                            'sample_max_value': 2.0}, 10, None),
}


def _theirs(diffusers, folder, cls: str, sched: dict, steps: int, eta, shape):
  unet = diffusers.UNet2DModel.from_pretrained(str(folder / 'unet')).eval()
  scheduler = getattr(diffusers, cls).from_config({k: v for k, v in sched.items() if not k.startswith('_')})
  scheduler.set_timesteps(steps)
  g = torch.Generator().manual_seed(7)
  x = torch.randn(shape, generator=g)
  kw = {} if eta is None else {'eta': eta}
  with torch.no_grad():
    for t in scheduler.timesteps:
      x = scheduler.step(unet(x, t).sample, t, x, generator=g, **kw).prev_sample
  return x


@pytest.mark.parametrize('case', list(CASES))
def test_diffusers_scheduler_loops_give_our_samples(case, folder):
  diffusers = pytest.importorskip('diffusers')
  cls, options, steps, eta = CASES[case]
  model, sched = _with_scheduler(folder, cls, options)
  shape = (2, 3, 8, 8)
  theirs = _theirs(diffusers, folder, cls, sched, steps, eta, shape)
  solver = 'ddim' if cls == 'DDIMScheduler' else 'ddpm'
  assert model.config.sampling.method == solver
  kwargs = solver_kwargs(model.config, solver)
  if eta is not None:
    kwargs['eta'] = eta
  ours = sample(model.sde, model, shape, solver, steps=steps, generator=torch.Generator().manual_seed(7),
                **kwargs).x
  scale = theirs.abs().max()
  assert (ours - theirs).abs().max() <= 1e-4 * scale, (case, float((ours - theirs).abs().max()), float(scale))
  if options.get('clip_sample') and options.get('set_alpha_to_one', True):
    assert ours.abs().max() <= 1.0  # the last step returns the clipped x0 prediction


def test_without_the_options_the_clipped_scheduler_differs(folder):
  """The options matter: diffusers' default clip_sample=True is far from unclipped sampling
  on a random network (so the parity above is not vacuous)."""
  model, _ = _with_scheduler(folder, 'DDIMScheduler', {'clip_sample': True, 'timestep_spacing': 'linspace'})
  kw = solver_kwargs(model.config, 'ddim')
  assert kw['clip_x0'] == (-1.0, 1.0) and kw['timestep_spacing'] == 'linspace'
  g = lambda: torch.Generator().manual_seed(7)
  a = sample(model.sde, model, (2, 3, 8, 8), 'ddim', steps=6, generator=g(), **kw).x
  b = sample(model.sde, model, (2, 3, 8, 8), 'ddim', steps=6, generator=g()).x
  assert (a - b).abs().max() > 0.1 * b.abs().max()


def test_scheduler_options_map_both_ways(tmp_path, folder):
  """Import sets the config's sampler options from the scheduler (diffusers' defaults for absent
  keys: clip_sample=True); export writes them; what has no counterpart is one line."""
  model, _ = _with_scheduler(folder, 'DDPMScheduler', {})
  s = model.config.sampling
  assert (s.clip_x0, s.threshold, s.timestep_spacing, s.steps_offset) == (False, 0.0, 'leading', 0)  # as exported
  path = folder / 'scheduler' / 'scheduler_config.json'
  base = json.loads(path.read_text())
  del base['clip_sample']
  path.write_text(json.dumps(base))
  try:
    assert load_diffusers(str(folder)).config.sampling.clip_x0 is True  # diffusers' default
  finally:
    path.write_text(json.dumps({**base, 'clip_sample': False}))
  model, _ = _with_scheduler(folder, 'DDIMScheduler', {'thresholding': True, 'dynamic_thresholding_ratio': 0.9,
                                                       'sample_max_value': 1.5, 'steps_offset': 1,
                                                       'timestep_spacing': 'trailing', 'set_alpha_to_one': False})
  s = model.config.sampling
  assert (s.clip_x0, s.threshold, s.threshold_max, s.steps_offset, s.timestep_spacing, s.set_alpha_to_one) == \
      (False, 0.9, 1.5, 1, 'trailing', False)
  out = tmp_path / 'again'
  export_diffusers(model, str(out), model.config)
  written = json.loads((out / 'scheduler' / 'scheduler_config.json').read_text())
  assert {k: written[k] for k in ('thresholding', 'dynamic_thresholding_ratio', 'sample_max_value',
                                  'steps_offset', 'timestep_spacing')} == \
      {'thresholding': True, 'dynamic_thresholding_ratio': 0.9, 'sample_max_value': 1.5, 'steps_offset': 1,
       'timestep_spacing': 'trailing'}
  for options, pattern in [({'clip_sample_range': 2.0}, 'clip_sample_range'),
                           ({'timestep_spacing': 'karras'}, 'timestep_spacing')]:
    with pytest.raises(UnsupportedModelError, match=pattern) as e:
      _with_scheduler(folder, 'DDPMScheduler', {'clip_sample': True, **options})
    assert '\n' not in str(e.value)
  config = small_ddpm_config()
  config.data.centered, config.sampling.clip_x0 = False, True
  with pytest.raises(UnsupportedModelError, match='data.centered=False'):
    export_diffusers(model, str(tmp_path / 'x'), config)
