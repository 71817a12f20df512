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
"""

from __future__ import annotations

import base64
import html
import io
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from replicate._json import json_safe as _json_safe
from replicate._validation import check_choice, check_fraction, check_int, fail, short_repr
from replicate.imageset import ImageSet

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

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
]

BuiltinFeatures = Literal["pixels", "colour-stats"]
BUILTIN_FEATURES: tuple[str, ...] = ("pixels", "colour-stats")
FeatureSpec = str | Callable[[ImageSet], np.ndarray]
NearDuplicates = Literal["auto"] | None | Callable[[ImageSet, ImageSet], Any]

IMAGE_STATISTICS: tuple[str, ...] = (
    "mean_r",
    "mean_g",
    "mean_b",
    "brightness",
    "contrast",
    "sharpness",
    "saturation",
)

_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)  # ITU-R BT.601, as PIL's "L" mode


# =========================================================================== features


def _as_rgb_float(images: np.ndarray) -> np.ndarray:
    x = np.asarray(images, dtype=np.float32) / 255.0
    if x.shape[-1] == 1:
        x = np.repeat(x, 3, axis=-1)
    return x[..., :3]


def pixel_features(s: ImageSet, size: int = 8) -> np.ndarray:
    """Raw-pixel baseline: each image area-averaged to ``size x size`` RGB, in [0, 1].

    Returns ``(N, size*size*3)`` float32. Area averaging (not subsampling) keeps the
    mean colour of every block; the image side must be a multiple of ``size``.
    """
    size = check_int("size", size, minimum=1)
    h, w = s.image_shape[:2]
    if h % size or w % size:
        raise fail("size", size, f"a divisor of the image size {h}x{w}", "Pick e.g. 8 for 32x32 images.")
    out = np.empty((len(s), size * size * 3), dtype=np.float32)
    for start in range(0, len(s), 4096):
        x = _as_rgb_float(s.images[start : start + 4096])
        x = x.reshape(len(x), size, h // size, size, w // size, 3).mean(axis=(2, 4))
        out[start : start + len(x)] = x.reshape(len(x), -1)
    return out


def _laplacian_var(gray: np.ndarray) -> np.ndarray:
    """Variance of the 4-neighbour Laplacian over the interior, per image (N, H, W)."""
    lap = (
        gray[:, :-2, 1:-1] + gray[:, 2:, 1:-1] + gray[:, 1:-1, :-2] + gray[:, 1:-1, 2:] - 4 * gray[:, 1:-1, 1:-1]
    )
    return lap.reshape(len(gray), -1).var(axis=1)


def _saturation(x: np.ndarray) -> np.ndarray:
    """HSV saturation per pixel, ``(max - min) / max`` (0 where max is 0)."""
    mx = x.max(axis=-1)
    mn = x.min(axis=-1)
    return np.where(mx > 0, (mx - mn) / np.maximum(mx, 1e-12), 0.0)


def colour_stat_features(s: ImageSet) -> np.ndarray:
    """Colour-statistic baseline, ``(N, 50)`` float32.

    Per channel: mean, std and the 10/25/50/75/90th percentiles (21); luma
    brightness, contrast (std) and log Laplacian variance (sharpness) (3); HSV
    saturation mean and std (2); an 8-bin histogram per channel (24).
    """
    out = np.empty((len(s), 50), dtype=np.float32)
    qs = np.array([10, 25, 50, 75, 90])
    for start in range(0, len(s), 2048):
        x = _as_rgb_float(s.images[start : start + 2048])
        n = len(x)
        flat = x.reshape(n, -1, 3)
        f = [flat.mean(axis=1), flat.std(axis=1)]
        f.append(np.percentile(flat, qs, axis=1).transpose(1, 0, 2).reshape(n, -1))
        gray = x @ _LUMA
        f.append(np.stack([gray.reshape(n, -1).mean(1), gray.reshape(n, -1).std(1),
                           np.log(_laplacian_var(gray) + 1e-6)], axis=1))
        sat = _saturation(x).reshape(n, -1)
        f.append(np.stack([sat.mean(1), sat.std(1)], axis=1))
        bins = np.minimum((flat * 8).astype(np.int64), 7)  # (n, P, 3)
        hist = np.zeros((n, 3, 8), dtype=np.float32)
        for c in range(3):
            idx = bins[:, :, c] + 8 * np.arange(n)[:, None]
            hist[:, c] = np.bincount(idx.ravel(), minlength=8 * n).reshape(n, 8)
        f.append(hist.reshape(n, -1) / flat.shape[1])
        out[start : start + n] = np.concatenate(f, axis=1)
    return out


def phash_bits(s: ImageSet) -> tuple[np.ndarray, str]:
    """64-bit pHash of every image as an ``(N, 64)`` bool array, and the hasher used."""
    try:  # replicate's own hasher registry where available
        from replicate.hashing import hash_images  # type: ignore[attr-defined]

        hashes = hash_images(s, "phash")
        bits = np.asarray(getattr(hashes, "bits", hashes))
        if bits.dtype == bool and bits.shape == (len(s), 64):
            return bits, "replicate.hashing phash"
        if bits.dtype.kind in "iu" and bits.shape == (len(s),):
            raw = bits.astype(">u8").view(np.uint8).reshape(len(s), 8)
            return np.unpackbits(raw, axis=1).astype(bool), "replicate.hashing phash"
    except Exception:  # noqa: BLE001 - fall back to imagehash directly
        pass
    import imagehash
    from PIL import Image

    out = np.empty((len(s), 64), dtype=bool)
    for i, img in enumerate(s.images):
        arr = np.asarray(img)
        pil = Image.fromarray(arr[..., 0] if arr.shape[-1] == 1 else arr[..., :3])
        out[i] = imagehash.phash(pil, hash_size=8).hash.ravel()
    return out, f"imagehash {imagehash.__version__} phash(hash_size=8)"


def image_statistics(s: ImageSet) -> pd.DataFrame:
    """Per-image statistics used by :func:`covariate_shift`, one row per image.

    Columns (pixel values scaled to [0, 1]): ``mean_r``, ``mean_g``, ``mean_b``;
    ``brightness`` (mean luma, BT.601 weights); ``contrast`` (std of luma);
    ``sharpness`` (log10 variance of the 4-neighbour Laplacian of luma);
    ``saturation`` (mean HSV saturation). Indexed by image id.
    """
    import pandas as pd

    cols: dict[str, np.ndarray] = {k: np.empty(len(s)) for k in IMAGE_STATISTICS}
    for start in range(0, len(s), 2048):
        x = _as_rgb_float(s.images[start : start + 2048])
        n = len(x)
        sl = slice(start, start + n)
        means = x.reshape(n, -1, 3).mean(axis=1)
        cols["mean_r"][sl], cols["mean_g"][sl], cols["mean_b"][sl] = means.T
        gray = x @ _LUMA
        cols["brightness"][sl] = gray.reshape(n, -1).mean(1)
        cols["contrast"][sl] = gray.reshape(n, -1).std(1)
        cols["sharpness"][sl] = np.log10(_laplacian_var(gray) + 1e-8)
        cols["saturation"][sl] = _saturation(x).reshape(n, -1).mean(1)
    return pd.DataFrame(cols, index=pd.Index(s.ids, name="id"))


def _available_models() -> list[str] | None:
    """Names of zoo models with weights (feature extractors), or None without a zoo."""
    try:
        from replicate.models import list_models
    except ImportError:  # pragma: no cover - the zoo is part of replicate
        return None
    return [str(x) for x in list_models(kind="weights")]


def _feature_name(features: Any) -> str:
    if callable(features):
        return getattr(features, "__name__", type(features).__name__)
    return str(features)


def _check_features(features: FeatureSpec) -> FeatureSpec:
    """Validate the feature choice once, at the boundary."""
    if callable(features):
        return features
    if not isinstance(features, str) or not features:
        raise fail(
            "features",
            features,
            "a zoo model name, 'pixels', 'colour-stats' or a callable ImageSet -> (N, D) array",
            error=TypeError,
        )
    if features in BUILTIN_FEATURES:
        return features
    names = _available_models()
    if names is not None and features not in names:
        check_choice("features", features, list(BUILTIN_FEATURES) + sorted(names))
    return features


def compute_features(s: ImageSet, features: FeatureSpec) -> np.ndarray:
    """``(N, D)`` float features of ``s`` for the dataset test (see :func:`dataset_test`)."""
    features = _check_features(features)
    if callable(features):
        x = np.asarray(features(s))
    elif features == "pixels":
        x = pixel_features(s)
    elif features == "colour-stats":
        x = colour_stat_features(s)
    else:
        from replicate.evaluation import extract_features

        x = np.asarray(extract_features(features, s))
    if x.ndim != 2 or len(x) != len(s):
        raise fail(
            f"features({_feature_name(features)!r}) output shape",
            x.shape,
            f"({len(s)}, D): one feature row per image",
        )
    x = x.astype(np.float64 if x.dtype == np.float64 else np.float32, copy=False)
    if not np.all(np.isfinite(x)):
        bad = int(np.sum(~np.all(np.isfinite(x), axis=1)))
        raise fail(f"features({_feature_name(features)!r}) output", f"{bad} rows with NaN/inf", "finite")
    return x


# =========================================================================== duplicates


def remove_cross_duplicates(
    a: ImageSet, b: ImageSet, near_duplicates: NearDuplicates = "auto"
) -> tuple[ImageSet, ImageSet, dict[str, Any]]:
    """Drop images that appear in both sets: exact (content hash) and near duplicates.

    Both members of every cross-set pair are removed. ``near_duplicates`` is
    ``"auto"`` (replicate's near-duplicate detector,
    :func:`replicate.dedup.find_near_duplicates` with its default configuration, b
    queried against a), ``None`` (exact
    duplicates only) or a callable ``(a, b) -> (ids_in_a, ids_in_b)``. Returns the
    cleaned sets and a record of what was removed and how.
    """
    ha = a.content_hash_hex()
    hb = b.content_hash_hex()
    common = np.intersect1d(ha, hb)
    drop_a = set(a.ids[np.isin(ha, common)].tolist())
    drop_b = set(b.ids[np.isin(hb, common)].tolist())
    record: dict[str, Any] = {"exact_hashes": int(len(common)), "near_method": None}
    n_exact_a, n_exact_b = len(drop_a), len(drop_b)
    detector: Callable[[ImageSet, ImageSet], Any] | None = None
    if near_duplicates == "auto":
        detector = _replicate_near_duplicates
        record["near_method"] = "replicate.dedup.find_near_duplicates (default config, b against a)"
    elif near_duplicates is None:
        record["near_method"] = "none (exact duplicates only)"
    elif callable(near_duplicates):
        detector = near_duplicates
        record["near_method"] = _feature_name(near_duplicates)
    else:
        raise fail("near_duplicates", near_duplicates, "'auto', None or a callable (a, b) -> (ids_a, ids_b)",
                   error=TypeError)
    if detector is not None:
        ids_a, ids_b = _near_pairs(detector(a, b), a, b)
        drop_a |= set(ids_a)
        drop_b |= set(ids_b)
    record.update(
        removed_a=len(drop_a),
        removed_b=len(drop_b),
        removed_exact_a=n_exact_a,
        removed_exact_b=n_exact_b,
        removed_ids_a=sorted(drop_a),
        removed_ids_b=sorted(drop_b),
    )
    keep_a = ~np.isin(a.ids, list(drop_a)) if drop_a else np.ones(len(a), bool)
    keep_b = ~np.isin(b.ids, list(drop_b)) if drop_b else np.ones(len(b), bool)
    return a.select(keep_a), b.select(keep_b), record


def _replicate_near_duplicates(a: ImageSet, b: ImageSet) -> tuple[list[str], list[str]]:
    """Cross-set near-duplicate pairs from replicate's detector (b as query, a as reference)."""
    from replicate.dedup import find_near_duplicates

    found = find_near_duplicates(b, {"a": a}, within_query=False)
    pairs = found.pairs
    pairs = pairs[pairs["flagged"].astype(bool) & (pairs["reference_set"] == "a")]
    return pairs["reference_id"].astype(str).tolist(), pairs["query_id"].astype(str).tolist()


