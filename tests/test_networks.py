"""Tests of the score_sde_pytorch networks: NCSN++ / DDPM++ (Song et al. 2021, ICLR), DDPM
(Ho et al. 2020) and NCSNv2 (Song & Ermon 2020).

They check numbers: published parameter counts, state-dict keys and shapes read off
score_sde_pytorch, FIR resampling against its definition and hand-computed values, attention /
NIN / InstanceNorm++ against their formulas, checkpoint round trips, and the network identities
(scale_by_sigma divides by sigma, NCSNv2 is noise-unconditional, centering maps x to 2x - 1).
"""
from __future__ import annotations

import importlib
import math

import numpy as np
import pytest
import torch
from torch.nn import functional as F

from configs.default import get_default_config
from score_sde.models import layers, layerspp, normalization
from score_sde.models import up_or_down_sampling as ud
from score_sde.app.build import create_network

K4 = (1, 3, 3, 1)


@pytest.fixture(autouse=True, scope='module')
def _one_thread():
  """Tiny convolutions: OpenMP threads only add contention on a shared CPU."""
  threads = torch.get_num_threads()
  torch.set_num_threads(1)
  yield
  torch.set_num_threads(threads)


def small_config(name='ncsnpp', **overrides):
  """A tiny 16x16 RGB config; overrides are `section__key=value`."""
  c = get_default_config()
  c.model.name = name
  c.data.image_size, c.data.num_channels = 16, 3
  c.model.nf, c.model.ch_mult, c.model.num_res_blocks = 16, (1, 2), 1
  c.model.attn_resolutions, c.model.num_scales = (8,), 10
  for key, value in overrides.items():
    section, field = key.split('__')
    setattr(getattr(c, section), field, value)
  return c


VE_NCSNPP = dict(model__embedding_type='fourier', model__fir=True, model__scale_by_sigma=True,
                 model__progressive_input='residual', data__centered=False)
HIRES_NCSNPP = dict(model__embedding_type='fourier', model__fir=True, model__scale_by_sigma=True,
                    model__progressive='output_skip', model__progressive_input='input_skip')
NCSNV2 = dict(model__normalization='InstanceNorm++', model__nonlinearity='elu')
SMALL = {  # name -> (network name, overrides, time_cond)
    'ddpmpp': ('ncsnpp', {}, torch.tensor([12., 700.])),
    'ncsnpp_ve': ('ncsnpp', VE_NCSNPP, torch.tensor([0.3, 20.])),
    'ncsnpp_hires': ('ncsnpp', HIRES_NCSNPP, torch.tensor([0.3, 20.])),
    'ncsnpp_residual_ddpmblocks': ('ncsnpp', dict(model__fir=True, model__resblock_type='ddpm',
                                                  model__progressive='residual',
                                                  model__progressive_input='residual'),
                                   torch.tensor([3., 9.])),
    'ncsnpp_cat_nofir': ('ncsnpp', dict(model__progressive='output_skip',
                                        model__progressive_input='input_skip',
                                        model__progressive_combine='cat', model__skip_rescale=False),
                         torch.tensor([3., 9.])),
    'ddpm': ('ddpm', dict(model__nf=32), torch.tensor([3., 9.])),
    'ncsnv2_64': ('ncsnv2_64', NCSNV2, torch.tensor([2, 7])),
}


def build(key, seed=0, **extra):
  name, overrides, t = SMALL[key]
  torch.manual_seed(seed)
  return create_network(small_config(name, **{**overrides, **extra})).eval(), t


def randomize(net, seed=1, std=0.2):
  """Random trainable weights, so outputs are not ~0 (zero-init last layers)."""
  g = torch.Generator().manual_seed(seed)
  with torch.no_grad():
    for name, p in net.named_parameters():
      if p.requires_grad:  # norm scales around 1, everything else around 0
        scale = p.ndim == 1 and name.rsplit('.', 1)[-1] in ('weight', 'alpha', 'gamma')
        p.copy_(torch.randn(p.shape, generator=g) * std + float(scale))
  return net


