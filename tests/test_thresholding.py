"""x0 clipping and dynamic thresholding (issue 26: guided sampling that stays in range;
`score_sde.sampling.thresholding`): the maps on hand-computed numbers, diffusers'
`_threshold_sample` where diffusers is installed, every data-prediction solver (ddpm, ddim,
dpm_solver, unipc) keeping a guided sample in range, and the config / CLI plumbing."""
from __future__ import annotations

import pytest
import torch

from score_sde.maths.analytic import GaussianMixture, gaussian
from score_sde.app.config_check import validate
from score_sde.configs.default import get_default_config
from score_sde.errors import ConfigError
from score_sde.app.build import solver_kwargs
from score_sde.guidance import bind, classifier_free
from score_sde.sampling import sample, solver_spec
from score_sde.sampling.thresholding import X0Limit, dynamic_threshold, x0_limit, x0_range
from score_sde.sdes import VPSDE

pytestmark = pytest.mark.usefixtures('one_thread')
SOLVERS = ('ddpm', 'ddim', 'dpm_solver', 'unipc')


def test_in_range_x0_is_left_untouched():
  x0 = torch.tensor([[0.5, -0.2, 1.0, -1.0], [0.0, 0.9, -0.3, 0.1]])
  for p in (0.5, 0.9, 1.0):
    assert torch.equal(dynamic_threshold(x0, p), x0)  # s = max(1, q) = 1: no change at all
  assert torch.equal(X0Limit(True)(x0), x0) and torch.equal(X0Limit(True, threshold=0.995)(x0), x0)
  assert torch.equal(X0Limit((0.0, 1.0))(x0.abs()), x0.abs())


def test_out_of_range_x0_maps_as_defined():
  """Per sample: s = max(1, quantile_p |x0|), x0 -> clip(x0, -s, s) / s (Saharia et al. 2022)."""
  x0 = torch.tensor([[0.5, -0.2, 3.0, -2.0], [0.5, -0.2, 0.1, 0.0]])
  # p = 1: s = max|x0| = 3 for the first sample, 1 for the second (untouched)
  want = torch.tensor([[0.5 / 3, -0.2 / 3, 1.0, -2.0 / 3], [0.5, -0.2, 0.1, 0.0]])
  torch.testing.assert_close(dynamic_threshold(x0, 1.0), want, rtol=0, atol=1e-7)
  # p = 0.5: |x0| sorted 0.2, 0.5, 2, 3 -> quantile (linear) 1.25; clip to +-1.25, divide
  torch.testing.assert_close(dynamic_threshold(x0[:1], 0.5), torch.tensor([[0.4, -0.16, 1.0, -1.0]]),
                             rtol=0, atol=1e-7)
  # a cap (diffusers' sample_max_value) of 1.5 on s = 3: clip to +-1.5, divide by 1.5
  torch.testing.assert_close(dynamic_threshold(x0[:1], 1.0, max_value=1.5),
                             torch.tensor([[1 / 3, -0.2 / 1.5, 1.0, -1.0]]), rtol=0, atol=1e-7)
  # the data range [0, 1]: u = (x0 - 0.5) / 0.5 = 0, 2, -2, -0.5; s = 2; x0 = 0.5 + 0.5 u / 2
  torch.testing.assert_close(dynamic_threshold(torch.tensor([[0.5, 1.5, -0.5, 0.25]]), 1.0, 0.0, 1.0),
                             torch.tensor([[0.5, 1.0, 0.0, 0.375]]), rtol=0, atol=1e-7)
  # clipping: the range of clip_x0 (True: [-1, 1]; r: [-r, r]; (lo, hi))
  assert torch.equal(X0Limit(True)(x0[:1]), torch.tensor([[0.5, -0.2, 1.0, -1.0]]))
  assert torch.equal(X0Limit(2.5)(x0[:1]), torch.tensor([[0.5, -0.2, 2.5, -2.0]]))
  torch.testing.assert_close(X0Limit((0.0, 1.0))(x0[:1]), torch.tensor([[0.5, 0.0, 1.0, 0.0]]))
  # thresholding replaces clipping, in clip_x0's range
  torch.testing.assert_close(X0Limit((0.0, 1.0), threshold=1.0)(torch.tensor([[0.5, 1.5, -0.5, 0.25]])),
                             torch.tensor([[0.5, 1.0, 0.0, 0.375]]), rtol=0, atol=1e-7)


def test_equals_diffusers_threshold_sample():
  diffusers = pytest.importorskip('diffusers')
  sched = diffusers.DDPMScheduler(thresholding=True, dynamic_thresholding_ratio=0.9, sample_max_value=2.5)
  x0 = 2 * torch.randn(5, 3, 4, 4, generator=torch.Generator().manual_seed(0))
  assert torch.equal(dynamic_threshold(x0, 0.9, max_value=2.5), sched._threshold_sample(x0))


def test_options_off_is_none_and_bad_options_are_one_line_errors():
  assert x0_limit() is None and x0_limit(False, 0.0, 0.0) is None and x0_range(None) is None
  assert x0_range(True) == (-1.0, 1.0) and x0_range(2) == (-2.0, 2.0) and x0_range((0, 1)) == (0.0, 1.0)
  sde = VPSDE(N=20)
  score = gaussian(torch.zeros(2), torch.ones(2)).score_fn(sde)
  for bad, pattern in [({'clip_x0': (1.0, 0.0)}, 'clip_x0'), ({'clip_x0': -1.0}, 'clip_x0'),
                       ({'clip_x0': 'yes'}, 'clip_x0'), ({'threshold': 1.5}, 'threshold'),
                       ({'threshold': 0.9, 'threshold_max': 0.5}, 'threshold_max')]:
    for solver in SOLVERS:
      with pytest.raises(ValueError, match=pattern) as e:
        sample(sde, score, (2, 2), solver, steps=3, **bad)
      assert '\n' not in str(e.value)


