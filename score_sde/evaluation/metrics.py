"""Sample-quality metrics on Inception features: FID, Inception Score and KID
(Heusel et al. 2017; Salimans et al. 2016; Binkowski et al. 2018).

All functions take NumPy arrays (or anything `np.asarray` accepts, e.g. CPU tensors), compute
in float64 and return Python floats.

References:
  FID: Heusel et al. 2017, "GANs Trained by a Two Time-Scale Update Rule Converge to a Local
    Nash Equilibrium" (TTUR), Eq. (6).
  IS:  Salimans et al. 2016, "Improved Techniques for Training GANs", Section 4.
  KID: Binkowski et al. 2018, "Demystifying MMD GANs", Section 4 / Appendix (unbiased MMD^2
    with the kernel k(x, y) = (x.y / d + 1)^3).
"""
from __future__ import annotations

import numpy as np
import scipy.linalg
from scipy.special import softmax, xlogy


def feature_statistics(feats) -> tuple[np.ndarray, np.ndarray]:
  """Mean `[D]` and unbiased (ddof=1) covariance `[D, D]` of features `[N, D]`, N >= 2."""
  feats = np.asarray(feats, dtype=np.float64)
  if feats.ndim != 2 or feats.shape[0] < 2:
    raise ValueError(f'feature_statistics needs features [N >= 2, D], got {feats.shape}')
  return feats.mean(axis=0), np.cov(feats, rowvar=False)


def _trace_sqrt_product_sqrtm(sigma1: np.ndarray, sigma2: np.ndarray, eps: float) -> float:
  """Tr (S1 S2)^{1/2} via scipy's Schur-based `sqrtm`, as TTUR and pytorch-fid compute it.

  If the square root is not finite (near-singular product), retry with eps I added to both
  covariances; a numerically complex result must have a negligible imaginary diagonal
  (|imag| <= 1e-3), which is then dropped.
  """
  covmean = scipy.linalg.sqrtm(sigma1 @ sigma2)
  if not np.isfinite(covmean).all():
    offset = eps * np.eye(sigma1.shape[0])
    covmean = scipy.linalg.sqrtm((sigma1 + offset) @ (sigma2 + offset))
  if np.iscomplexobj(covmean):
    max_imag = np.abs(np.diagonal(covmean).imag).max()
    if max_imag > 1e-3:
      raise ValueError(f'sqrtm(sigma1 sigma2) has a non-negligible imaginary part {max_imag:.3g}; '
                       "the covariances may be degenerate (try method='eig')")
    covmean = covmean.real
  return float(np.trace(covmean))


def _drop_roundoff(evals: np.ndarray) -> np.ndarray:
  """Zero eigenvalues below the round-off level D eps max|lambda| of a PSD matrix.

  Otherwise each numerically-zero eigenvalue (~1e-16) of a singular covariance would add
  sqrt(1e-16) = 1e-8 to the trace of the square root.
  """
  tol = evals.shape[0] * np.finfo(np.float64).eps * max(np.abs(evals).max(initial=0.0), 1e-300)
  return np.where(evals > tol, evals, 0.0)


def _psd_sqrt(sigma: np.ndarray) -> np.ndarray:
  """Symmetric square root of a symmetric PSD matrix."""
  evals, evecs = np.linalg.eigh((sigma + sigma.T) / 2)
  return (evecs * np.sqrt(_drop_roundoff(evals))) @ evecs.T


def _trace_sqrt_product_eig(sigma1: np.ndarray, sigma2: np.ndarray) -> float:
  """Tr (S1 S2)^{1/2} = sum_i sqrt(lambda_i(S1^{1/2} S2 S1^{1/2})), from symmetric eigensolvers.

  S1 S2 is similar to the PSD matrix S1^{1/2} S2 S1^{1/2}, so they share their (non-negative)
  eigenvalues; zeroing round-off eigenvalues makes this accurate for singular covariances.
  """
  root1 = _psd_sqrt(sigma1)
  middle = root1 @ sigma2 @ root1
  evals = np.linalg.eigvalsh((middle + middle.T) / 2)
  return float(np.sqrt(_drop_roundoff(evals)).sum())


FID_METHODS = ('sqrtm', 'eig')