# ---------------------------------------------------------------- FIR resampling
def upfirdn_loop(x, k, up, down, pad):
  """upfirdn2d by its definition: zero-stuff, pad (negative crops), true convolution, decimate."""
  x, k = np.asarray(x, np.float64), np.asarray(k, np.float64)
  n, c, h, w = x.shape
  z = np.zeros((n, c, h * up, w * up))
  z[:, :, ::up, ::up] = x
  p0, p1 = pad
  z = np.pad(z, ((0, 0), (0, 0), (max(p0, 0), max(p1, 0)), (max(p0, 0), max(p1, 0))))
  z = z[:, :, max(-p0, 0):z.shape[2] - max(-p1, 0), max(-p0, 0):z.shape[3] - max(-p1, 0)]
  kh = k.shape[0]
  oh, ow = z.shape[2] - kh + 1, z.shape[3] - kh + 1
  out = np.zeros((n, c, oh, ow))
  for i in range(oh):
    for j in range(ow):
      for a in range(kh):
        for b in range(kh):  # convolution: out[i] = sum_a z[i + a] k[K - 1 - a]
          out[:, :, i, j] += z[:, :, i + a, j + b] * k[kh - 1 - a, kh - 1 - b]
  return out[:, :, ::down, ::down]


@pytest.mark.parametrize('up,down,pad', [(1, 1, (1, 2)), (2, 1, (2, 1)), (1, 2, (1, 1)),
                                         (2, 2, (0, -1)), (3, 1, (-1, 2))])
def test_upfirdn2d_matches_definition(up, down, pad):
  g = torch.Generator().manual_seed(0)
  x = torch.randn(2, 3, 5, 6, generator=g, dtype=torch.float64)
  k = torch.randn(4, 4, generator=g, dtype=torch.float64)  # not symmetric: checks the flip
  got = ud.upfirdn2d(x, k, up=up, down=down, pad=pad)
  np.testing.assert_allclose(got.numpy(), upfirdn_loop(x, k, up, down, pad), rtol=1e-12, atol=1e-12)


def test_kernel_normalisation():
  k = ud.setup_kernel(K4)
  taps = torch.tensor(K4, dtype=torch.float32)
  assert torch.allclose(k, torch.outer(taps, taps) / 64.)
  assert math.isclose(k.sum().item(), 1., rel_tol=1e-6)
  assert math.isclose(ud.setup_kernel(K4, gain=3., up=2).sum().item(), 12., rel_tol=1e-6)
  assert math.isclose(ud.setup_kernel([1, 2, 1], gain=.5).sum().item(), .5, rel_tol=1e-6)


def test_fir_up_down_hand_computed():
  """1-D factors of (1,3,3,1): upsampling interleaves [3/4, 1/4] weights, downsampling is
  [1,3,3,1]/8 with a one-sample zero border; the 2-D operators are separable."""
  x = torch.tensor([[1., 2.], [3., 5.]])
  up = torch.tensor([[.75, 0], [.75, .25], [.25, .75], [0, .75]])
  got = ud.upsample_2d(x[None, None], K4)[0, 0]
  assert torch.allclose(got, up @ x @ up.T, atol=1e-6)
  y = torch.arange(16.).reshape(4, 4) ** 1.5
  down = torch.tensor([[3., 3, 1, 0], [0, 1, 3, 3]]) / 8
  assert torch.allclose(ud.downsample_2d(y[None, None], K4)[0, 0], down @ y @ down.T, atol=1e-5)
  assert torch.allclose(ud.naive_upsample_2d(x[None, None])[0, 0],
                        x.repeat_interleave(2, 0).repeat_interleave(2, 1))
  assert torch.allclose(ud.naive_downsample_2d(y[None, None])[0, 0], F.avg_pool2d(y[None], 2)[0])


def test_fir_constant_image():
  """A constant stays constant away from the zero border, through up, down and up-then-down."""
  c = torch.full((1, 2, 8, 8), 2.5)
  u = ud.upsample_2d(c, K4)
  assert u.shape == (1, 2, 16, 16) and torch.allclose(u[..., 1:-1, 1:-1], c[0, 0, 0, 0])
  d = ud.downsample_2d(u, K4)
  assert d.shape == c.shape and torch.allclose(d[..., 1:-1, 1:-1], c[0, 0, 0, 0])
  assert torch.allclose(ud.downsample_2d(c, K4)[..., 1:-1, 1:-1], c[0, 0, 0, 0])


