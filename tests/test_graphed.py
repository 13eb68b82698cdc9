"""runtime.cuda_graphs: the sampler's score evaluations served from captured graphs give the
same samples as eager calls. On CPU the capture is a stand-in with a graph's semantics (static
input buffers, one static output overwritten by every replay), so the plumbing -- inputs copied
in, the output copied out before the next replay, one capture per shape, eager fallbacks -- is
tested here; the real CUDA capture runs only where a GPU is present."""
from __future__ import annotations

import logging

import pytest
import torch

from configs.toy import get_config as toy_config
from score_sde.maths.analytic import GaussianMixture
from score_sde.sampling.graphed import GraphedScore
from score_sde.sampling import sample
from score_sde.sdes import VPSDE

pytestmark = pytest.mark.usefixtures('one_thread')


def fake_capture(fn, x, t):
  """A graph stand-in: `replay` recomputes fn on the static inputs into the static output."""
  out = fn(x, t)
  return (lambda: out.copy_(fn(x, t))), out


def _mixture_score():
  sde = VPSDE(N=100)
  gm = GaussianMixture(torch.tensor([[-2.0, 1.0], [1.5, -0.5]]), torch.tensor([[0.3, 0.5], [0.4, 0.2]]))
  return sde, gm.score_fn(sde)


@pytest.mark.parametrize('solver,steps,options', [
    ('pc', 20, {}), ('ddim', 10, {}), ('dpm_solver', 8, {'order': 3}),
    ('unipc', 8, {}), ('heun', 6, {}), ('ddpm', 10, {}), ('ode', None, {'rtol': 1e-4, 'atol': 1e-4}),
    ('sde', 10, {})])
def test_graphed_samples_equal_eager(solver, steps, options):
  """Every solver, torchdiffeq's `ode` and torchsde's `sde` included, sees the same numbers."""
  sde, score = _mixture_score()
  eager = sample(sde, score, (64, 2), solver, steps=steps, generator=torch.Generator().manual_seed(3), **options)
  graphed = GraphedScore(score, capture=fake_capture)
  res = sample(sde, graphed, (64, 2), solver, steps=steps, generator=torch.Generator().manual_seed(3), **options)
  assert graphed.captures == 1 and graphed.replays == res.nfe == eager.nfe
  torch.testing.assert_close(res.x, eager.x, rtol=0, atol=0)


def test_output_is_a_copy_not_the_static_buffer():
  _, score = _mixture_score()
  graphed = GraphedScore(score, capture=fake_capture)
  x = torch.randn(4, 2)
  with torch.no_grad():
    first = graphed(x, torch.full((4,), 0.5))
    kept = first.clone()
    graphed(x + 1, torch.full((4,), 0.2))  # a later replay must not change the earlier output
  torch.testing.assert_close(first, kept, rtol=0, atol=0)


def test_one_capture_per_shape_and_eager_with_gradients():
  _, score = _mixture_score()
  graphed = GraphedScore(score, capture=fake_capture)
  with torch.no_grad():
    for b in (8, 5, 8, 5):
      graphed(torch.randn(b, 2), torch.full((b,), 0.3))
  assert graphed.captures == 2 and graphed.replays == 4
  x = torch.randn(3, 2, requires_grad=True)
  out = graphed(x, torch.full((3,), 0.3))   # gradients: eager, differentiable
  out.sum().backward()
  assert x.grad is not None and graphed.replays == 4


def test_failed_capture_falls_back_to_eager(caplog):
  sde, score = _mixture_score()

  def broken(fn, x, t):
    raise RuntimeError('operation not permitted when stream is capturing')
  graphed = GraphedScore(score, capture=broken)
  with caplog.at_level(logging.WARNING):
    res = sample(sde, graphed, (16, 2), 'ddim', steps=5, generator=torch.Generator().manual_seed(0))
  eager = sample(sde, score, (16, 2), 'ddim', steps=5, generator=torch.Generator().manual_seed(0))
  torch.testing.assert_close(res.x, eager.x, rtol=0, atol=0)
  assert graphed.captures == 0 and 'running it eagerly' in caplog.text


def test_cpu_tensors_stay_eager_with_the_cuda_capture():
  _, score = _mixture_score()
  graphed = GraphedScore(score)
  with torch.no_grad():
    graphed(torch.randn(4, 2), torch.full((4,), 0.5))
  assert graphed.captures == 0 and graphed.replays == 0


def test_generate_with_cuda_graphs_key(monkeypatch):
  """`runtime.cuda_graphs` reaches `generate`: with the stand-in capture the toy model's samples
  equal the eager ones, over two batches and a smaller last one (two captures)."""
  from score_sde.app import generate as gen_mod
  from score_sde.app.build import create_model
  from score_sde.app.build import build_sde
  config = toy_config()
  config.model.hidden, config.model.depth = 16, 1
  config.sampling.batch_size, config.sampling.steps = 8, 6
  model = create_model(config, build_sde(config)).eval()
  made = []

  def recording(score_fn):
    made.append(GraphedScore(score_fn, capture=fake_capture))
    return made[-1]
  monkeypatch.setattr(gen_mod, 'GraphedScore', recording)
  eager, nfe = gen_mod.generate(config, model, 20, solver='ddim')
  config.runtime.cuda_graphs = True
  graphed, nfe_g = gen_mod.generate(config, model, 20, solver='ddim')
  assert len(made) == 1 and made[0].captures == 2 and nfe_g == nfe
  torch.testing.assert_close(graphed, eager, rtol=0, atol=0)


@pytest.mark.skipif(not torch.cuda.is_available(), reason='needs a CUDA GPU')
def test_real_cuda_graph_matches_eager():
  from score_sde.app.build import create_model
  from configs.digits import get_config as digits_config
  from score_sde.app.build import build_sde
  config = digits_config()
  config.model.nf = 16
  model = create_model(config, build_sde(config)).cuda().eval()
  graphed = GraphedScore(model)
  shape = (8, config.data.num_channels, config.data.image_size, config.data.image_size)
  kw = dict(steps=10, device='cuda')
  eager = sample(model.sde, model, shape, 'dpm_solver', generator=torch.Generator('cuda').manual_seed(0), **kw)
  res = sample(model.sde, graphed, shape, 'dpm_solver', generator=torch.Generator('cuda').manual_seed(0), **kw)
  assert graphed.captures == 1 and graphed.replays == res.nfe
  torch.testing.assert_close(res.x, eager.x, rtol=1e-4, atol=1e-4)



def test_generate_with_compile_key(monkeypatch):
  """`runtime.compile` compiles the sampling model once per model (dynamo's eager backend here,
  to keep the test fast); the samples match the plain ones."""
  from score_sde.app import generate as gen_mod
  from score_sde.app.build import create_model
  from score_sde.app.build import build_sde
  config = toy_config()
  config.model.hidden, config.model.depth = 16, 1
  config.sampling.batch_size, config.sampling.steps = 16, 4
  model = create_model(config, build_sde(config)).eval()
  real, calls = torch.compile, []

  def eager_compile(module, **kw):
    calls.append(module)
    return real(module, backend='eager')
  monkeypatch.setattr(torch, 'compile', eager_compile)
  plain, _ = gen_mod.generate(config, model, 16, solver='dpm_solver')
  config.runtime.compile = True
  for _ in range(2):
    fast, _ = gen_mod.generate(config, model, 16, solver='dpm_solver')
    torch.testing.assert_close(fast, plain, rtol=1e-5, atol=1e-5)
  assert calls == [model]
  torch._dynamo.reset()