def _near_pairs(found: Any, a: ImageSet, b: ImageSet) -> tuple[list[str], list[str]]:
    """Normalise a near-duplicate detector's answer to (ids in a, ids in b)."""
    if not (isinstance(found, tuple) and len(found) == 2):
        raise fail(
            "near_duplicates(a, b)",
            type(found).__name__,
            "a tuple (ids_in_a, ids_in_b) of the images to remove from each set",
            error=TypeError,
        )
    ids_a, ids_b = (np.asarray(x).astype(str).tolist() for x in found)
    for name, ids, s in (("a", ids_a, a), ("b", ids_b, b)):
        unknown = sorted(set(ids) - set(s.ids.tolist()))
        if unknown:
            raise fail(f"near_duplicates(a, b) ids for {name}", unknown[:3], f"ids of images in {s.name!r}",
                       error=KeyError)
    return ids_a, ids_b


# =========================================================================== statistics


def delong_auc(scores: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """AUC and its DeLong variance (DeLong, DeLong & Clarke-Pearson 1988).

    Uses the midrank formulation of Sun & Xu (2014): ties count one half. ``y`` is
    1 for positives, 0 for negatives. Returns ``(auc, variance)``.
    """
    from scipy.stats import rankdata

    scores = np.asarray(scores, dtype=np.float64)
    y = np.asarray(y).astype(bool)
    pos, neg = scores[y], scores[~y]
    m, n = len(pos), len(neg)
    if m < 2 or n < 2:
        raise fail("y", f"{m} positives and {n} negatives", "at least 2 of each for an AUC variance")
    tx = rankdata(pos)
    ty = rankdata(neg)
    tz = rankdata(np.concatenate([pos, neg]))
    auc = (tz[:m].sum() - m * (m + 1) / 2) / (m * n)
    v10 = (tz[:m] - tx) / n  # per positive: fraction of negatives below it
    v01 = 1.0 - (tz[m:] - ty) / m  # per negative: fraction of positives above it
    var = v10.var(ddof=1) / m + v01.var(ddof=1) / n
    return float(auc), float(var)


def _auc_columns(scores: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Mann-Whitney AUC of each column of ``scores`` (n, P) against labels ``y`` (n, P)."""
    from scipy.stats import rankdata

    ranks = rankdata(scores, axis=0)
    m = y.sum(axis=0)
    n = len(y) - m
    return ((ranks * y).sum(axis=0) - m * (m + 1) / 2) / (m * n)


def _fit_logistic(
    x: np.ndarray, y: np.ndarray, c: float, max_iter: int, tol: float
) -> tuple[np.ndarray, np.ndarray, int]:
    """Fit P independent L2 logistic regressions that share one design matrix.

    ``x`` (n, D), ``y`` (n, P) in {0, 1}: column ``p`` minimises
    ``sum_i logloss_i + ||w_p||^2 / (2 C)`` (scikit-learn's parametrisation; the
    intercept is not penalised).

    Solver: the quadratic bound of Boehning & Lindsay (1988). The logistic loss has
    curvature at most 1/4, so ``H0 = X'X / 4 + I / C`` (centred ``X``) bounds every
    column's Hessian everywhere. After reparametrising ``w = H0^(-1/2) v`` that bound
    is the identity, so a unit gradient step is a guaranteed descent step for every
    column at once; Nesterov acceleration (FISTA) makes it converge in tens of steps.
    Each step is two (n, D) x (D, P) products and no line search, so all columns run
    as one batched problem with no coupling: each column reaches its own optimum.
    Stops when every column's gradient (of the mean loss) is below ``tol`` in every
    coordinate. Returns weights (D, P), intercepts (P,) and the iterations used.
    """
    from scipy.special import expit

    n, d = x.shape
    xm = x.mean(axis=0)
    xc = x - xm
    evals, evecs = np.linalg.eigh(xc.T @ xc / 4.0 + np.eye(d) / c)
    r = (evecs * (1.0 / np.sqrt(np.maximum(evals, 1e-12)))) @ evecs.T  # H0^(-1/2), symmetric
    xr = xc @ r  # centred, so the intercept decouples in the bound: its curvature is <= n / 4
    pen = (r @ r) / c
    prior = np.clip(y.mean(axis=0), 1e-6, 1 - 1e-6)
    v = np.zeros((d, y.shape[1]))
    b = np.log(prior / (1 - prior))
    v_prev, b_prev, t = v, b, 1.0
    it = 0
    for it in range(1, max_iter + 1):
        t_next = (1.0 + np.sqrt(1.0 + 4.0 * t * t)) / 2.0
        mom = (t - 1.0) / t_next
        t = t_next
        zv = v + mom * (v - v_prev)
        zb = b + mom * (b - b_prev)
        resid = expit(xr @ zv + zb) - y
        v_prev, b_prev = v, b
        v = zv - (xr.T @ resid + pen @ zv)
        b = zb - resid.sum(axis=0) / (n / 4.0)
        if it % 10 == 0 or it == max_iter:
            resid = expit(xr @ v + b) - y
            grad = max(np.abs(xr.T @ resid + pen @ v).max(), np.abs(resid.sum(axis=0)).max()) / n
            if grad < tol:
                break
    w = r @ v
    return w, b - xm @ w, it


def _single_thread_blas() -> Any:
    """Limit BLAS to one thread: the products here are small (D <= a few hundred), and
    a multithreaded BLAS spends more time waking threads than computing (100x slower
    on a loaded 2-core machine)."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover - optional speed-up
        import contextlib

        return contextlib.nullcontext()
    return threadpool_limits(1, user_api="blas")


def _cross_val_scores(
    x: np.ndarray, y: np.ndarray, folds: np.ndarray, k: int, c: float, max_iter: int, tol: float
) -> tuple[np.ndarray, list[int]]:
    """Out-of-fold decision scores (n, P) for label columns ``y`` (n, P)."""
    scores = np.empty(y.shape, dtype=np.float64)
    iters = []
    with _single_thread_blas():
        for f in range(k):
            test = folds == f
            w, b, it = _fit_logistic(x[~test], y[~test], c, max_iter, tol)
            scores[test] = x[test] @ w + b
            iters.append(it)
    return scores, iters


# =========================================================================== sampling


def _check_pair(a: ImageSet, b: ImageSet) -> None:
    for name, s in (("a", a), ("b", b)):
        if not isinstance(s, ImageSet):
            raise fail(name, s, f"an ImageSet, not {type(s).__name__}", "Open files with replicate.load(path).",
                       error=TypeError)
    if a.image_shape != b.image_shape:
        raise fail(
            f"image shape of b ({b.name!r})",
            b.image_shape,
            f"{a.image_shape}, the image shape of a ({a.name!r})",
            "Resize one set to the other's size first: a classifier would separate the sets by size alone.",
        )
    if a.class_names != b.class_names:
        only_a = [c for c in a.class_names if c not in b.class_names]
        only_b = [c for c in b.class_names if c not in a.class_names]
        detail = f"only in a: {only_a}, only in b: {only_b}" if (only_a or only_b) else "same names, other order"
        raise fail(
            f"class_names of b ({b.name!r})",
            list(b.class_names),
            f"equal to the class names of a ({a.name!r}: {short_repr(list(a.class_names))})",
            f"{detail}. Map both sets' labels to one class list first.",
        )


def _strata(s: ImageSet) -> np.ndarray:
    """Stratum per image: the label, with -1 (unlabelled) as its own stratum."""
    return s.labels


def _stratum_name(s: ImageSet, k: int) -> str:
    return "<unlabelled>" if k < 0 else s.class_names[k]


def _allocate(counts: np.ndarray, total: int) -> np.ndarray:
    """Scale integer ``counts`` down to sum to ``total`` (largest remainders)."""
    if counts.sum() <= total:
        return counts.copy()
    exact = counts * (total / counts.sum())
    out = np.floor(exact).astype(np.int64)
    rest = total - out.sum()
    order = np.argsort(-(exact - out), kind="stable")
    out[order[:rest]] += 1
    return out


@dataclass(frozen=True)
class _Sample:
    pos_a: np.ndarray  # positions in a (class-grouped order)
    pos_b: np.ndarray
    strata: np.ndarray  # stratum of each sampled pair slot
    used: dict[str, int]
    dropped: dict[str, tuple[int, int]]


def _stratified_sample(a: ImageSet, b: ImageSet, max_per_set: int | None, rng: np.random.Generator) -> _Sample:
    sa, sb = _strata(a), _strata(b)
    keys = sorted(set(np.unique(sa).tolist()) | set(np.unique(sb).tolist()))
    na = np.array([np.sum(sa == k) for k in keys], dtype=np.int64)
    nb = np.array([np.sum(sb == k) for k in keys], dtype=np.int64)
    take = np.minimum(na, nb)
    if max_per_set is not None:
        take = _allocate(take, max_per_set)
    used, dropped = {}, {}
    pos_a, pos_b, strata = [], [], []
    for k, ka, kb, t in zip(keys, na, nb, take):
        name = _stratum_name(a, k)
        if ka == 0 or kb == 0:
            dropped[name] = (int(ka), int(kb))
            continue
        used[name] = int(t)
        pos_a.append(rng.permutation(np.flatnonzero(sa == k))[:t])
        pos_b.append(rng.permutation(np.flatnonzero(sb == k))[:t])
        strata.append(np.full(t, k, dtype=np.int64))
    cat = lambda parts: np.concatenate(parts) if parts else np.zeros(0, np.int64)  # noqa: E731
    return _Sample(cat(pos_a), cat(pos_b), cat(strata), used, dropped)


# =========================================================================== result


@dataclass(frozen=True, eq=False)
class ShiftResult:
    """The outcome of :func:`dataset_test`: can a classifier tell set a from set b?

    Counts are stored, not rounded rates: ``n_correct`` of ``n_total`` held-out
    predictions were right (chance is ``n_total / 2``, the sample being balanced).

    Attributes
    ----------
    name_a, name_b
        the two sets' names.
    features, classifier
        the feature extractor and classifier used.
    n_per_set
        images used from each set (equal by construction); ``class_n`` per class.
    classes_dropped
        classes present in only one set, with their counts ``(in a, in b)``.
    duplicates
        what cross-set duplicate removal found and removed, and how.
    n_correct, n_total, accuracy, accuracy_ci
        held-out accuracy with a Clopper-Pearson interval at level ``1 - alpha``.
    auc, auc_se, auc_ci
        held-out AUC (set b is the positive class) with a DeLong standard error
        and normal interval, clipped to [0, 1].
    p_value
        permutation p-value against chance: ``(1 + #{null AUC >= observed}) /
        (1 + permutations)``, the null refitting the whole cross-validation with set
        labels shuffled within (class, fold) cells.
    null_auc, null_accuracy
        the permutation distribution (one value per permutation).
    fold_correct, fold_n
        per-fold held-out counts.
    class_correct
        held-out correct predictions per class (out of ``2 * class_n[c]``).
    top_a, top_b
        ids of the images most confidently recognised as coming from a (from b):
        the "most distinguishing images" of each set; ``top_*_scores`` are their
        held-out probabilities of the true set.
    ids, is_b, scores, folds
        per-image sample: id, set (True = b), held-out decision score, fold.
    params
        everything needed to re-run: folds, permutations, seed, C, alpha, ...
    gallery_html
        an HTML page of the most distinguishing images of each set (Torralba &
        Efros 2011, Fig. 2 style).
    """

    name_a: str
    name_b: str
    features: str
    classifier: str
    n_per_set: int
    class_n: Mapping[str, int]
    classes_dropped: Mapping[str, tuple[int, int]]
    duplicates: Mapping[str, Any]
    n_correct: int
    n_total: int
    accuracy_ci: tuple[float, float]
    auc: float
    auc_se: float
    auc_ci: tuple[float, float]
    p_value: float
    permutations: int
    null_auc: np.ndarray = field(repr=False)
    null_accuracy: np.ndarray = field(repr=False)
    fold_correct: tuple[int, ...] = ()
    fold_n: tuple[int, ...] = ()
    class_correct: Mapping[str, int] = field(default_factory=dict)
    top_a: tuple[str, ...] = ()
    top_a_scores: tuple[float, ...] = ()
    top_b: tuple[str, ...] = ()
    top_b_scores: tuple[float, ...] = ()
    ids: np.ndarray = field(default_factory=lambda: np.zeros(0, str), repr=False)
    is_b: np.ndarray = field(default_factory=lambda: np.zeros(0, bool), repr=False)
    scores: np.ndarray = field(default_factory=lambda: np.zeros(0), repr=False)
    folds: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64), repr=False)
    alpha: float = 0.05
    params: Mapping[str, Any] = field(default_factory=dict)
    gallery_html: str = field(default="", repr=False)

    @property
    def accuracy(self) -> float:
        """Held-out accuracy, ``n_correct / n_total``."""
        return self.n_correct / self.n_total

    @property
    def chance(self) -> float:
        """Chance accuracy (0.5: the two sets contribute equally)."""
        return 0.5

    @property
    def distinguishable(self) -> bool:
        """True when the permutation test rejects chance at level ``alpha``."""
        return self.p_value < self.alpha

    def class_accuracy(self) -> dict[str, float]:
        """Held-out accuracy per class."""
        return {c: self.class_correct[c] / (2 * m) for c, m in self.class_n.items() if m}

    def summary(self) -> str:
        """A few lines of text: the verdict, accuracy, AUC, p-value, per class."""
        pct = 100 * (1 - self.alpha)
        lo, hi = self.accuracy_ci
        verdict = (
            "the sets are distinguishable" if self.distinguishable
            else "no evidence that the sets differ"
        )
        lines = [
            f"Dataset test {self.name_a!r} vs {self.name_b!r} ({self.features} features, {self.classifier}, "
            f"{self.params.get('folds')}-fold CV): {verdict} (p = {self.p_value:.4g}).",
            f"  images: {self.n_per_set} per set, {len(self.class_n)} classes"
            + (f" (not in both, not used: {', '.join(self.classes_dropped)})" if self.classes_dropped else ""),
            f"  cross-set duplicates removed: {self.duplicates.get('removed_a', 0)} from a, "
            f"{self.duplicates.get('removed_b', 0)} from b ({self.duplicates.get('near_method')})",
            f"  held-out accuracy: {self.n_correct}/{self.n_total} = {100 * self.accuracy:.2f}% "
            f"[{100 * lo:.2f}, {100 * hi:.2f}] ({pct:g}% Clopper-Pearson; chance 50%)",
            f"  AUC: {self.auc:.4f} [{self.auc_ci[0]:.4f}, {self.auc_ci[1]:.4f}] ({pct:g}% DeLong)",
            f"  permutation test: {self.permutations} refits, null AUC "
            f"{np.mean(self.null_auc):.4f} +- {np.std(self.null_auc):.4f}, p = {self.p_value:.4g}",
        ]
        if self.permutations and 1 / (self.permutations + 1) >= self.alpha:
            need = int(np.ceil(1 / self.alpha)) - 1
            lines.append(
                f"  WARNING: {self.permutations} permutations cannot give p < alpha={self.alpha:g} "
                f"(smallest attainable p is {1 / (self.permutations + 1):.3g}); use at least {need}."
            )
        if not self.params.get("solver_converged", True):
            lines.append(
                f"  WARNING: the solver stopped at max_iter={self.params.get('max_iter')} before reaching "
                f"tol={self.params.get('tol')}; raise max_iter or lower C."
            )
        if self.class_n:
            width = max(len(c) for c in self.class_n)
            lines.append("  per class (held-out accuracy):")
            for c, m in self.class_n.items():
                k = self.class_correct.get(c, 0)
                lines.append(f"    {c:<{width}}  {k:>6}/{2 * m:<6} {100 * k / (2 * m) if m else float('nan'):6.2f}%")
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe dict (counts, intervals, method, params; no per-image arrays or HTML)."""
        return {
            "name_a": self.name_a,
            "name_b": self.name_b,
            "features": self.features,
            "classifier": self.classifier,
            "n_per_set": int(self.n_per_set),
            "class_n": {k: int(v) for k, v in self.class_n.items()},
            "class_correct": {k: int(v) for k, v in self.class_correct.items()},
            "classes_dropped": {k: [int(x) for x in v] for k, v in self.classes_dropped.items()},
            "duplicates": _json_safe(dict(self.duplicates)),
            "n_correct": int(self.n_correct),
            "n_total": int(self.n_total),
            "accuracy": self.accuracy,
            "accuracy_ci": [float(x) for x in self.accuracy_ci],
            "accuracy_ci_method": "clopper-pearson (statsmodels proportion_confint, method='beta')",
            "auc": self.auc,
            "auc_se": self.auc_se,
            "auc_ci": [float(x) for x in self.auc_ci],
            "auc_ci_method": "delong (normal interval, clipped to [0, 1])",
            "alpha": self.alpha,
            "p_value": self.p_value,
            "p_value_method": "permutation of set labels within (class, fold) cells, full CV refit; statistic: AUC",
            "permutations": int(self.permutations),
            "null_auc": [float(x) for x in self.null_auc],
            "null_accuracy": [float(x) for x in self.null_accuracy],
            "fold_correct": [int(x) for x in self.fold_correct],
            "fold_n": [int(x) for x in self.fold_n],
            "top_a": list(self.top_a),
            "top_a_scores": [float(x) for x in self.top_a_scores],
            "top_b": list(self.top_b),
            "top_b_scores": [float(x) for x in self.top_b_scores],
            "distinguishable": self.distinguishable,
            "params": _json_safe(dict(self.params)),
        }

    def to_dataframe(self) -> pd.DataFrame:
        """One row per sampled image: id, set, fold, held-out score and probability of b."""
        import pandas as pd

        return pd.DataFrame(
            {
                "id": self.ids,
                "set": np.where(self.is_b, self.name_b, self.name_a),
                "fold": self.folds,
                "score": self.scores,
                "p_b": 1.0 / (1.0 + np.exp(-self.scores)),
                "correct": (self.scores > 0) == self.is_b,
            }
        )


# =========================================================================== gallery


def _thumb(img: np.ndarray, scale: int = 3) -> str:
    from PIL import Image

    arr = np.asarray(img)
    pil = Image.fromarray(arr[..., 0] if arr.shape[-1] == 1 else arr[..., :3])
    pil = pil.resize((pil.width * scale, pil.height * scale), Image.Resampling.NEAREST)
    buf = io.BytesIO()
    pil.save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _gallery(title: str, rows: Sequence[tuple[str, ImageSet, Sequence[str], Sequence[float]]]) -> str:
    parts = [
        "<!DOCTYPE html><html><head><meta charset='utf-8'>",
        f"<title>{html.escape(title)}</title>",
        "<style>body{font-family:sans-serif;margin:1em}figure{display:inline-block;margin:3px;"
        "text-align:center;font-size:10px}img{image-rendering:pixelated}</style></head><body>",
        f"<h1>{html.escape(title)}</h1>",
        "<p>Held-out images the classifier most confidently assigned to their own set "
        "(probability of the true set below each image).</p>",
    ]
    for heading, s, ids, probs in rows:
        parts.append(f"<h2>{html.escape(heading)}</h2><div>")
        if len(ids):
            pos = s.positions(list(ids))
            for i, p, prob in zip(ids, pos, probs):
                cls = _stratum_name(s, int(s.labels[p]))
                parts.append(
                    f"<figure><img alt='{html.escape(i)}' title='{html.escape(i)}' "
                    f"src='data:image/png;base64,{_thumb(s.images[p])}'>"
                    f"<figcaption>{html.escape(cls)}<br>{prob:.3f}</figcaption></figure>"
                )
        parts.append("</div>")
    parts.append("</body></html>")
    return "\n".join(parts)


# =========================================================================== the test


def _assign_folds(strata: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """Fold per pair slot: within each stratum a random order dealt round-robin.

    Slot ``j`` holds one image of a and one of b, so every (class, fold) cell holds
    equally many images of each set.
    """
    folds = np.empty(len(strata), dtype=np.int64)
    offset = 0
    for s in np.unique(strata):
        where = np.flatnonzero(strata == s)
        folds[rng.permutation(where)] = (np.arange(len(where)) + offset) % k
        offset += len(where)
    return folds


def _permuted_labels(cells: np.ndarray, is_b: np.ndarray, permutations: int, rng: np.random.Generator) -> np.ndarray:
    """Label matrix (n, 1 + permutations): the observed labels, then shuffles within cells."""
    y = np.empty((len(is_b), 1 + permutations), dtype=np.float64)
    y[:, 0] = is_b
    order = np.argsort(cells, kind="stable")
    bounds = np.flatnonzero(np.diff(cells[order])) + 1
    groups = np.split(order, bounds)
    for p in range(1, permutations + 1):
        col = np.empty(len(is_b), dtype=np.float64)
        for g in groups:
            col[g] = is_b[rng.permutation(g)]
        y[:, p] = col
    return y


def dataset_test(
    a: ImageSet,
    b: ImageSet,
    *,
    features: FeatureSpec = "resnet20",
    folds: int = 5,
    permutations: int = 200,
    seed: int = 0,
    max_per_set: int | None = None,
    near_duplicates: NearDuplicates = "auto",
    C: float = 1.0,
    alpha: float = 0.05,
    top: int = 24,
    max_iter: int = 3000,
    tol: float = 1e-6,
) -> ShiftResult:
    """Can a classifier tell set ``a`` from set ``b``? A cross-validated dataset test.

    Parameters
    ----------
    a, b
        the two image sets (e.g. the original test set and the new one). Same
        image shape and class names.
    features
        a zoo model name (penultimate-layer features, cached; default
        ``"resnet20"``), ``"pixels"`` (8x8 area-averaged RGB), ``"colour-stats"``
        (50 colour/contrast/sharpness statistics), or a callable
        ``ImageSet -> (N, D)`` array.
    folds
        k of the k-fold cross-validation (>= 2).
    permutations
        refits under shuffled set labels for the p-value (0 skips the test).
    seed
        seeds sampling, folds and permutations: same seed, same result.
    max_per_set
        cap on the images drawn from each set (class proportions kept);
        ``None`` uses as many as the smaller set has in every shared class.
    near_duplicates
        cross-set near-duplicate detector: ``"auto"``, ``None`` or a callable
        (see :func:`remove_cross_duplicates`). Exact duplicates are always removed.
    C
        inverse L2 strength of the logistic regression (scikit-learn's ``C``).
    alpha
        1 - confidence level of the intervals, and the test's level.
    top
        how many most-distinguishing images of each set to list and show.
    max_iter, tol
        iteration limit and gradient tolerance of the logistic-regression solver
        (per fold; the tolerance bounds every coordinate of the mean-loss gradient).
    """
    _check_pair(a, b)
    features = _check_features(features)
    folds = check_int("folds", folds, minimum=2)
    permutations = check_int("permutations", permutations, minimum=0)
    seed = check_int("seed", seed, minimum=0)
    top = check_int("top", top, minimum=0)
    max_iter = check_int("max_iter", max_iter, minimum=1)
    alpha = check_fraction("alpha", alpha)
    if max_per_set is not None:
        max_per_set = check_int("max_per_set", max_per_set, minimum=folds)
    try:
        C = float(C)
    except (TypeError, ValueError):
        raise fail("C", C, "a positive number", error=TypeError) from None
    if not C > 0 or not np.isfinite(C):
        raise fail("C", C, "a positive finite number", "Larger C means weaker regularisation (default 1.0).")

    t0 = time.perf_counter()
    rng = np.random.default_rng(seed)
    a_clean, b_clean, dup = remove_cross_duplicates(a, b, near_duplicates)
    sample = _stratified_sample(a_clean, b_clean, max_per_set, rng)
    n = len(sample.pos_a)
    if n < folds:
        raise fail(
            "images per set after sampling",
            f"{n} (classes in both sets: {sample.used or 'none'}; only in one: {sample.dropped or 'none'})",
            f">= folds ({folds}) so every test fold holds images of both sets",
            "Use fewer folds, or larger sets that share classes.",
        )
    sa = a_clean.select(sample.pos_a)
    sb = b_clean.select(sample.pos_b)
    t_sample = time.perf_counter()
    if isinstance(features, str) and features not in BUILTIN_FEATURES:
        # zoo features of the whole input sets: cached on disk by the sets' pixels, so
        # another seed, sample size or fold count reuses them
        xa = compute_features(a, features)[a.positions(sa.ids)]
        xb = compute_features(b, features)[b.positions(sb.ids)]
    else:
        xa = compute_features(sa, features)
        xb = compute_features(sb, features)
    x = np.concatenate([xa, xb]).astype(np.float64)
    t_feat = time.perf_counter()
    # standardise over the pooled sample: label-free, so it cannot leak set membership
    mu = x.mean(axis=0)
    sd = x.std(axis=0)
    x = (x - mu) / np.where(sd > 1e-12, sd, 1.0)

    slot_folds = _assign_folds(sample.strata, folds, rng)
    fold_of = np.concatenate([slot_folds, slot_folds])
    strata = np.concatenate([sample.strata, sample.strata])
    is_b = np.concatenate([np.zeros(n, bool), np.ones(n, bool)])
    cells = (strata - strata.min()) * folds + fold_of
    y = _permuted_labels(cells, is_b, permutations, rng)
    scores, iters = _cross_val_scores(x, y, fold_of, folds, C, max_iter, tol)
    t_fit = time.perf_counter()

    s0 = scores[:, 0]
    correct = (s0 > 0) == is_b
    n_correct = int(correct.sum())
    from statsmodels.stats.proportion import proportion_confint

    lo, hi = proportion_confint(n_correct, 2 * n, alpha=alpha, method="beta")
    auc, var = delong_auc(s0, is_b)
    from scipy.stats import norm

    z = norm.ppf(1 - alpha / 2)
    se = float(np.sqrt(max(var, 0.0)))
    auc_ci = (max(0.0, auc - z * se), min(1.0, auc + z * se))
    if permutations:
        null_auc = _auc_columns(scores[:, 1:], y[:, 1:])
        null_acc = ((scores[:, 1:] > 0) == (y[:, 1:] > 0.5)).mean(axis=0)
        p_value = float((1 + np.sum(null_auc >= auc - 1e-12)) / (1 + permutations))
    else:
        null_auc = null_acc = np.zeros(0)
        p_value = float("nan")

    fold_correct = tuple(int(correct[fold_of == f].sum()) for f in range(folds))
    fold_n = tuple(int((fold_of == f).sum()) for f in range(folds))
    names = {k: _stratum_name(a, int(k)) for k in np.unique(sample.strata)}
    class_correct = {names[k]: int(correct[strata == k].sum()) for k in names}

    ids = np.concatenate([sa.ids, sb.ids])
    prob_b = 1.0 / (1.0 + np.exp(-s0))
    order_a = np.argsort(prob_b[:n], kind="stable")[: min(top, n)]
    order_b = np.argsort(-prob_b[n:], kind="stable")[: min(top, n)]
    top_a = tuple(sa.ids[order_a].tolist())
    top_b = tuple(sb.ids[order_b].tolist())
    top_a_scores = tuple(float(1 - prob_b[i]) for i in order_a)
    top_b_scores = tuple(float(prob_b[n + i]) for i in order_b)
    feat_name = _feature_name(features)
    gallery = _gallery(
        f"Most distinguishing images: {a.name} vs {b.name} ({feat_name} features)",
        [
            (f"most '{a.name}'-like images of {a.name}", sa, top_a, top_a_scores),
            (f"most '{b.name}'-like images of {b.name}", sb, top_b, top_b_scores),
        ],
    )
    params = {
        "folds": folds,
        "permutations": permutations,
        "seed": seed,
        "max_per_set": max_per_set,
        "C": C,
        "alpha": alpha,
        "top": top,
        "max_iter": max_iter,
        "tol": tol,
        "n_a_input": len(a),
        "n_b_input": len(b),
        "feature_dim": int(x.shape[1]),
        "standardise": "pooled mean/std (label-free)",
        "sampling": "equal per class, classes present in both sets",
        "fold_assignment": "stratified by class and set; each image in exactly one test fold",
        "solver": "Boehning-Lindsay quadratic bound with Nesterov acceleration, all label vectors batched",
        "solver_iterations": iters,
        "solver_converged": bool(max(iters) < max_iter),
        "seconds": {
            "sample": round(t_sample - t0, 4),
            "features": round(t_feat - t_sample, 4),
            "fit_and_permutations": round(t_fit - t_feat, 4),
        },
    }
    return ShiftResult(
        name_a=a.name,
        name_b=b.name,
        features=feat_name,
        classifier=f"L2 logistic regression (C={C:g})",
        n_per_set=n,
        class_n=dict(sample.used),
        classes_dropped=dict(sample.dropped),
        duplicates=dup,
        n_correct=n_correct,
        n_total=2 * n,
        accuracy_ci=(float(lo), float(hi)),
        auc=auc,
        auc_se=se,
        auc_ci=auc_ci,
        p_value=p_value,
        permutations=permutations,
        null_auc=null_auc,
        null_accuracy=null_acc,
        fold_correct=fold_correct,
        fold_n=fold_n,
        class_correct=class_correct,
        top_a=top_a,
        top_a_scores=top_a_scores,
        top_b=top_b,
        top_b_scores=top_b_scores,
        ids=ids,
        is_b=is_b,
        scores=s0,
        folds=fold_of,
        alpha=alpha,
        params=params,
        gallery_html=gallery,
    )


def split_halves(s: ImageSet, seed: int = 0) -> tuple[ImageSet, ImageSet]:
    """Two random, class-stratified halves of one set (odd class counts leave one out)."""
    seed = check_int("seed", seed, minimum=0)
    # a stream of its own, so the halves are independent of dataset_test's draws with the same seed
    rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(1,)))
    first, second = [], []
    for k in np.unique(s.labels):
        where = rng.permutation(np.flatnonzero(s.labels == k))
        h = len(where) // 2
        first.append(where[:h])
        second.append(where[h : 2 * h])
    cat = lambda parts: np.sort(np.concatenate(parts)) if parts else np.zeros(0, np.int64)  # noqa: E731
    return s.select(cat(first), name=f"{s.name}[half 1]"), s.select(cat(second), name=f"{s.name}[half 2]")


def control_test(s: ImageSet, *, seed: int = 0, **kwargs: Any) -> ShiftResult:
    """The control: :func:`dataset_test` between two random halves of one set.

    Both halves come from one distribution, so the held-out accuracy must be at
    chance. ``kwargs`` go to :func:`dataset_test` unchanged (the same procedure,
    near-duplicate removal between the halves included). Run it on the *original* set: a control built from the new set (as
    ImageNetV2's published discriminator did) says nothing about whether the test
    can see the shift between the two sets.
    """
    h1, h2 = split_halves(s, seed=seed)
    return dataset_test(h1, h2, seed=seed, **kwargs)


# =========================================================================== covariate shift


@dataclass(frozen=True, eq=False)
class CovariateShiftResult:
    """Per-image statistics compared between two sets, one row per statistic.

    ``table`` columns: ``statistic``, ``mean_a``, ``mean_b``, ``sd_a``, ``sd_b``,
    ``cohens_d`` (mean difference b - a over the pooled sd), ``ks`` (the KS
    statistic, itself an effect size in [0, 1]), ``ks_p`` (two-sided, scipy
    ``ks_2samp``, all images), ``energy`` (energy distance, scipy
    ``energy_distance``, all images, in the statistic's units), ``energy_p``
    (permutation p-value on a subsample of at most ``energy_n`` per set), and
    ``ks_p_holm`` / ``energy_p_holm`` adjusted over the statistics (Holm).

    ``hash_bits``: pHash bit balance. For each of the 64 bits, the fraction of
    images with the bit set in each set (a balanced hash has 0.5 everywhere);
    ``statistic`` is the sum over bits of the squared difference in frequency,
    with a permutation p-value; effect sizes are the mean and the largest absolute
    difference in bit frequency.
    """

    name_a: str
    name_b: str
    n_a: int
    n_b: int
    table: pd.DataFrame = field(repr=False)
    hash_bits: Mapping[str, Any] = field(default_factory=dict, repr=False)
    permutations: int = 200
    energy_n: int = 1000
    alpha: float = 0.05
    params: Mapping[str, Any] = field(default_factory=dict)

    def differing(self) -> list[str]:
        """Statistics whose energy-distance test rejects at ``alpha`` (Holm-adjusted)."""
        return self.table[self.table["energy_p_holm"] < self.alpha]["statistic"].tolist()

    def summary(self) -> str:
        """The table as text, with a one-line verdict."""
        sig = self.differing()
        head = (
            f"Covariate shift {self.name_a!r} (n={self.n_a}) vs {self.name_b!r} (n={self.n_b}): "
            + (f"differ in {', '.join(sig)}" if sig else "no statistic differs")
            + f" at alpha={self.alpha} (energy-distance permutation test, Holm-adjusted)"
        )
        cols = ["statistic", "mean_a", "mean_b", "cohens_d", "ks", "ks_p", "energy", "energy_p"]
        lines = [head, self.table[cols].to_string(index=False, float_format=lambda v: f"{v:.4g}")]
        hb = self.hash_bits
        if hb:
            lines.append(
                f"pHash bit balance: mean |freq_a - freq_b| {hb['mean_abs_diff']:.4f}, max "
                f"{hb['max_abs_diff']:.4f} (bit {hb['max_bit']}), p = {hb['p_value']:.4g} "
                f"({hb['permutations']} permutations, {hb['n_a']} + {hb['n_b']} images)"
            )
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe dict: the table as a list of rows, the hash-bit test, and the parameters."""
        return {
            "name_a": self.name_a,
            "name_b": self.name_b,
            "n_a": int(self.n_a),
            "n_b": int(self.n_b),
            "permutations": int(self.permutations),
            "energy_n": int(self.energy_n),
            "alpha": self.alpha,
            "tests": "ks: scipy.stats.ks_2samp (two-sided); energy: scipy.stats.energy_distance "
            "with a permutation p-value (subsample); Holm adjustment over statistics",
            "table": _json_safe(self.table.to_dict(orient="records")),
            "hash_bits": _json_safe(dict(self.hash_bits)),
            "differing": self.differing(),
            "params": _json_safe(dict(self.params)),
        }


def _group_matrix(n: int, na: int, permutations: int, rng: np.random.Generator) -> np.ndarray:
    """Indicator matrix (n, 1 + permutations) of group a: observed first, then shuffles."""
    z = np.zeros((n, 1 + permutations))
    z[:na, 0] = 1
    for p in range(1, permutations + 1):
        z[rng.permutation(n)[:na], p] = 1
    return z


def _energy_permutation(xa: np.ndarray, xb: np.ndarray, permutations: int, rng: np.random.Generator
                        ) -> tuple[float, float]:
    """Squared energy distance of two 1-D samples and its permutation p-value.

    ``2 E|X - Y| - E|X - X'| - E|Y - Y'|`` (the square of scipy's
    ``energy_distance``). With the pooled distance matrix ``D`` and group
    indicators as columns of ``Z``, every permutation's within/between sums come
    from ``Z' D Z``: all permutations in a few matrix products.
    """
    x = np.concatenate([xa, xb])
    na, nb = len(xa), len(xb)
    d = np.abs(x[:, None] - x[None, :])
    z = _group_matrix(len(x), na, permutations, rng)
    saa = np.einsum("np,np->p", z, d @ z)  # sum over a x a
    rowsum = d.sum(axis=1)
    sab = z.T @ rowsum - saa  # sum over a x b
    sbb = rowsum.sum() - 2 * sab - saa
    e = 2 * sab / (na * nb) - saa / (na * na) - sbb / (nb * nb)
    p = (1 + np.sum(e[1:] >= e[0] - 1e-12)) / (1 + permutations)
    return float(e[0]), float(p)


def _hash_bit_test(ba: np.ndarray, bb: np.ndarray, permutations: int, rng: np.random.Generator
                   ) -> dict[str, Any]:
    bits = np.concatenate([ba, bb]).astype(np.float64)
    na, nb = len(ba), len(bb)
    z = _group_matrix(len(bits), na, permutations, rng)
    ones_a = bits.T @ z  # (64, P)
    ones_b = bits.sum(axis=0)[:, None] - ones_a
    diff = ones_a / na - ones_b / nb
    stat = (diff**2).sum(axis=0)
    fa, fb = ba.mean(axis=0), bb.mean(axis=0)
    absdiff = np.abs(fa - fb)
    return {
        "n_a": int(na),
        "n_b": int(nb),
        "freq_a": fa.tolist(),
        "freq_b": fb.tolist(),
        "balance_a": float(np.mean(np.abs(fa - 0.5))),
        "balance_b": float(np.mean(np.abs(fb - 0.5))),
        "statistic": float(stat[0]),
        "mean_abs_diff": float(absdiff.mean()),
        "max_abs_diff": float(absdiff.max()),
        "max_bit": int(absdiff.argmax()),
        "p_value": float((1 + np.sum(stat[1:] >= stat[0] - 1e-12)) / (1 + permutations)),
        "permutations": int(permutations),
    }


def covariate_shift(
    a: ImageSet,
    b: ImageSet,
    *,
    permutations: int = 200,
    energy_n: int = 1000,
    seed: int = 0,
    alpha: float = 0.05,
    hash_bits: bool = True,
) -> CovariateShiftResult:
    """Compare per-image statistics of two sets with two-sample tests.

    Statistics: see :func:`image_statistics`. For each: a Kolmogorov-Smirnov test on
    all images (scipy), and an energy-distance test with a permutation p-value on a
    random subsample of at most ``energy_n`` images per set (the pooled distance
    matrix is ``(2 * energy_n)^2``). Effect sizes: Cohen's d, the KS statistic, and
    the energy distance. With ``hash_bits``, the pHash bit frequencies of the same
    subsamples are compared too (see :class:`CovariateShiftResult`).

    The smallest permutation p-value is ``1 / (permutations + 1)``; for it to survive
    the Holm adjustment over the 7 statistics at ``alpha = 0.05``, use at least 140
    permutations (the default 200 does).
    """
    import pandas as pd
    from scipy.stats import energy_distance, ks_2samp
    from statsmodels.stats.multitest import multipletests

    _check_pair(a, b)
    permutations = check_int("permutations", permutations, minimum=1)
    energy_n = check_int("energy_n", energy_n, minimum=2)
    seed = check_int("seed", seed, minimum=0)
    alpha = check_fraction("alpha", alpha)
    for name, s in (("a", a), ("b", b)):
        if len(s) < 2:
            raise fail(f"len({name})", len(s), ">= 2 images for a two-sample test",
                       f"Set {s.name!r} has {len(s)}.")
    rng = np.random.default_rng(seed)
    fa = image_statistics(a)
    fb = image_statistics(b)
    sub_a = np.sort(rng.permutation(len(a))[:energy_n])
    sub_b = np.sort(rng.permutation(len(b))[:energy_n])
    rows = []
    for stat in fa.columns:
        va, vb = fa[stat].to_numpy(), fb[stat].to_numpy()
        ks = ks_2samp(va, vb)
        sd_pooled = np.sqrt(((len(va) - 1) * va.var(ddof=1) + (len(vb) - 1) * vb.var(ddof=1))
                            / (len(va) + len(vb) - 2))
        _, e_p = _energy_permutation(va[sub_a], vb[sub_b], permutations, rng)
        rows.append(
            {
                "statistic": stat,
                "mean_a": float(va.mean()),
                "mean_b": float(vb.mean()),
                "sd_a": float(va.std(ddof=1)),
                "sd_b": float(vb.std(ddof=1)),
                "cohens_d": float((vb.mean() - va.mean()) / sd_pooled) if sd_pooled > 0 else 0.0,
                "ks": float(ks.statistic),
                "ks_p": float(ks.pvalue),
                "energy": float(energy_distance(va, vb)),
                "energy_p": e_p,
            }
        )
    table = pd.DataFrame(rows)
    table["ks_p_holm"] = multipletests(table["ks_p"], method="holm")[1]
    table["energy_p_holm"] = multipletests(table["energy_p"], method="holm")[1]
    bits: dict[str, Any] = {}
    hasher = None
    if hash_bits:
        ba, hasher = phash_bits(a.select(sub_a))
        bb, _ = phash_bits(b.select(sub_b))
        bits = _hash_bit_test(ba, bb, permutations, rng)
        bits["hasher"] = hasher
    return CovariateShiftResult(
        name_a=a.name,
        name_b=b.name,
        n_a=len(a),
        n_b=len(b),
        table=table,
        hash_bits=bits,
        permutations=permutations,
        energy_n=energy_n,
        alpha=alpha,
        params={"seed": seed, "hasher": hasher, "energy_subsample": [int(len(sub_a)), int(len(sub_b))]},
    )
