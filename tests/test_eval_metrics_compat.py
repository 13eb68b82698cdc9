"""Metrics comparable with published numbers: TF1's bilinear resize (TF-GAN / official FID),
IS / KID conventions, improved precision / recall, the reference-statistics formats of
score_sde, pytorch-fid / clean-fid and ADM, the sample export, and failing fast on a missing
or bad Inception file, stats file or dataset (before any sample is drawn)."""
from __future__ import annotations

import os
import time

import numpy as np
import pytest
import torch
from scipy.special import softmax

from score_sde.app import eval_modes
from score_sde.app import run_lib
from score_sde.errors import ConfigError, UserError
from score_sde.evaluation import InceptionOutput, compute_activations, inception
from score_sde.app import eval_loop as loop
from score_sde.evaluation.export import export_samples, npz_bytes, save_npz
from score_sde.evaluation.inception import FIDInceptionV3
from score_sde.evaluation.metrics import kid_blocks, polynomial_mmd2_unbiased
from score_sde.evaluation.precision_recall import precision_recall
from score_sde.evaluation.reference import read_reference
from score_sde.evaluation.report import image_quality
from score_sde.evaluation.resize import resize_bilinear_tf1
from score_sde.evaluation.stats import FeatureStats

pytestmark = pytest.mark.usefixtures('one_thread')


# ---------------------------------------------------------------------------- TF1 resize
def test_tf1_resize_integer_downscale_picks_pixels():
  x = torch.rand(2, 3, 12, 18)
  out = resize_bilinear_tf1(x, (4, 6))      # factor 3: rows / columns 0, 3, 6, 9 (no averaging)
  torch.testing.assert_close(out, x[:, :, ::3, ::3], rtol=0, atol=0)
  torch_resize = torch.nn.functional.interpolate(x, size=(4, 6), mode='bilinear', align_corners=False)
  assert (torch_resize - out).abs().max() > 1e-3  # PyTorch samples at half-pixel centres


def test_tf1_resize_upscale_of_a_ramp_is_linear_at_tf1_positions():
  ramp = torch.arange(8.0).view(1, 1, 1, 8).expand(1, 1, 5, 8) * 2.0 + 1.0  # f(c) = 2c + 1
  out = resize_bilinear_tf1(ramp, (5, 19))[0, 0, 0]
  src = np.arange(19) * 8 / 19                     # TF1: src = dst * in / out, no half-pixel offset
  expected = 2.0 * np.minimum(src, 7.0) + 1.0     # the last input pixel is repeated beyond 7
  np.testing.assert_allclose(out.numpy(), expected, rtol=0, atol=1e-5)
  square = torch.rand(1, 3, 7, 7)
  np.testing.assert_allclose(resize_bilinear_tf1(square, (299, 299))[0, :, :, 0].numpy(),
                             _tf1_column(square[0, :, :, 0].numpy(), 299), atol=1e-5)


def _tf1_column(col: np.ndarray, out: int) -> np.ndarray:
  """Closed form of TF1 resize along the height for a column [C, H] (float64)."""
  src = np.arange(out) * col.shape[1] / out
  lo = np.floor(src).astype(int)
  hi = np.minimum(lo + 1, col.shape[1] - 1)
  return col[:, lo] + (col[:, hi] - col[:, lo]) * (src - lo)


def test_inception_tf1_preprocessing_is_the_tf_graphs():
  net = FIDInceptionV3(resize_mode='tf1')
  u8 = torch.randint(0, 256, (2, 3, 9, 9), dtype=torch.uint8)
  expected = (resize_bilinear_tf1(u8.float(), (299, 299)) - 128) / 128
  torch.testing.assert_close(net._preprocess(u8), expected, rtol=0, atol=0)
  torch.testing.assert_close(net._preprocess(u8.float() / 255), expected, rtol=0, atol=1e-5)
  grey = torch.randint(0, 256, (1, 1, 9, 9), dtype=torch.uint8)
  torch.testing.assert_close(net._preprocess(grey), net._preprocess(grey.repeat(1, 3, 1, 1)))
  with pytest.raises(ValueError, match='resize_mode'):
    FIDInceptionV3(resize_mode='bicubic')


