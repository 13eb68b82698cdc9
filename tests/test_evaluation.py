"""Tests for score_sde.evaluation: FID / IS / KID against closed forms, and the FID Inception net.

Nothing is downloaded: the Inception net is tested with random weights (fixed seed).
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from score_sde.evaluation import (FID_WEIGHTS_URL, Activations, FIDInceptionV3, InceptionOutput,
                                  compute_activations, feature_statistics, frechet_distance,
                                  inception_score, kernel_inception_distance, load_inception,
                                  load_or_compute_stats)
from score_sde.evaluation.inception import _tf_avg_pool3x3


def _random_cov(rng, dim, scale=1.0):
  a = rng.standard_normal((dim, dim))
  return scale * (a @ a.T / dim + 0.1 * np.eye(dim))


# ---------------------------------------------------------------- Fréchet distance (Heusel 2017)

@pytest.mark.parametrize('method', ['sqrtm', 'eig'])
def test_fd_diagonal_closed_form(method):
  rng = np.random.default_rng(0)
  mu1, mu2 = rng.standard_normal(16), rng.standard_normal(16)
  s1, s2 = rng.uniform(0.1, 3.0, 16), rng.uniform(0.1, 3.0, 16)
  expected = np.sum((mu1 - mu2) ** 2) + np.sum(s1 + s2 - 2 * np.sqrt(s1 * s2))
  got = frechet_distance(mu1, np.diag(s1), mu2, np.diag(s2), method=method)
  assert got == pytest.approx(expected, rel=1e-9, abs=1e-9)


@pytest.mark.parametrize('method', ['sqrtm', 'eig'])
def test_fd_commuting_full_covariances(method):
  rng = np.random.default_rng(1)
  q, _ = np.linalg.qr(rng.standard_normal((12, 12)))  # shared eigenvectors
  a, b = rng.uniform(0.05, 4.0, 12), rng.uniform(0.05, 4.0, 12)
  mu1, mu2 = rng.standard_normal(12), rng.standard_normal(12)
  expected = np.sum((mu1 - mu2) ** 2) + np.sum(a + b - 2 * np.sqrt(a * b))
  got = frechet_distance(mu1, q @ np.diag(a) @ q.T, mu2, q @ np.diag(b) @ q.T, method=method)
  assert got == pytest.approx(expected, rel=1e-8)


def test_fd_identity_symmetry_and_methods_agree():
  rng = np.random.default_rng(2)
  mu1, mu2 = rng.standard_normal(64), rng.standard_normal(64)
  s1, s2 = _random_cov(rng, 64), _random_cov(rng, 64, 2.0)
  for method in ('sqrtm', 'eig'):
    assert abs(frechet_distance(mu1, s1, mu1, s1, method=method)) < 1e-6
  d12, d21 = frechet_distance(mu1, s1, mu2, s2), frechet_distance(mu2, s2, mu1, s1)
  assert d12 > 0 and d12 == pytest.approx(d21, rel=1e-9)
  assert frechet_distance(mu1, s1, mu2, s2, method='eig') == pytest.approx(d12, rel=1e-9)


def test_fd_singular_covariances_are_finite():
  rng = np.random.default_rng(3)
  feats = rng.standard_normal((10, 32))  # N < D: rank-deficient covariance
  mu, sigma = feature_statistics(feats)
  # sqrtm has the usual floor ~ sqrt(machine eps) per null direction; 'eig' drops round-off.
  scale = np.trace(sigma)
  assert abs(frechet_distance(mu, sigma, mu, sigma, method='sqrtm')) < 1e-6 * scale
  assert abs(frechet_distance(mu, sigma, mu, sigma, method='eig')) < 1e-10 * scale
  with pytest.raises(ValueError, match='shape mismatch'):
    frechet_distance(mu, sigma, mu[:-1], sigma)


def test_fd_from_samples_bias_order():
  """Two N-samples of N(0, I_d): E FD ~ 2d/N (means) + d(d+1)/(2N) (covariances, Bures ~ |dS|^2/4)."""
  rng, d = np.random.default_rng(4), 8
  for n in (5000, 20000):
    fds = [frechet_distance(*feature_statistics(rng.standard_normal((n, d))),
                            *feature_statistics(rng.standard_normal((n, d)))) for _ in range(10)]
    expected = (2 * d + d * (d + 1) / 2) / n
    assert np.mean(fds) == pytest.approx(expected, rel=0.25)
    assert min(fds) > 0


# ----------------------------------------------------------------- Inception score (Salimans 2016)

def test_is_uniform_predictions_is_one():
  mean, std = inception_score(np.full((100, 10), 0.1), splits=10)
  assert mean == pytest.approx(1.0, abs=1e-12) and std == pytest.approx(0.0, abs=1e-12)
  mean, _ = inception_score(np.zeros((100, 1008)), splits=5)  # equal logits
  assert mean == pytest.approx(1.0, abs=1e-12)


@pytest.mark.parametrize('k', [2, 7, 1008])
def test_is_one_hot_spread_over_k_classes_is_k(k):
  n, splits = 10 * k * (3 if k < 100 else 1), 10  # every split holds each class equally often
  probs = np.eye(k)[np.arange(n) % k]
  mean, std = inception_score(probs, splits=splits)
  assert mean == pytest.approx(k, rel=1e-12) and std == pytest.approx(0.0, abs=1e-9)
  logits = 50.0 * np.eye(k)[np.arange(n) % k]  # softmax ~ one-hot
  assert inception_score(logits, splits=splits, from_logits=True)[0] == pytest.approx(k, rel=1e-6)


# ---------------------------------------------------------------------------- KID (Binkowski 2018)

def _gaussian_moments(mu, cov):
  """E x, E x x^T, E x (x) x (x) x for x ~ N(mu, cov)."""
  m3 = (np.einsum('i,j,k->ijk', mu, mu, mu) + np.einsum('i,jk->ijk', mu, cov)
        + np.einsum('j,ik->ijk', mu, cov) + np.einsum('k,ij->ijk', mu, cov))
  return mu, cov + np.outer(mu, mu), m3


def _expected_cubic_kernel(p, q, d):
  """E (x.y/d + 1)^3 for independent x, y = 1 + 3E[u] + 3E[u^2] + E[u^3], E[(x.y)^n] = <M_n, M_n'>."""
  return 1 + 3 * (p[0] @ q[0]) / d + 3 * np.sum(p[1] * q[1]) / d ** 2 + np.sum(p[2] * q[2]) / d ** 3