def frechet_distance(mu1, sigma1, mu2, sigma2, eps: float = 1e-6, method: str = 'sqrtm') -> float:
  """Fréchet (2-Wasserstein) distance between N(mu1, sigma1) and N(mu2, sigma2).

      FD = ||mu1 - mu2||^2 + Tr(sigma1 + sigma2 - 2 (sigma1 sigma2)^{1/2})   (Heusel et al. 2017)

  Args:
    mu1, mu2: means `[D]`; sigma1, sigma2: covariances `[D, D]`.
    eps: diagonal offset for the 'sqrtm' fallback on near-singular products.
    method: 'sqrtm' (default; scipy.linalg.sqrtm with the eps-offset fallback and dropping a
      negligible imaginary part, i.e. what TTUR / pytorch-fid do, so numbers are comparable)
      or 'eig' (eigen-decomposition trace of the square root; faster and never complex).
  """
  mu1, mu2 = np.atleast_1d(np.asarray(mu1, np.float64)), np.atleast_1d(np.asarray(mu2, np.float64))
  sigma1 = np.atleast_2d(np.asarray(sigma1, np.float64))
  sigma2 = np.atleast_2d(np.asarray(sigma2, np.float64))
  dim = mu1.shape[0]
  if mu2.shape != (dim,) or sigma1.shape != (dim, dim) or sigma2.shape != (dim, dim):
    raise ValueError(f'frechet_distance shape mismatch: mu1 {mu1.shape}, sigma1 {sigma1.shape}, '
                     f'mu2 {mu2.shape}, sigma2 {sigma2.shape}')
  if method == 'sqrtm':
    tr_covmean = _trace_sqrt_product_sqrtm(sigma1, sigma2, eps)
  elif method == 'eig':
    tr_covmean = _trace_sqrt_product_eig(sigma1, sigma2)
  else:
    raise ValueError(f"unknown method {method!r}; choose 'sqrtm' or 'eig'")
  diff = mu1 - mu2
  return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2.0 * tr_covmean)


def _looks_like_probs(x: np.ndarray) -> bool:
  return bool((x >= 0).all() and np.allclose(x.sum(axis=1), 1.0, atol=1e-4))