def test_every_data_prediction_solver_takes_the_options():
  for solver in SOLVERS:
    opts = solver_spec(solver).options()
    assert (opts.clip_x0, opts.threshold, opts.threshold_max) == (False, 0.0, 0.0), solver


def _guided_score(sde, w: float, n: int):
  """Classifier-free guidance at weight w toward the component at +0.7 of a two-component
  mixture of sharp Gaussians at +-0.7 (data in [-1, 1]), on `[n, 1, 2, 2]`."""
  d = 4
  mix = GaussianMixture(torch.tensor([[0.7] * d, [-0.7] * d]), torch.full((2, d), 0.15 ** 2), torch.ones(2))
  uncond, comp = mix.score_fn(sde), gaussian(torch.full((d,), 0.7), torch.full((d,), 0.15 ** 2)).score_fn(sde)

  def cond(x, t, y):
    flat = x.reshape(x.shape[0], -1)
    return (uncond(flat, t) if y is None else comp(flat, t)).reshape(x.shape)
  return bind(classifier_free(cond, w), torch.zeros(n, dtype=torch.long))


@pytest.mark.parametrize('solver', SOLVERS)
def test_a_guided_sample_with_clipping_stays_in_range(solver):
  sde, n = VPSDE(N=100), 64
  score = _guided_score(sde, 8.0, n)
  run = lambda **kw: sample(sde, score, (n, 1, 2, 2), solver, steps=10,
                            generator=torch.Generator().manual_seed(0), **kw).x
  plain = run()
  for kw in ({'clip_x0': True}, {'threshold': 0.95}, {'clip_x0': (-1.0, 1.0), 'threshold': 0.995}):
    x = run(**kw)
    assert x.abs().max() <= 1.0 and torch.isfinite(x).all(), (solver, kw)
  if solver != 'ddpm':  # the ancestral sampler happens to stay inside here; the others leave it
    assert (plain.abs() > 1).float().mean() > 0.003, solver
  assert torch.equal(plain, run(clip_x0=False, threshold=0.0, threshold_max=0.0))  # off: unchanged


def test_ddim_rederives_eps_from_the_clipped_x0():
  """Clipping x0 but keeping the network's eps (diffusers' default) drives a strongly guided
  DDIM chain to the edge of the range; re-deriving eps (the default) stays near the target
  component at +0.7, as the unclipped data-prediction solvers do."""
  sde, n = VPSDE(N=1000), 128
  score = _guided_score(sde, 8.0, n)
  run = lambda **kw: sample(sde, score, (n, 1, 2, 2), 'ddim', steps=100, clip_x0=True,
                            generator=torch.Generator().manual_seed(0), **kw).x
  assert abs(float(run().mean()) - 0.74) < 0.05
  assert float(run(clipped_eps=False).mean()) < -0.9


def test_the_config_turns_it_on_in_the_data_range():
  config = get_default_config()
  assert 'clip_x0' not in solver_kwargs(config, 'pc')
  assert solver_kwargs(config, 'unipc')['clip_x0'] is False
  config.sampling.clip_x0 = True
  config.data.centered = True
  assert solver_kwargs(config, 'dpm_solver')['clip_x0'] == (-1.0, 1.0)
  config.data.centered = False
  assert solver_kwargs(config, 'ddim')['clip_x0'] == (0.0, 1.0)
  config.sampling.clip_x0, config.sampling.threshold = False, 0.995
  kw = solver_kwargs(config, 'ddpm')
  assert kw['clip_x0'] == (0.0, 1.0) and kw['threshold'] == 0.995
  from score_sde.configs.toy import get_config
  toy = get_config()
  toy.sampling.clip_x0 = True
  with pytest.raises(ConfigError, match='no data range'):
    solver_kwargs(toy, 'ddim')
  for key, value in [('threshold', 1.5), ('threshold_max', 0.5), ('steps_offset', -1),
                     ('timestep_spacing', 'uniform')]:  # (type-safe ConfigDict: bools stay bools)
    config = get_default_config()
    config.sampling[key] = value
    with pytest.raises(ConfigError, match=f'config.sampling.{key} = '):
      validate(config)


def test_generate_keeps_a_random_network_in_range():
  """End to end (generate, the CLI's sampler): a random digits U-Net predicts x0 far outside the
  data; with sampling.clip_x0 the samples stay in the data range [0, 1] (data space)."""
  from score_sde.configs.digits import get_config
  from score_sde.app.generate import generate
  from score_sde.app.build import create_model
  from score_sde.app.build import build_sde
  config = get_config()
  config.model.nf, config.model.ch_mult, config.model.attn_resolutions = 16, (1,), ()
  config.sampling.steps, config.sampling.batch_size = 4, 4
  torch.manual_seed(0)
  model = create_model(config, build_sde(config)).eval()
  with torch.no_grad():
    for p in model.net.parameters():
      p.normal_(0, 0.3)
  for solver in SOLVERS:
    config.sampling.clip_x0 = False
    x, _ = generate(config, model, 4, solver)
    assert ((x < 0) | (x > 1)).float().mean() > 0.1, solver
    config.sampling.clip_x0 = True
    x, _ = generate(config, model, 4, solver)
    assert x.min() >= 0 and x.max() <= 1, solver