def _exact_mmd2(mu1, cov1, mu2, cov2):
  d, p, q = len(mu1), _gaussian_moments(mu1, cov1), _gaussian_moments(mu2, cov2)
  return (_expected_cubic_kernel(p, p, d) + _expected_cubic_kernel(q, q, d)
          - 2 * _expected_cubic_kernel(p, q, d))


def test_kid_identical_features_near_zero():
  rng = np.random.default_rng(5)
  feats = np.abs(rng.standard_normal((3000, 64)))  # non-negative, like pool3
  mean, std = kernel_inception_distance(feats, feats, subsets=30, subset_size=500, generator=0)
  assert abs(mean) < 4 * std / np.sqrt(30) + 1e-3
  other = np.abs(rng.standard_normal((3000, 64)))  # a fresh sample of the same law
  mean, std = kernel_inception_distance(feats, other, subsets=30, subset_size=500, generator=1)
  assert abs(mean) < 4 * std / np.sqrt(30) + 1e-3


def test_kid_matches_gaussian_closed_form_and_grows_with_shift():
  rng, d = np.random.default_rng(6), 4
  mu1, cov1 = np.full(d, 0.5), np.eye(d)
  cov2 = np.diag([0.5, 1.0, 1.5, 2.0])
  x = rng.multivariate_normal(mu1, cov1, 20000)
  means = []
  for shift in (0.0, 0.25, 0.5, 1.0):
    mu2 = mu1 + shift
    y = rng.multivariate_normal(mu2, cov2, 20000)
    mean, std = kernel_inception_distance(x, y, subsets=20, subset_size=500, generator=7)
    exact = _exact_mmd2(mu1, cov1, mu2, cov2)
    assert abs(mean - exact) < 4 * std / np.sqrt(20), (shift, mean, exact)
    means.append(mean)
  assert all(a < b for a, b in zip(means, means[1:]))
  with pytest.raises(ValueError, match='subset_size'):
    kernel_inception_distance(x[:10], x[:10], subset_size=20)


# ------------------------------------------------------------------------- FID Inception network

def _conv_params(cin, cout, kh, kw):
  return cin * cout * kh * kw + 2 * cout  # conv without bias + BatchNorm weight and bias