def test_fused_conv_resampling_equals_unfused_in_interior():
  """StyleGAN2's fused ops equal resample-then-conv (and conv-then-resample) except within one
  pixel of the border, where the fused op avoids the intermediate crop."""
  g = torch.Generator().manual_seed(0)
  x, w = torch.randn(2, 3, 8, 8, generator=g), torch.randn(5, 3, 3, 3, generator=g)
  a = ud.upsample_conv_2d(x, w, K4)
  b = F.conv2d(ud.upsample_2d(x, K4), w, padding=1)
  assert a.shape == (2, 5, 16, 16) and torch.allclose(a[..., 1:-1, 1:-1], b[..., 1:-1, 1:-1], atol=1e-5)
  a = ud.conv_downsample_2d(x, w, K4)
  b = ud.downsample_2d(F.conv2d(x, w, padding=1), K4)
  assert a.shape == (2, 5, 4, 4) and torch.allclose(a[..., 1:-1, 1:-1], b[..., 1:-1, 1:-1], atol=1e-5)
  conv = ud.Conv2d(3, 5, 3, up=True, resample_kernel=K4)
  conv.weight.data, conv.bias.data = w.clone(), torch.arange(5.)
  assert torch.allclose(conv(x), ud.upsample_conv_2d(x, w, K4) + torch.arange(5.)[:, None, None])
  assert list(conv.state_dict()) == ['weight', 'bias']  # FIR kernel buffer is not persistent


# ---------------------------------------------------------------- layers vs formulas
def test_nin_and_attention_match_reference_formulas():
  torch.manual_seed(0)
  nin = layers.NIN(6, 4)
  nin.b.data.normal_()
  x = torch.randn(2, 6, 3, 5)
  ref = torch.tensordot(x.permute(0, 2, 3, 1), nin.W, dims=1) + nin.b  # DDPM's NIN
  assert torch.allclose(nin(x), ref.permute(0, 3, 1, 2), atol=1e-6)
  attn = randomize(layerspp.AttnBlockpp(8, skip_rescale=True))
  x = torch.randn(2, 8, 4, 3)
  h = attn.GroupNorm_0(x)
  q, k, v = attn.NIN_0(h), attn.NIN_1(h), attn.NIN_2(h)
  w = torch.einsum('bchw,bcij->bhwij', q, k) / math.sqrt(8)
  w = torch.softmax(w.reshape(2, 4, 3, 12), -1).reshape(2, 4, 3, 4, 3)
  ref = (x + attn.NIN_3(torch.einsum('bhwij,bcij->bchw', w, v))) / math.sqrt(2)
  assert torch.allclose(attn(x), ref, atol=1e-5)


def test_timestep_embedding_and_fourier_features():
  t = torch.tensor([0., 1., 250.])
  emb = layers.get_timestep_embedding(t, 8)
  freqs = 10000. ** (-torch.arange(4.) / 3)
  assert torch.allclose(emb, torch.cat([torch.sin(t[:, None] * freqs), torch.cos(t[:, None] * freqs)], 1))
  assert layers.get_timestep_embedding(t, 7).shape == (3, 7)
  fourier = layerspp.GaussianFourierProjection(4, scale=16.)
  ang = 2 * math.pi * t[:, None] * fourier.W
  assert torch.allclose(fourier(t), torch.cat([torch.sin(ang), torch.cos(ang)], 1))
  assert not fourier.W.requires_grad


def test_default_init_variance_scaling():
  torch.manual_seed(0)
  w = layers.default_init(2.)((64, 48, 3, 3))
  var = 2. / ((48 * 9 + 64 * 9) / 2)  # scale / fan_avg
  assert abs(w.var().item() / var - 1) < 0.03
  assert w.abs().max().item() <= math.sqrt(3 * var)
  assert layers.default_init(0.)((8, 8)).abs().max() < 1e-4  # init_scale 0 -> 1e-10


