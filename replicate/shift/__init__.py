"""Dataset shift: can a classifier tell two image sets apart? (Torralba & Efros 2011.)

:func:`dataset_test` trains a binary classifier to say which of two sets an image
came from. If the sets share one distribution the held-out accuracy is 0.5 whatever
the classifier; anything reliably above that is a measured shift. For a replication
(CIFAR-10 test vs CIFAR-10.1, ImageNet val vs ImageNetV2) this is the direct test of
whether the new test set is drawn from the original's distribution.

How the test is built:

1. Both sets must have the same image shape and class list. Cross-set duplicates are
   removed first: exact ones by content hash (both copies), near ones by a pluggable
   detector (``near_duplicates``), so the classifier cannot win by memorising one
   image seen on both sides.
2. An equal-size, class-stratified sample: for every class present in both sets the
   same number of images is drawn from each (the smaller count, optionally capped by
   ``max_per_set``), so the classifier cannot separate the sets by their class mix.
   Classes present in only one set are reported, not used.
3. Features: a zoo model's penultimate layer (default ``"resnet20"``, via
   :func:`replicate.evaluation.extract_features`, cached on disk), raw pixels
   (``"pixels"``: 8x8 area-downsampled RGB) or colour statistics
   (``"colour-stats"``), or any callable ``ImageSet -> (N, D)``. Features are
   standardised over the pooled sample (unsupervised, so no set label leaks).
4. L2-regularised logistic regression, k-fold cross-validated: folds are stratified
   by set and class, every image is in exactly one test fold, and each image's
   score comes from a model that never saw it.
5. Held-out accuracy with a Clopper-Pearson interval (statsmodels), AUC with a
   DeLong interval, per-class accuracy, and a permutation p-value: the set labels
   are shuffled within each (class, fold) cell and the whole cross-validation is
   refitted. All permutations are fitted together as one batched problem (features
   are fixed; the labels are the columns of one matrix), so 200 refits cost about
   as much as a few single fits.

The control: ImageNetV2's published discriminator built its "same distribution"
control from the new set itself, so the control could not tell whether the test
detects shift. :func:`control_test` splits one set (the *original*) into two random,
class-stratified halves and runs the identical procedure; it must come out at chance
(tests check this on real CIFAR-10 images).

:func:`covariate_shift` compares simple per-image statistics (per-channel mean,
brightness, contrast, sharpness, saturation, pHash bit balance) with a
Kolmogorov-Smirnov test (scipy) and an energy-distance permutation test, each with
effect sizes.

Modules: :mod:`~replicate.shift.features`, :mod:`~replicate.shift.classifier` (the batched
logistic regression, cross-validation, DeLong AUC), :mod:`~replicate.shift.discriminate`
(:func:`dataset_test`, :func:`control_test`, cross-set duplicates, the stratified sample) and
:mod:`~replicate.shift.covariate`; every public name is importable from ``replicate.shift``.
"""

from __future__ import annotations

from replicate.shift.classifier import delong_auc
from replicate.shift.covariate import CovariateShiftResult, covariate_shift
from replicate.shift.discriminate import (
    ShiftResult,
    control_test,
    dataset_test,
    remove_cross_duplicates,
    split_halves,
)
from replicate.shift.features import (
    BUILTIN_FEATURES,
    IMAGE_STATISTICS,
    BuiltinFeatures,
    FeatureSpec,
    NearDuplicates,
    colour_stat_features,
    compute_features,
    image_statistics,
    phash_bits,
    pixel_features,
)

__all__ = [
    "ShiftResult",
    "CovariateShiftResult",
    "dataset_test",
    "control_test",
    "covariate_shift",
    "image_statistics",
    "phash_bits",
    "split_halves",
    "compute_features",
    "pixel_features",
    "colour_stat_features",
    "remove_cross_duplicates",
    "delong_auc",
    "BUILTIN_FEATURES",
    "IMAGE_STATISTICS",
    "BuiltinFeatures",
    "FeatureSpec",
    "NearDuplicates",
]