def _reference_param_count():
  """FID Inception-v3 parameters from the reference block shapes (torchvision / pytorch-fid)."""
  c = _conv_params
  stem = c(3, 32, 3, 3) + c(32, 32, 3, 3) + c(32, 64, 3, 3) + c(64, 80, 1, 1) + c(80, 192, 3, 3)
  def block_a(cin, pool):
    return (c(cin, 64, 1, 1) + c(cin, 48, 1, 1) + c(48, 64, 5, 5) + c(cin, 64, 1, 1)
            + c(64, 96, 3, 3) + c(96, 96, 3, 3) + c(cin, pool, 1, 1))
  def block_c(c7):
    return (c(768, 192, 1, 1) * 2 + c(768, c7, 1, 1) * 2 + c(c7, c7, 1, 7) * 4
            + c(c7, 192, 7, 1) + c(c7, 192, 1, 7))
  def block_e(cin):
    return (c(cin, 320, 1, 1) + c(cin, 384, 1, 1) + 4 * c(384, 384, 1, 3) + c(cin, 448, 1, 1)
            + c(448, 384, 3, 3) + c(cin, 192, 1, 1))
  mixed_6a = c(288, 384, 3, 3) + c(288, 64, 1, 1) + c(64, 96, 3, 3) + c(96, 96, 3, 3)
  mixed_7a = (c(768, 192, 1, 1) * 2 + c(192, 320, 3, 3) + c(192, 192, 1, 7) * 2
              + c(192, 192, 3, 3))
  return (stem + block_a(192, 32) + block_a(256, 64) + block_a(288, 64) + mixed_6a
          + sum(block_c(c7) for c7 in (128, 160, 160, 192)) + mixed_7a + block_e(1280)
          + block_e(2048) + 2048 * 1008 + 1008)


@pytest.fixture(scope='module')
def inception():
  """Random weights with a variance-preserving (He) init, so activations neither vanish nor blow up."""
  torch.manual_seed(0)
  net = FIDInceptionV3().eval()
  for module in net.modules():
    if isinstance(module, (torch.nn.Conv2d, torch.nn.Linear)):
      torch.nn.init.kaiming_normal_(module.weight, nonlinearity='relu')
  torch.nn.init.normal_(net.fc.bias)
  return net


@pytest.fixture(scope='module')
def small_inception(inception):
  """The same weights without the 299x299 resize, for cheap forward passes on 75x75 inputs."""
  net = FIDInceptionV3(resize_input=False).eval()
  net.load_state_dict(inception.state_dict())
  return net


@pytest.fixture(scope='module')
def weights_file(inception, tmp_path_factory):
  path = tmp_path_factory.mktemp('inception') / 'fid_inception.pth'
  torch.save(inception.state_dict(), path)
  return path


def test_parameter_count_matches_reference(inception):
  count = sum(p.numel() for p in inception.parameters())
  assert count == _reference_param_count() == 23_850_960
  # Cross-check: torchvision's inception_v3 has 27,161,264 parameters with its aux head
  # (3,326,696) and a 1000-way fc; the FID net drops the aux head and has 1008 classes.
  assert count == 27_161_264 - 3_326_696 + 8 * (2048 + 1)


def test_state_dict_uses_pytorch_fid_names(inception):
  sd = inception.state_dict()
  assert sd['Conv2d_1a_3x3.conv.weight'].shape == (32, 3, 3, 3)
  assert sd['Mixed_7c.branch_pool.conv.weight'].shape == (192, 2048, 1, 1)
  assert sd['Mixed_6e.branch7x7dbl_5.conv.weight'].shape == (192, 192, 1, 7)
  assert sd['Mixed_7a.branch7x7x3_4.conv.weight'].shape == (192, 192, 3, 3)
  assert sd['Mixed_7b.branch3x3dbl_3b.bn.running_var'].shape == (384,)
  assert sd['fc.weight'].shape == (1008, 2048) and sd['fc.bias'].shape == (1008,)
  assert not any(k.startswith('AuxLogits') for k in sd)


def test_forward_shapes_and_input_conventions(inception, small_inception):
  torch.manual_seed(1)
  images = torch.rand(2, 3, 32, 32)
  raw = FIDInceptionV3(resize_input=False, normalize_input=False).eval()
  raw.load_state_dict(inception.state_dict())
  with torch.no_grad():
    out = inception(images)
    assert isinstance(out, InceptionOutput)
    assert out.pool3.shape == (2, 2048) and out.logits.shape == (2, 1008)
    assert out.pool3.std() > 1e-2 and (out.pool3 >= 0).all()  # post-ReLU average
    torch.testing.assert_close(out.logits, out.logits_unbiased + inception.fc.bias)
    # Inside: bilinear resize to 299 (align_corners=False), then [0, 1] -> [-1, 1].
    resized = torch.nn.functional.interpolate(images, size=(299, 299), mode='bilinear',
                                              align_corners=False)
    torch.testing.assert_close(raw(2 * resized[:1] - 1).pool3, out.pool3[:1])
    # Grey images are repeated to RGB.
    grey = torch.rand(2, 1, 75, 75)
    torch.testing.assert_close(small_inception(grey).pool3,
                               small_inception(grey.repeat(1, 3, 1, 1)).pool3)


def test_tf_pooling_quirks():
  x = torch.full((1, 2, 5, 5), 3.0)
  torch.testing.assert_close(_tf_avg_pool3x3(x), x)  # padding is not averaged in, even at borders
  torch.testing.assert_close(F.avg_pool2d(x, 3, 1, 1)[0, 0, 0, 0], torch.tensor(4 / 9 * 3.0))
  net = FIDInceptionV3()
  assert [net.Mixed_7b.pool, net.Mixed_7c.pool] == ['avg', 'max']


