"""Cross-check our FID Inception, FID, IS, KID and precision / recall against torch-fidelity and
pytorch-fid on the same images and the same weights.

The real FID weights cannot be downloaded here, so a randomly initialised FID Inception-v3 (He
init, like tests/test_evaluation.py) is saved as a `pt_inception`-style state dict and loaded by
all three: ours (score_sde.evaluation.load_inception), torch-fidelity's
FeatureExtractorInceptionV3 (its TF1-compatible path: uint8 input, TF1 bilinear resize,
(x - 128) / 128) and pytorch-fid's InceptionV3 (PyTorch bilinear resize, 2x - 1; its weight
download is replaced by the local file). Ours runs with resize_mode 'tf1' against
torch-fidelity and 'torch' against pytorch-fid. The metric code is also compared on synthetic
features with N > D (non-singular covariances), where FID is well conditioned.

torch-fidelity and pytorch-fid need torchvision, which does not import beside the project's
CPU torch; run this in a separate environment (see README, "Comparable metrics"):

    python -m venv /tmp/xenv && /tmp/xenv/bin/pip install torch==2.14.1 torchvision==0.29.1
    /tmp/xenv/bin/pip install torch-fidelity pytorch-fid scipy tqdm
    PYTHONPATH=. /tmp/xenv/bin/python benchmarks/fid_crosscheck.py --out benchmarks/results/fid_crosscheck.md
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from score_sde.evaluation import (FIDInceptionV3, compute_activations, feature_statistics,  # noqa: E402
                                  frechet_distance, inception_score, kernel_inception_distance,
                                  load_inception)
from score_sde.evaluation.precision_recall import precision_recall  # noqa: E402


def random_weights(path: str, seed: int = 0) -> None:
  """A FID Inception-v3 state dict with He-initialised weights (non-degenerate activations)."""
  torch.manual_seed(seed)
  net = FIDInceptionV3().eval()
  for module in net.modules():
    if isinstance(module, (torch.nn.Conv2d, torch.nn.Linear)):
      torch.nn.init.kaiming_normal_(module.weight, nonlinearity='relu')
  torch.nn.init.normal_(net.fc.bias)
  torch.save(net.state_dict(), path)


def images(n: int, size: int, seed: int, shift: float) -> torch.Tensor:
  """uint8 `[n, 3, size, size]`: smooth random colour fields (plus a brightness shift)."""
  g = torch.Generator().manual_seed(seed)
  low = torch.rand(n, 3, 4, 4, generator=g)
  x = torch.nn.functional.interpolate(low, size=(size, size), mode='bicubic', align_corners=False)
  x = (x + 0.15 * torch.rand(n, 3, size, size, generator=g) + shift).clamp(0, 1)
  return (x * 255).round().to(torch.uint8)


def theirs_fidelity(path: str, batches):
  from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3
  net = FeatureExtractorInceptionV3('inception-v3-compat', ['2048', 'logits_unbiased', 'logits'],
                                    feature_extractor_weights_path=path)
  outs = [net(b) for b in batches]
  return [torch.cat([o[k] for o in outs]).double().numpy() for k in range(3)]


def theirs_pytorch_fid(path: str, batches) -> np.ndarray:
  import pytorch_fid.inception as pfi
  pfi.load_state_dict_from_url = lambda *a, **k: torch.load(path, weights_only=True)
  net = pfi.InceptionV3([pfi.InceptionV3.BLOCK_INDEX_BY_DIM[2048]]).eval()
  with torch.no_grad():
    return torch.cat([net(b.float() / 255)[0].flatten(1) for b in batches]).double().numpy()


def ours(path: str, batches, mode: str):
  net = load_inception(path, 'cpu', resize_mode=mode)
  acts = compute_activations(batches, net, progress=False)
  return acts.pool3.astype(np.float64), acts.logits_unbiased.astype(np.float64)


def _fidelity_fid(a: np.ndarray, b: np.ndarray) -> float:
  from torch_fidelity.metric_fid import fid_features_to_statistics, fid_statistics_to_metric
  stats = [fid_features_to_statistics(torch.from_numpy(x).float()) for x in (a, b)]
  return fid_statistics_to_metric(*stats, False)['frechet_inception_distance']


def _pytorch_fid_fid(a: np.ndarray, b: np.ndarray) -> float:
  from pytorch_fid.fid_score import calculate_frechet_distance
  return float(calculate_frechet_distance(a.mean(0), np.cov(a, rowvar=False), b.mean(0),
                                          np.cov(b, rowvar=False)))


def metric_rows(feats_a, feats_b, logits_a) -> list[tuple[str, float, float]]:
  """(metric, ours, torch-fidelity's / pytorch-fid's code) on the same features."""
  from pytorch_fid.fid_score import calculate_frechet_distance
  from torch_fidelity.metric_fid import fid_features_to_statistics, fid_statistics_to_metric
  from torch_fidelity.metric_isc import isc_features_to_metric
  from torch_fidelity.metric_kid import kid_features_to_metric
  from torch_fidelity.metric_prc import prc_features_to_metric
  ta, tb = torch.from_numpy(feats_a), torch.from_numpy(feats_b)
  s1, s2 = feature_statistics(feats_a), feature_statistics(feats_b)
  n = min(len(feats_a), len(feats_b))
  tf_fid = fid_statistics_to_metric(fid_features_to_statistics(ta), fid_features_to_statistics(tb),
                                    False)['frechet_inception_distance']
  tf_kid = kid_features_to_metric(ta, tb, kid_subsets=1, kid_subset_size=n, kid_degree=3,
                                  kid_gamma=None, kid_coef0=1, kid_kernel='poly', rng_seed=0,
                                  verbose=False)['kernel_inception_distance_mean']
  tf_is = isc_features_to_metric(torch.from_numpy(logits_a), splits=2, shuffle=False)
  prc = prc_features_to_metric(tb, ta, prc_neighborhood=3, prc_batch_size=10000,
                               save_cpu_ram=False, verbose=False)
  p, r = precision_recall(feats_a, feats_b, k=3)
  return [
      ('FID (ours sqrtm vs pytorch-fid)', frechet_distance(*s1, *s2),
       calculate_frechet_distance(*s1, *s2)),
      ('FID (ours eig vs torch-fidelity)', frechet_distance(*s1, *s2, method='eig'), tf_fid),
      ('KID (full sets)', kernel_inception_distance(feats_a, feats_b, subsets=1, subset_size=n)[0],
       tf_kid),
      ('IS (2 splits, unbiased logits)', inception_score(logits_a, splits=2)[0],
       tf_is['inception_score_mean']),
      ('precision (k=3)', p, prc['precision']), ('recall (k=3)', r, prc['recall'])]


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  parser.add_argument('--n', type=int, default=24, help='images per set')
  parser.add_argument('--size', type=int, default=32, help='image side')
  parser.add_argument('--out', default='', help='also write the tables to this markdown file')
  args = parser.parse_args()
  torch.set_num_threads(max(1, os.cpu_count() or 1))
  lines = [f'# FID cross-check: {args.n} + {args.n} random {args.size}x{args.size} images, '
           'random-weight FID Inception', '']
  with tempfile.TemporaryDirectory() as tmp:
    path = os.path.join(tmp, 'pt_inception-random.pth')
    random_weights(path)
    sets = [images(args.n, args.size, 1, 0.0), images(args.n, args.size, 2, 0.1)]
    split = lambda x: list(torch.split(x, 16))
    tf = [theirs_fidelity(path, split(x)) for x in sets]
    tf1 = [ours(path, split(x), 'tf1') for x in sets]
    pf = [theirs_pytorch_fid(path, split(x)) for x in sets]
    pt = [ours(path, split(x), 'torch') for x in sets]
  lines += ['| features | max abs diff | max rel diff |', '| --- | --- | --- |']
  for what, a, b in [('pool3, ours tf1 vs torch-fidelity', tf1[0][0], tf[0][0]),
                     ('logits (no bias), ours tf1 vs torch-fidelity', tf1[0][1], tf[0][1]),
                     ('pool3, ours torch vs pytorch-fid', pt[0][0], pf[0]),
                     ('pool3, ours tf1 vs ours torch (resize matters)', tf1[0][0], pt[0][0])]:
    d = np.abs(a - b)
    lines.append(f'| {what} | {d.max():.3g} | {(d / np.abs(b).max()).max():.3g} |')
  lines += ['', '| metric (same inputs end to end) | ours | theirs | abs diff |', '| --- | --- | --- | --- |']
  ends = [('FID end to end: ours tf1 (eig) vs torch-fidelity (its code, its features)',
           frechet_distance(*feature_statistics(tf1[0][0]), *feature_statistics(tf1[1][0]),
                            method='eig'), _fidelity_fid(tf[0][0], tf[1][0])),
          ('FID end to end: ours torch (sqrtm) vs pytorch-fid (its code, its features)',
           frechet_distance(*feature_statistics(pt[0][0]), *feature_statistics(pt[1][0])),
           _pytorch_fid_fid(pf[0], pf[1]))]
  rows = ends + metric_rows(tf1[0][0], tf1[1][0], tf1[0][1])
  rng = np.random.default_rng(0)  # metric code alone, well conditioned: N = 3000 > D = 2048
  fa, fb = rng.standard_normal((3000, 2048)), rng.standard_normal((3000, 2048)) * 1.01 + 0.01
  rows += [(f'{m} [synthetic N=3000]', a, b) for m, a, b in metric_rows(fa, fb, fa[:, :1008])]
  for what, a, b in rows:
    lines.append(f'| {what} | {a:.6g} | {b:.6g} | {abs(a - b):.3g} |')
  text = '\n'.join(lines) + '\n'
  print(text)
  if args.out:
    with open(args.out, 'w') as f:
      f.write(text)


if __name__ == '__main__':
  main()
