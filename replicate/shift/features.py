"""Features of an image set for the dataset test: pixels, colour statistics, pHash bits, zoo models."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from replicate._validation import check_choice, check_int, fail
from replicate.imageset import ImageSet

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd


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