class _Net(torch.nn.Module):
  """A stand-in with the InceptionOutput protocol on tiny images: pool3 [B, 6], logits [B, 5];
  records the dtype it was given."""
  takes_uint8 = True

  def __init__(self):
    super().__init__()
    torch.manual_seed(0)
    self.feat, self.fc, self.seen = torch.nn.Linear(3 * 16, 6), torch.nn.Linear(6, 5), set()

  def forward(self, x):
    self.seen.add(x.dtype)
    pool3 = self.feat(x.float().flatten(1) / 255)
    unbiased = pool3 @ self.fc.weight.T
    return InceptionOutput(pool3, unbiased + self.fc.bias, unbiased)


def test_uint8_batches_reach_a_model_that_takes_them():
  net = _Net()
  compute_activations([torch.zeros(3, 3, 4, 4, dtype=torch.uint8)], net, progress=False)
  assert net.seen == {torch.uint8}


# ---------------------------------------------------------------------------- conventions
def _hand_is(logits: np.ndarray) -> float:
  p = softmax(logits.astype(np.float64), axis=1)
  return float(np.exp((p * (np.log(p) - np.log(p.mean(0, keepdims=True)))).sum(1).mean()))


def test_is_kid_precision_recall_conventions_in_the_report():
  net = _Net()
  images = [torch.randint(0, 256, (20, 3, 4, 4), dtype=torch.uint8)]
  acts = compute_activations(images, net, progress=False)
  ref_feats = np.random.default_rng(0).standard_normal((30, 6))
  ref = FeatureStats(ref_feats.mean(0), np.cov(ref_feats.T), ref_feats)
  sd = image_quality(images, 20, net, ref, 'cpu', is_splits=1, kid_subsets=0, pr_k=3)
  assert sd['inception_score'] == pytest.approx(_hand_is(acts.logits), rel=1e-9)
  assert sd['kid'] == pytest.approx(polynomial_mmd2_unbiased(ref_feats, acts.pool3), rel=1e-9)
  assert sd['metric_conventions']['inception_score'] == '1 split(s), logits with the fc bias'
  assert sd['metric_conventions']['kid'].startswith('TF-GAN blocks')
  assert 0 <= sd['precision'] <= 1 and 0 <= sd['recall'] <= 1
  paper = image_quality(images, 20, net, ref, 'cpu', kid_subset_size=10, is_splits=2, kid_subsets=4)
  halves = [_hand_is(acts.logits[:10]), _hand_is(acts.logits[10:])]
  assert paper['inception_score'] == pytest.approx(np.mean(halves), rel=1e-9)
  assert paper['inception_score_std'] == pytest.approx(np.std(halves), rel=1e-9)
  assert paper['metric_conventions']['kid'] == '4 random subsets of 10 (std over subsets)'
  again = image_quality(images, 20, net, ref, 'cpu', kid_subset_size=10, is_splits=2, kid_subsets=4)
  assert again['kid'] == paper['kid']  # seeded subsets: the same report on every run / rank count
  no_feats = image_quality(images, 20, net, ref._replace(pool3=None), 'cpu')
  assert no_feats['kid'] is None and no_feats['precision'] is None


def test_kid_blocks_match_tf_gan_by_hand():
  rng = np.random.default_rng(1)
  a, b = rng.standard_normal((10, 4)), rng.standard_normal((7, 4)) + 0.5
  mean, se = kid_blocks(a, b, max_block_size=4)  # 3 blocks: a in 3, 3, 4 rows; b in 2, 2, 3
  ests = [polynomial_mmd2_unbiased(a[0:3], b[0:2]), polynomial_mmd2_unbiased(a[3:6], b[2:4]),
          polynomial_mmd2_unbiased(a[6:10], b[4:7])]
  assert mean == pytest.approx(np.mean(ests), rel=1e-12)
  assert se == pytest.approx(np.std(ests, ddof=1) / np.sqrt(3), rel=1e-12)
  full, nan = kid_blocks(a, b)
  assert full == pytest.approx(polynomial_mmd2_unbiased(a, b), rel=1e-12) and np.isnan(nan)


def test_precision_recall_known_answers():
  x = np.random.default_rng(2).standard_normal((40, 8))
  assert precision_recall(x, x) == (1.0, 1.0)
  assert precision_recall(x, x + 1000.0) == (0.0, 0.0)
  ref = np.array([[0.0], [1.0], [2.0], [3.0], [10.0]])  # k=1: radii 1, 1, 1, 1, 7
  gen = np.array([[0.5], [2.5], [20.0], [30.0]])        # k=1: radii 2, 2, 10, 10
  p, r = precision_recall(ref, gen, k=1)
  assert p == pytest.approx(2 / 4)  # 0.5 and 2.5 lie in the reference balls; 20 and 30 do not
  assert r == pytest.approx(5 / 5)  # every reference point within 2 of 0.5 / 2.5 or 10 of 20