def inception_score(logits_or_probs, splits: int = 10, from_logits: bool | None = None
                    ) -> tuple[float, float]:
  """IS = exp(E_x KL(p(y|x) || p(y))) over `splits` contiguous chunks -> (mean, std).

  Salimans et al. 2016: p(y) is the class marginal of each chunk; the std is over chunks.

  Args:
    logits_or_probs: `[N, K]` class logits or probabilities p(y|x).
    splits: number of chunks (10 in the reference code); needs N >= splits.
    from_logits: True for logits (softmax applied), False for probabilities; None detects
      probabilities (non-negative rows summing to 1).
  """
  x = np.asarray(logits_or_probs, dtype=np.float64)
  if x.ndim != 2 or x.shape[0] < splits or splits < 1:
    raise ValueError(f'inception_score needs [N >= splits={splits}, K] predictions, got {x.shape}')
  if from_logits is None:
    from_logits = not _looks_like_probs(x)
  probs = softmax(x, axis=1) if from_logits else x
  n, scores = probs.shape[0], []
  for k in range(splits):
    part = probs[k * n // splits:(k + 1) * n // splits]
    marginal = part.mean(axis=0, keepdims=True)
    kl = (xlogy(part, part) - xlogy(part, marginal)).sum(axis=1)  # 0 log 0 = 0
    scores.append(np.exp(kl.mean()))
  return float(np.mean(scores)), float(np.std(scores))


def polynomial_mmd2_unbiased(x, y, degree: int = 3, gamma: float | None = None,
                             coef0: float = 1.0) -> float:
  """Unbiased MMD^2 between samples x `[m, D]` and y `[n, D]`, k(a, b) = (gamma a.b + coef0)^degree.

      MMD^2 = sum_{i!=j} k(x_i, x_j) / (m(m-1)) + sum_{i!=j} k(y_i, y_j) / (n(n-1))
              - 2 sum_{i,j} k(x_i, y_j) / (mn)

  gamma defaults to 1/D (Binkowski et al. 2018).
  """
  x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
  m, n = x.shape[0], y.shape[0]
  if gamma is None:
    gamma = 1.0 / x.shape[1]
  k_xx = (gamma * (x @ x.T) + coef0) ** degree
  k_yy = (gamma * (y @ y.T) + coef0) ** degree
  k_xy = (gamma * (x @ y.T) + coef0) ** degree
  within_x = (k_xx.sum() - np.trace(k_xx)) / (m * (m - 1))
  within_y = (k_yy.sum() - np.trace(k_yy)) / (n * (n - 1))
  return float(within_x + within_y - 2.0 * k_xy.mean())


def kernel_inception_distance(feats1, feats2, subsets: int = 100, subset_size: int = 1000,
                              degree: int = 3, gamma: float | None = None, coef0: float = 1.0,
                              generator: np.random.Generator | int | None = None
                              ) -> tuple[float, float]:
  """KID: unbiased polynomial-kernel MMD^2 averaged over random subsets -> (mean, std).

  Binkowski et al. 2018: each of `subsets` draws takes `subset_size` rows of each feature set
  without replacement; the estimator is unbiased, so identical distributions give mean ~ 0 (it
  can be slightly negative).

  Args:
    feats1, feats2: features `[N1, D]`, `[N2, D]` (Inception pool3, D = 2048).
    generator: a NumPy Generator or seed for the subset draws.
  """
  feats1, feats2 = np.asarray(feats1, np.float64), np.asarray(feats2, np.float64)
  if feats1.ndim != 2 or feats2.ndim != 2 or feats1.shape[1] != feats2.shape[1]:
    raise ValueError(f'KID needs features [N1, D] and [N2, D], got {feats1.shape} and {feats2.shape}')
  n1, n2 = feats1.shape[0], feats2.shape[0]
  if not 2 <= subset_size <= min(n1, n2):
    raise ValueError(f'KID subset_size={subset_size} must be in [2, min(N1, N2)] = '
                     f'[2, {min(n1, n2)}]; pass a smaller subset_size or more samples')
  rng = np.random.default_rng(generator)
  mmds = np.empty(subsets)
  for i in range(subsets):
    x = feats1[rng.choice(n1, subset_size, replace=False)]
    y = feats2[rng.choice(n2, subset_size, replace=False)]
    mmds[i] = polynomial_mmd2_unbiased(x, y, degree, gamma, coef0)
  return float(mmds.mean()), float(mmds.std())


def kid_blocks(feats1, feats2, max_block_size: int = 1024) -> tuple[float, float]:
  """KID as TF-GAN's `kernel_classifier_distance_and_std_from_activations` computes it (what
  score_sde reports): both sets cut, in order, into the same number of contiguous blocks
  b = ceil(max(N1, N2) / max_block_size) of near-equal sizes (the last N mod b blocks one
  larger), the unbiased MMD^2 of `polynomial_mmd2_unbiased` per block pair, -> (mean over
  blocks, standard error sqrt(var / b) with var's ddof=1; NaN for one block). With at most
  max_block_size rows in each set this is the full-set unbiased estimate."""
  feats1, feats2 = np.asarray(feats1, np.float64), np.asarray(feats2, np.float64)
  n1, n2 = len(feats1), len(feats2)
  blocks = int(np.ceil(max(n1, n2) / max_block_size))
  if min(n1, n2) < 2 * blocks:
    raise ValueError(f'KID blocks need >= 2 rows per block: {n1} and {n2} rows in {blocks} blocks')

  def edges(n: int) -> np.ndarray:
    sizes = np.full(blocks, n // blocks)
    sizes[blocks - n % blocks:] += 1
    return np.concatenate([[0], np.cumsum(sizes)])

  e1, e2 = edges(n1), edges(n2)
  ests = np.array([polynomial_mmd2_unbiased(feats1[e1[i]:e1[i + 1]], feats2[e2[i]:e2[i + 1]])
                   for i in range(blocks)])
  std = float(np.sqrt(ests.var(ddof=1) / blocks)) if blocks > 1 else float('nan')
  return float(ests.mean()), std


def sliced_w2(x, ref, proj) -> float:
  """Sliced Wasserstein-2 between samples x `[n, D]` and ref `[m, D]` (m a multiple of n is
  best) over unit directions proj `[L, D]`: sqrt of the mean over directions of the 1-D W2^2
  between x's sorted projections and ref's matching quantiles (Bonneel et al. 2015)."""
  x, ref, proj = (np.asarray(a, dtype=np.float64) for a in (x, ref, proj))
  px, pr = np.sort(x @ proj.T, axis=0), np.sort(ref @ proj.T, axis=0)
  n, m = len(px), len(pr)
  idx = np.minimum(((np.arange(n) + 0.5) * m / n).astype(np.int64), m - 1)
  return float(np.sqrt(np.mean((px - pr[idx]) ** 2)))


def random_directions(dim: int, num: int = 256, seed: int = 0) -> np.ndarray:
  """`[num, dim]` unit vectors, uniform on the sphere."""
  v = np.random.default_rng(seed).standard_normal((num, dim))
  return v / np.linalg.norm(v, axis=1, keepdims=True)
