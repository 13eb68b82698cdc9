"""Sample-quality evaluation: the FID Inception-v3, FID / IS / KID, and cached statistics.

Typical use (weights from a local file only; nothing is downloaded):

    net = load_inception(config.eval.inception_path, device)
    ref = load_or_compute_stats('cifar10_stats.npz', data_batches, net, device)
    acts = compute_activations(sample_batches, net, device)
    fid = frechet_distance(*feature_statistics(acts.pool3), ref.mu, ref.sigma)
    is_mean, is_std = inception_score(acts.logits)
"""
from score_sde.evaluation.inception import (FID_WEIGHTS_URL, FIDInceptionV3, InceptionOutput,
                                            load_inception)
from score_sde.evaluation.metrics import (feature_statistics, frechet_distance, inception_score,
                                          kernel_inception_distance, polynomial_mmd2_unbiased)
from score_sde.evaluation.stats import (Activations, FeatureStats, compute_activations,
                                        load_or_compute_stats)

__all__ = [
    'FID_WEIGHTS_URL', 'FIDInceptionV3', 'InceptionOutput', 'load_inception',
    'feature_statistics', 'frechet_distance', 'inception_score', 'kernel_inception_distance',
    'polynomial_mmd2_unbiased',
    'Activations', 'FeatureStats', 'compute_activations', 'load_or_compute_stats',
]