def test_instance_norm_plus_formula():
  torch.manual_seed(0)
  norm = randomize(normalization.InstanceNorm2dPlus(5))
  x = torch.randn(3, 5, 4, 4) * 2 + torch.arange(5.)[:, None, None]
  mu, s = x.mean((2, 3), keepdim=True), x.var((2, 3), unbiased=False, keepdim=True)
  means = x.mean((2, 3))
  m_plus = (means - means.mean(-1, keepdim=True)) / torch.sqrt(means.var(-1, keepdim=True) + 1e-5)
  ref = norm.gamma[:, None, None] * ((x - mu) / torch.sqrt(s + 1e-5)
                                     + m_plus[..., None, None] * norm.alpha[:, None, None])
  assert torch.allclose(norm(x), ref + norm.beta[:, None, None], atol=1e-5)
  cnorm = normalization.ConditionalInstanceNorm2dPlus(5, num_classes=3)
  y = torch.tensor([0, 2, 1])
  gamma, alpha, beta = cnorm.embed(y).chunk(3, -1)
  ref = gamma[..., None, None] * ((x - mu) / torch.sqrt(s + 1e-5) + m_plus[..., None, None]
                                  * alpha[..., None, None]) + beta[..., None, None]
  assert torch.allclose(cnorm(x, y), ref, atol=1e-5)


# ---------------------------------------------------------------- parameter counts
# Exact counts of our builds and the published figures (millions). The published figures are
# truncated, not rounded, to 0.1M (62.759M is published as 62.7M). DDPM: Ho et al. report 35.7M;
# score_sde_pytorch's port has one attention block per up-path level where the TF original has
# one after every up-path res block, i.e. 2 fewer 256-channel blocks at 16x16 (see below).
PARAM_COUNTS = {
    'vp_cifar': (61_804_419, 61.8), 'subvp_cifar': (61_804_419, 61.8),
    'vp_cifar_deep': (106_632_579, 106.6), 'subvp_cifar_deep': (106_632_579, 106.6),
    've_cifar': (62_758_915, 62.7), 've_cifar_deep': (107_587_075, 107.5),
    'ddpm_cifar': (35_218_947, 35.2), 'ncsnv2_cifar': (29_694_083, None),
    've_ffhq_256': (65_574_549, None), 've_celebahq_256': (65_574_549, None),
    've_lsun_church_256': (65_574_549, None),
}


def full_size(config_name):
  config = importlib.import_module(f'configs.{config_name}').get_config()
  with torch.device('meta'):  # shapes only: no memory, no RNG
    return create_network(config)


@pytest.mark.parametrize('config_name', sorted(PARAM_COUNTS))
def test_parameter_counts(config_name):
  exact, published = PARAM_COUNTS[config_name]
  count = sum(p.numel() for p in full_size(config_name).parameters())
  assert count == exact
  if published is not None:
    assert math.floor(count / 1e5) / 10 == published


def test_ddpm_count_vs_ho_et_al():
  count = sum(p.numel() for p in full_size('ddpm_cifar').parameters())
  attn256 = sum(p.numel() for p in layers.AttnBlock(256).parameters())
  assert round((count + 2 * attn256) / 1e6, 1) == 35.7


# ---------------------------------------------------------------- state-dict parity
def shapes(net):
  return {k: tuple(v.shape) for k, v in net.state_dict().items()}


