"""Sample-quality evaluation: the FID Inception-v3, FID / IS / KID, and cached statistics.

Typical use (weights from a local file only; nothing is downloaded):

    net = load_inception(config.eval.inception_path, device)
    ref = load_or_compute_stats('cifar10_stats.npz', data_batches, net, device)
    acts = compute_activations(sample_batches, net, device)
    fid = frechet_distance(*feature_statistics(acts.pool3), ref.mu, ref.sigma)
    is_mean, is_std = inception_score(acts.logits)

`load_inception(path, device, resize_mode='tf1')` preprocesses like the TF graph of the official
FID code (score_sde.evaluation.resize); `read_reference` reads ours, pytorch-fid's / clean-fid's,
score_sde's and ADM's reference files; `precision_recall` is Kynkaanniemi et al.'s; `kid_blocks`
is TF-GAN's (score_sde's) KID.
"""
from score_sde.evaluation.inception import (FID_WEIGHTS_URL, FIDInceptionV3, InceptionOutput,
                                            load_inception)
from score_sde.evaluation.metrics import (feature_statistics, frechet_distance, inception_score,
                                          kernel_inception_distance, kid_blocks,
                                          polynomial_mmd2_unbiased)
from score_sde.evaluation.precision_recall import precision_recall
from score_sde.evaluation.reference import read_reference
from score_sde.evaluation.resize import resize_bilinear_tf1
from score_sde.evaluation.stats import (Activations, FeatureStats, compute_activations,
                                        load_or_compute_stats)

__all__ = [
    'FID_WEIGHTS_URL', 'FIDInceptionV3', 'InceptionOutput', 'load_inception',
    'feature_statistics', 'frechet_distance', 'inception_score', 'kernel_inception_distance',
    'polynomial_mmd2_unbiased', 'kid_blocks', 'precision_recall', 'read_reference',
    'resize_bilinear_tf1',
    'Activations', 'FeatureStats', 'compute_activations', 'load_or_compute_stats',
]