def test_load_round_trip_strict(small_inception, weights_file):
  loaded = load_inception(weights_file, 'cpu')
  assert not loaded.training and not any(p.requires_grad for p in loaded.parameters())
  loaded.resize_input = False  # compare cheaply at 80x80
  images = torch.rand(1, 3, 80, 80)
  with torch.no_grad():
    torch.testing.assert_close(loaded(images).logits, small_inception(images).logits,
                               rtol=0, atol=0)
  # Old-format files without BatchNorm `num_batches_tracked` buffers still load strictly.
  sd = {k: v for k, v in torch.load(weights_file, weights_only=True).items()
        if not k.endswith('num_batches_tracked')}
  FIDInceptionV3().load_state_dict(sd, strict=True)


@pytest.mark.parametrize('path', ['', None, '/nonexistent/pt_inception.pth'])
def test_missing_weights_message(path):
  with pytest.raises(FileNotFoundError) as info:
    load_inception(path)
  message = str(info.value)
  assert FID_WEIGHTS_URL in message and '--config.eval.inception_path=' in message
  assert '\n' not in message


def test_tampered_weights_message(inception, tmp_path):
  sd = {k: v.half() if v.is_floating_point() else v for k, v in inception.state_dict().items()}
  sd['Mixed_6b.branch1x1.conv.kernel'] = sd.pop('Mixed_6b.branch1x1.conv.weight')
  torch.save(sd, tmp_path / 'renamed.pth')
  with pytest.raises(ValueError) as info:
    load_inception(tmp_path / 'renamed.pth')
  assert "'Mixed_6b.branch1x1.conv.weight'" in str(info.value) and '\n' not in str(info.value)
  sd = {'fc.weight': torch.zeros(1000, 2048)}
  torch.save(sd, tmp_path / 'small.pth')
  (tmp_path / 'junk.pth').write_bytes(b'not a checkpoint')
  for name in ('small.pth', 'junk.pth'):
    with pytest.raises(ValueError) as info:
      load_inception(tmp_path / name)
    assert '\n' not in str(info.value)


# ------------------------------------------------------------------------------ streaming + cache

class _TinyNet(torch.nn.Module):
  """A stand-in with the `InceptionOutput` protocol: pool3 [B, 8], logits [B, 5]."""

  def __init__(self):
    super().__init__()
    self.feat = torch.nn.Linear(3, 8)
    self.fc = torch.nn.Linear(8, 5)

  def forward(self, x):
    pool3 = self.feat(x.mean(dim=(2, 3)))
    unbiased = pool3 @ self.fc.weight.T
    return InceptionOutput(pool3, unbiased + self.fc.bias, unbiased)


def test_compute_activations_feeds_metrics(tmp_path):
  torch.manual_seed(2)
  net = _TinyNet()
  batches = [torch.rand(7, 3, 6, 6), (torch.rand(13, 3, 6, 6) * 255).to(torch.uint8)]
  acts = compute_activations(batches, net, 'cpu', batch_size=4, progress=False)
  assert isinstance(acts, Activations)
  assert acts.pool3.shape == (20, 8) and acts.logits.shape == (20, 5)
  assert acts.pool3.dtype == np.float32
  with torch.no_grad():
    expected = net(torch.cat([batches[0], batches[1].float() / 255])).pool3.double().numpy()
  np.testing.assert_allclose(acts.pool3, expected, rtol=1e-6, atol=1e-6)

  mu, sigma = feature_statistics(acts.pool3)
  assert abs(frechet_distance(mu, sigma, mu, sigma)) < 1e-6
  assert inception_score(acts.logits, splits=2)[0] >= 1.0
  assert np.isfinite(kernel_inception_distance(acts.pool3, acts.pool3, subsets=3,
                                               subset_size=10, generator=0)[0])

  cache = tmp_path / 'stats.npz'
  calls = []
  def images():
    calls.append(1)
    return batches
  stats = load_or_compute_stats(cache, images, net, batch_size=4, keep_features=True,
                                progress=False)
  np.testing.assert_allclose(stats.mu, mu)
  np.testing.assert_allclose(stats.pool3, acts.pool3)
  again = load_or_compute_stats(cache, images, net, progress=False)
  assert len(calls) == 1 and again.pool3 is None
  np.testing.assert_allclose(again.sigma, sigma)
  cache.write_bytes(b'garbage')
  with pytest.raises(ValueError, match='corrupt Inception stats cache') as info:
    load_or_compute_stats(cache, images, net, progress=False)
  assert '\n' not in str(info.value)