def test_ncsnpp_ve_reference_keys():
  """Module list of score_sde_pytorch for fourier + FIR + BigGAN + residual input pyramid,
  nf=16, ch_mult=(1, 2), 1 res block, attention at 8x8 (index: module)."""
  net, _ = build('ncsnpp_ve')
  s = shapes(net)
  expected = {
      'sigmas': (10,), 'all_modules.0.W': (16,),  # 0: GaussianFourierProjection
      'all_modules.1.weight': (64, 32), 'all_modules.2.weight': (64, 64),  # 1-2: time MLP
      'all_modules.3.weight': (16, 3, 3, 3),  # 3: input conv
      'all_modules.4.Dense_0.weight': (16, 64),  # 4: ResBlock 16->16
      'all_modules.5.Conv_2.weight': (16, 16, 1, 1),  # 5: ResBlock down (1x1 skip)
      'all_modules.6.Conv2d_0.weight': (16, 3, 3, 3),  # 6: pyramid_downsample 3->16 (fused FIR)
      'all_modules.7.Conv_2.weight': (32, 16, 1, 1), 'all_modules.8.NIN_3.W': (32, 32),
      'all_modules.9.GroupNorm_1.weight': (32,), 'all_modules.10.NIN_0.b': (32,),  # middle
      'all_modules.12.Conv_0.weight': (32, 64, 3, 3), 'all_modules.13.Conv_2.weight': (32, 48, 1, 1),
      'all_modules.14.GroupNorm_0.weight': (32,), 'all_modules.15.Conv_2.weight': (32, 32, 1, 1),
      'all_modules.16.Conv_0.weight': (16, 48, 3, 3), 'all_modules.17.Conv_2.weight': (16, 32, 1, 1),
      'all_modules.18.weight': (16,), 'all_modules.19.weight': (3, 16, 3, 3),  # GroupNorm + conv out
  }
  assert {k: s[k] for k in expected} == expected
  assert len(net.all_modules) == 20 and net.sigmas.dtype == torch.float64
  assert list(net.state_dict())[:3] == ['sigmas', 'all_modules.0.W', 'all_modules.1.weight']
  assert list(net.all_modules[4].state_dict()) == [  # ResnetBlockBigGANpp registration order
      'GroupNorm_0.weight', 'GroupNorm_0.bias', 'Conv_0.weight', 'Conv_0.bias', 'Dense_0.weight',
      'Dense_0.bias', 'GroupNorm_1.weight', 'GroupNorm_1.bias', 'Conv_1.weight', 'Conv_1.bias']
  assert list(net.all_modules[8].state_dict()) == [
      'GroupNorm_0.weight', 'GroupNorm_0.bias'] + [f'NIN_{i}.{p}' for i in range(4) for p in 'Wb']
  assert net.all_modules[18].num_groups == 4 and len(s) == 158  # 1 + 7 + 150 by hand


def test_ncsnpp_hires_reference_keys():
  """Output-skip / input-skip pyramids: `pyramid_upsample` / `pyramid_downsample` hold no state
  and sit outside `all_modules`; Combine is a 1x1 `Conv_0`; the output is the pyramid."""
  net, _ = build('ncsnpp_hires')
  s = shapes(net)
  assert s['all_modules.6.Conv_0.weight'] == (16, 3, 1, 1)  # Combine(3 -> 16)
  assert s['all_modules.15.weight'] == (32,) and s['all_modules.16.weight'] == (3, 32, 3, 3)
  assert s['all_modules.17.Conv_2.weight'] == (32, 32, 1, 1)  # ResBlock up
  assert s['all_modules.20.weight'] == (16,) and s['all_modules.21.weight'] == (3, 16, 3, 3)
  assert len(net.all_modules) == 22
  assert not any(k.startswith('pyramid') for k in s)


def test_ddpmpp_positional_keys():
  net, _ = build('ddpmpp')
  s = shapes(net)
  assert s['all_modules.0.weight'] == (64, 16) and s['all_modules.2.weight'] == (16, 3, 3, 3)
  assert 'all_modules.0.W' not in s and len(net.all_modules) == 18


def test_ddpm_reference_keys():
  net, _ = build('ddpm')
  s = shapes(net)
  expected = {
      'sigmas': (10,), 'all_modules.0.weight': (128, 32), 'all_modules.1.weight': (128, 128),
      'all_modules.2.weight': (32, 3, 3, 3), 'all_modules.4.Conv_0.weight': (32, 32, 3, 3),
      'all_modules.5.NIN_0.W': (32, 64), 'all_modules.6.NIN_2.W': (64, 64),
      'all_modules.10.NIN_0.W': (128, 64), 'all_modules.11.NIN_0.W': (96, 64),
      'all_modules.13.Conv_0.weight': (64, 64, 3, 3), 'all_modules.14.NIN_0.W': (96, 32),
      'all_modules.15.NIN_0.W': (64, 32), 'all_modules.16.weight': (32,),
      'all_modules.17.weight': (3, 32, 3, 3)}
  assert {k: s[k] for k in expected} == expected and len(net.all_modules) == 18
  assert list(net.all_modules[5].state_dict())[:8] == [  # the reference's registration order
      'GroupNorm_0.weight', 'GroupNorm_0.bias', 'Conv_0.weight', 'Conv_0.bias',
      'Dense_0.weight', 'Dense_0.bias', 'GroupNorm_1.weight', 'GroupNorm_1.bias']