# ---------------------------------------------------------------------------- reference files
def test_three_reference_formats_load(tmp_path):
  feats = np.random.default_rng(3).standard_normal((12, 8)).astype(np.float32)
  np.savez(tmp_path / 'score_sde.npz', pool_3=feats)
  np.savez(tmp_path / 'pytorch_fid.npz', mu=feats.mean(0), sigma=np.cov(feats.T))
  stats, fmt = read_reference(str(tmp_path / 'score_sde.npz'), 8)
  assert fmt == 'score_sde_pool_3' and stats.pool3.shape == (12, 8)
  np.testing.assert_allclose(stats.mu, feats.mean(0), rtol=1e-6)
  np.testing.assert_allclose(stats.sigma, np.cov(feats.T.astype(np.float64)), rtol=1e-6)
  stats, fmt = read_reference(str(tmp_path / 'pytorch_fid.npz'), 8)
  assert fmt == 'mu_sigma' and stats.pool3 is None
  images = np.random.default_rng(4).integers(0, 256, (5, 4, 4, 3), dtype=np.uint8)  # NHWC
  seen = []
  featurize = lambda x: seen.append(x.shape) or x.reshape(len(x), 3, -1).mean(2).repeat(3, 1)[:, :8]
  np.savez(tmp_path / 'adm.npz', arr_0=images)
  stats, fmt = read_reference(str(tmp_path / 'adm.npz'), 8, featurize)
  assert fmt == 'adm_arr_0' and seen == [(5, 3, 4, 4)] and stats.pool3.shape == (5, 8)
  np.testing.assert_allclose(stats.mu, featurize(images.transpose(0, 3, 1, 2)).mean(0))
  np.savez(tmp_path / 'adm_stats.npz', arr_0=images, mu=np.ones(8), sigma=np.eye(8),
           mu_s=np.zeros(3), sigma_s=np.eye(3))
  stats, _ = read_reference(str(tmp_path / 'adm_stats.npz'), 8, featurize)
  assert (stats.mu == 1).all() and stats.pool3.shape == (5, 8)  # the dataset's mu for FID


@pytest.mark.parametrize('arrays,needle', [
    (dict(pool_3=np.zeros((4, 7))), 'dimension 7, the Inception features have 8'),
    (dict(arr_0=np.zeros((4, 3, 8, 8), np.uint8)), 'NHWC'),
    (dict(images=np.zeros(3)), "expected 'mu' and 'sigma'"),
    (dict(mu=np.zeros(7), sigma=np.eye(7)), 'dimension 7'),
])
def test_bad_reference_files_are_one_line(tmp_path, arrays, needle):
  path = str(tmp_path / 'ref.npz')
  np.savez(path, **arrays)
  with pytest.raises(ValueError) as info:
    read_reference(path, 8, lambda x: np.zeros((len(x), 8)))
  assert needle in str(info.value) and path in str(info.value) and '\n' not in str(info.value)


# ---------------------------------------------------------------------------- export
def test_export_png_folder_and_adm_npz(tmp_path):
  from PIL import Image
  rng = np.random.default_rng(5)
  shards = []
  for i, n in enumerate((3, 2)):
    path = str(tmp_path / f'samples_{i:05d}.npz')
    save_npz(path, samples=rng.integers(0, 256, (n, 1, 4, 4), dtype=np.uint8), nfe=np.array(7))
    shards.append(path)
  out = export_samples(shards, str(tmp_path), 'final', 'both', flat=False)
  assert out == [str(tmp_path / 'final_samples'), str(tmp_path / 'final_samples.npz')]
  x = np.concatenate([np.load(p)['samples'] for p in shards])
  pngs = sorted(os.listdir(tmp_path / 'final_samples'))
  assert pngs == [f'{i:06d}.png' for i in range(5)]
  np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / 'final_samples' / pngs[4])), x[4, 0])
  arr = np.load(tmp_path / 'final_samples.npz')['arr_0']
  assert arr.dtype == np.uint8 and arr.shape == (5, 4, 4, 3)  # NHWC, grey repeated to RGB
  np.testing.assert_array_equal(arr[..., 2], x[:, 0])
  with pytest.raises(UserError, match='points, not images'):
    export_samples(shards, str(tmp_path), 'toy', 'png', flat=True)
  export_samples(shards[1:], str(tmp_path), 'final', 'png', flat=False)  # a smaller export
  assert sorted(os.listdir(tmp_path / 'final_samples')) == ['000000.png', '000001.png']