def test_ncsnv2_reference_keys():
  net, _ = build('ncsnv2_64')
  s = shapes(net)
  nf = 16
  expected = {
      'sigmas': (10,), 'begin_conv.weight': (nf, 3, 3, 3), 'normalizer.alpha': (nf,),
      'normalizer.beta': (nf,), 'end_conv.weight': (3, nf, 3, 3),
      'res1.0.conv1.weight': (nf, nf, 3, 3), 'res1.0.normalize1.gamma': (nf,),
      'res2.0.conv2.conv.weight': (2 * nf, nf, 3, 3),  # ConvMeanPool
      'res2.0.shortcut.conv.weight': (2 * nf, nf, 1, 1),
      'res3.0.shortcut.weight': (2 * nf, 2 * nf, 3, 3),  # dilated, no pooling
      'refine1.adapt_convs.0.2_2_conv.weight': (2 * nf, 2 * nf, 3, 3),
      'refine2.msf.convs.1.bias': (2 * nf,), 'refine3.msf.convs.0.weight': (nf, 2 * nf, 3, 3),
      'refine4.output_convs.3_2_conv.weight': (nf, nf, 3, 3),
      'refine1.crp.convs.1.weight': (2 * nf, 2 * nf, 3, 3)}
  assert {k: s[k] for k in expected} == expected
  assert 'refine1.msf.convs.0.weight' not in s and 'refine1.adapt_convs.0.1_1_conv.bias' not in s
  assert 'res1.0.shortcut.weight' not in s
  keys = list(net.state_dict())
  assert keys[:5] == ['sigmas', 'begin_conv.weight', 'begin_conv.bias', 'normalizer.alpha',
                      'normalizer.gamma']
  assert keys.index('res2.0.shortcut.conv.weight') < keys.index('res2.0.normalize1.alpha')


def test_ncsnv2_variants_build_and_run():
  for name, size, extra_key in [('ncsnv2_128', 32, 'refine5.msf.convs.0.weight'),
                                ('ncsnv2_256', 64, 'refine31.msf.convs.1.weight')]:
    torch.manual_seed(0)
    net = create_network(small_config(name, data__image_size=size, model__nf=8, **NCSNV2)).eval()
    assert extra_key in net.state_dict()
    x = torch.rand(1, 3, size, size)
    with torch.no_grad():
      out = net(x, torch.tensor([3]))
    assert out.shape == x.shape and torch.isfinite(out).all()


@pytest.mark.parametrize('key', sorted(SMALL))
def test_checkpoint_round_trip(key, tmp_path):
  """score_sde_pytorch checkpoint layout: DataParallel 'module.' prefix, EMA shadow params of
  the trainable parameters in `parameters()` order; reload with weights_only, strict loading."""
  net, t = build(key)
  randomize(net)
  x = torch.rand(2, 3, 16, 16)
  trainable = lambda m: [p for p in m.parameters() if p.requires_grad]  # noqa: E731
  state = {'model': {'module.' + k: v for k, v in net.state_dict().items()},
           'ema': {'decay': 0.999, 'num_updates': 3,
                   'shadow_params': [p.detach().clone() for p in trainable(net)]},
           'optimizer': {}, 'step': 3}
  torch.save(state, tmp_path / 'checkpoint.pth')
  loaded = torch.load(tmp_path / 'checkpoint.pth', weights_only=True)
  fresh, _ = build(key, seed=123)
  model_state = {k[len('module.'):]: v for k, v in loaded['model'].items()}
  fresh.load_state_dict(model_state, strict=True)
  with torch.no_grad():
    ref = net(x, t)
    assert torch.equal(fresh(x, t), ref)
    ema, _ = build(key, seed=7)  # EMA weights copied in parameter order (ema.copy_to)
    ema.load_state_dict(model_state)
    for p, shadow in zip(trainable(randomize(ema, seed=9)), loaded['ema']['shadow_params'],
                         strict=True):
      p.copy_(shadow)
    assert torch.equal(ema(x, t), ref)
  assert loaded['step'] == 3


# ---------------------------------------------------------------- forward behaviour
@pytest.mark.parametrize('key', sorted(SMALL))
def test_forward_shape_bf16_channels_last(key):
  net, t = build(key)
  randomize(net)
  x = torch.rand(2, 3, 16, 16)
  with torch.no_grad():
    out = net(x, t)
    assert out.shape == x.shape and out.dtype == torch.float32 and torch.isfinite(out).all()
    with torch.autocast('cpu', dtype=torch.bfloat16):
      out_bf16 = net(x.to(memory_format=torch.channels_last), t)
    assert out_bf16.dtype == torch.bfloat16 and torch.isfinite(out_bf16).all()
    rel = (out_bf16.float() - out).norm() / out.norm()
    assert rel < 0.1, f'bf16 relative error {rel:.3f}'
    net = net.to(memory_format=torch.channels_last)
    assert torch.allclose(net(x.to(memory_format=torch.channels_last), t), out,
                          rtol=1e-4, atol=1e-4 * out.abs().max().item())


@pytest.mark.parametrize('key', ['ddpmpp', 'ncsnpp_ve', 'ddpm'])
def test_class_conditional(key):
  plain, t = build(key)
  net, _ = build(key, model__class_conditional=True, data__num_classes=4)
  assert set(net.state_dict()) == set(plain.state_dict()) | {'label_emb.weight'}
  assert net.label_emb.weight.shape == (5, net.nf * 4)  # last row: null label
  randomize(net)
  x = torch.rand(2, 3, 16, 16)
  with torch.no_grad():
    a, b = net(x, t, torch.tensor([0, 1])), net(x, t, torch.tensor([2, 3]))
    null = net(x, t)
    assert torch.equal(null, net(x, t, torch.tensor([4, 4])))
  assert not torch.allclose(a, b, atol=1e-5) and not torch.allclose(a, null, atol=1e-5)
  assert torch.isfinite(null).all()


def test_class_conditional_rejected_by_ncsnv2():
  with pytest.raises(ValueError):
    build('ncsnv2_64', model__class_conditional=True)


@pytest.mark.parametrize('key', ['ncsnpp_ve', 'ncsnpp_residual_ddpmblocks', 'ddpm'])
def test_scale_by_sigma_divides_by_sigma(key):
  on, t = build(key, model__scale_by_sigma=True)
  off, _ = build(key, model__scale_by_sigma=False)
  randomize(on)
  off.load_state_dict(on.state_dict())
  x = torch.rand(2, 3, 16, 16)
  sigma = t if getattr(on, 'embedding_type', '') == 'fourier' else on.sigmas[t.long()].float()
  with torch.no_grad():
    assert torch.allclose(on(x, t) * sigma[:, None, None, None], off(x, t), rtol=1e-5, atol=1e-6)
  assert on.sigmas[0] == pytest.approx(50.) and on.sigmas[-1] == pytest.approx(0.01)


def test_ncsnv2_is_noise_unconditional():
  """NCSNv2 (Technique 3): s(x, sigma_i) = f(x) / sigma_i."""
  net, _ = build('ncsnv2_64')
  randomize(net, std=0.1)
  x = torch.rand(2, 3, 16, 16)
  with torch.no_grad():
    a, b = net(x, torch.tensor([0, 0])), net(x, torch.tensor([9, 9]))
  assert torch.allclose(a * net.sigmas[0].float(), b * net.sigmas[9].float(), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize('key', ['ddpmpp', 'ddpm', 'ncsnv2_64'])
def test_uncentered_data_is_mapped_to_minus_one_one(key):
  centered, t = build(key, data__centered=True)
  raw, _ = build(key, data__centered=False)
  randomize(centered)
  raw.load_state_dict(centered.state_dict())
  x = torch.rand(2, 3, 16, 16)
  with torch.no_grad():
    assert torch.allclose(raw(x, t), centered(2 * x - 1, t), atol=1e-5)


def test_invalid_options_fail_loudly():
  with pytest.raises(ValueError):
    build('ddpmpp', model__progressive='bogus')
  with pytest.raises(ValueError):
    build('ncsnpp_ve', training__continuous=False)  # Fourier features need continuous time