def test_dataset_stats_cache_is_per_inception_resize(tmp_path, monkeypatch):
  from configs.digits import get_config
  from score_sde.evaluation import stats
  paths = []
  monkeypatch.setattr(stats, 'load_or_compute_stats', lambda path, *a, **k: paths.append(path))
  for mode in ('tf1', 'torch'):
    config = get_config()
    config.eval.inception_resize = mode
    loop.reference_stats(config, str(tmp_path), None, 'cpu')
  assert [os.path.basename(p) for p in paths] == ['digits_8_train_stats_tf1.npz',
                                                  'digits_8_train_stats.npz']


def test_npz_bytes_do_not_depend_on_the_clock(monkeypatch):
  a = np.arange(6, dtype=np.uint8).reshape(2, 3)
  first = npz_bytes(samples=a, nfe=np.array(3))
  monkeypatch.setattr(time, 'time', lambda: 2e9)       # np.savez would stamp another time
  monkeypatch.setattr(time, 'localtime', lambda *t: time.gmtime(2e9))
  assert npz_bytes(samples=a, nfe=np.array(3)) == first


def test_new_eval_keys_are_validated():
  from configs.digits import get_config
  from score_sde.app.config_check import validate
  for key, value in (('inception_resize', 'bicubic'), ('export', 'jpg'), ('is_splits', 0),
                     ('kid_subsets', -1), ('pr_k', -2)):
    config = get_config()
    setattr(config.eval, key, value)
    with pytest.raises(ConfigError, match=f'eval.{key}'):
      validate(config)
  assert get_config().eval.num_samples == 1000   # digits: not CIFAR's 50,000


# ---------------------------------------------------------------------------- fail fast
def _digits(tmp_path, **keys):
  from configs.digits import get_config
  config = get_config()
  config.model.nf = 8
  for key, value in keys.items():
    section, name = key.split('.')
    setattr(getattr(config, section), name, value)
  (tmp_path / 'checkpoints').mkdir(exist_ok=True)
  (tmp_path / 'checkpoints' / 'checkpoint_1.pth').write_bytes(b'')
  return config


def _fails_before_sampling(monkeypatch, tmp_path, config, needle):
  monkeypatch.setattr(eval_modes, 'load_eval_model', lambda *a: pytest.fail('sampled first'))
  start = time.time()
  with pytest.raises(UserError) as info:
    run_lib.evaluate(config, str(tmp_path))
  assert needle in str(info.value) and '\n' not in str(info.value)
  assert time.time() - start < 30


def test_missing_or_wrong_inception_file_fails_before_sampling(tmp_path, monkeypatch):
  config = _digits(tmp_path, **{'eval.inception_path': str(tmp_path / 'pt_inception.pth')})
  _fails_before_sampling(monkeypatch, tmp_path, config, 'pt_inception.pth')
  torch.save({'fc.weight': torch.zeros(1008, 2048)}, tmp_path / 'pt_inception.pth')
  _fails_before_sampling(monkeypatch, tmp_path, config, 'do not fit the FID Inception-v3')


def test_missing_dataset_or_bad_stats_fails_before_sampling(tmp_path, monkeypatch):
  monkeypatch.setattr(inception, 'load_inception', lambda path, device: object())
  config = _digits(tmp_path, **{'data.dataset': 'cifar10', 'data.image_size': 32,
                                'data.num_channels': 3, 'data.root': str(tmp_path / 'nodata')})
  _fails_before_sampling(monkeypatch, tmp_path, config, 'nodata')
  np.savez(tmp_path / 'stats.npz', pool_3=np.zeros((4, 64)))
  config = _digits(tmp_path, **{'eval.stats_path': str(tmp_path / 'stats.npz')})
  _fails_before_sampling(monkeypatch, tmp_path, config, 'dimension 64')


def test_bad_solver_option_and_export_fail_before_sampling(tmp_path, monkeypatch):
  monkeypatch.setattr(loop, 'quality_reference', lambda *a: None)
  config = _digits(tmp_path, **{'sampling.variance': 'learned', 'eval.solver': 'ddpm'})
  _fails_before_sampling(monkeypatch, tmp_path, config, 'learned variance')
  from configs.toy_gmm import get_config
  toy = get_config()
  toy.eval.export = 'png'
  _fails_before_sampling(monkeypatch, tmp_path, toy, 'points, not images')
