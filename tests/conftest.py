"""Shared fixtures: small real-looking data made in memory, and the real data in ../shared.

Tests that need ``../shared`` take the ``shared`` fixture (or one built on it) and are
skipped with a reason where that folder is absent, as on a user's fresh machine.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from replicate import CIFAR10_CLASSES, ImageSet

SHARED = Path(os.environ.get("REPLICATE_SHARED", Path(__file__).resolve().parent.parent.parent / "shared"))


@pytest.fixture(scope="session")
def shared() -> Path:
    """The real data folder (../shared); skips the test where it is absent."""
    if not (SHARED / "README.md").is_file():
        pytest.skip(f"real data not available: {SHARED} does not exist (set REPLICATE_SHARED)")
    return SHARED


def _load_npz(path: Path, name: str) -> ImageSet:
    from replicate.io import load_npz

    return load_npz(path, name=name)


@pytest.fixture(scope="session")
def cifar_test(shared: Path) -> ImageSet:
    """The real CIFAR-10 test set (10,000 images)."""
    return _load_npz(shared / "data/cifar10/test.npz", "cifar10-test")


@pytest.fixture(scope="session")
def cifar_train(shared: Path) -> ImageSet:
    """The real CIFAR-10 train set (50,000 images)."""
    return _load_npz(shared / "data/cifar10/train.npz", "cifar10-train")


@pytest.fixture(scope="session")
def candidate_pool(shared: Path) -> ImageSet:
    """The real 12,100-image candidate pool with keywords."""
    return _load_npz(shared / "data/candidates/tinyimagenet_cifar10_32x32.npz", "tinyimagenet-cifar10")


def make_imageset(n: int = 40, seed: int = 0, size: int = 32, name: str = "toy", classes: int = 10) -> ImageSet:
    """A small labelled set of smooth random images with keyword and source columns."""
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 256, size=(n, size // 4, size // 4, 3), dtype=np.uint8)
    images = np.repeat(np.repeat(base, 4, axis=1), 4, axis=2)
    images = np.clip(images.astype(int) + rng.integers(-8, 9, size=images.shape), 0, 255).astype(np.uint8)
    labels = np.arange(n) % classes
    names = CIFAR10_CLASSES if classes == 10 else tuple(f"class{i}" for i in range(classes))
    keywords = np.array([f"{names[y]}_kw{i % 3}" for i, y in enumerate(labels)])
    return ImageSet(
        images,
        labels,
        names,
        metadata={"keyword": keywords, "source": np.full(n, "synthetic"), "score": rng.random(n)},
        name=name,
    )


@pytest.fixture
def toy() -> ImageSet:
    """40 labelled 32x32 images, 4 per CIFAR-10 class, with keyword/source/score columns."""
    return make_imageset()


@pytest.fixture(scope="session")
def pool_sources(candidate_pool: ImageSet, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """The real pool written out three ways (PNG folder, JPEG-95 WebDataset shards, Parquet of
    PNGs), opened as image sources, plus the in-memory set of the decoded JPEGs."""
    import csv
    import io
    from concurrent.futures import ThreadPoolExecutor

    from PIL import Image

    from replicate.sources import open_source, write_parquet, write_shards

    root = tmp_path_factory.mktemp("pool_sources")
    png = root / "png"
    png.mkdir()
    names = [f"{i:05d}.png" for i in range(len(candidate_pool))]

    def save(i: int) -> None:
        Image.fromarray(candidate_pool.images[i]).save(png / names[i], compress_level=1)

    with ThreadPoolExecutor(2) as ex:
        list(ex.map(save, range(len(candidate_pool))))
    with open(png / "metadata.csv", "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["file", "id", "label", "keyword"])
        for i, name in enumerate(names):
            w.writerow([name, candidate_pool.ids[i], candidate_pool.class_names[candidate_pool.labels[i]],
                        candidate_pool.metadata["keyword"][i]])
    write_shards(candidate_pool, root / "jpg", shard_size=4000, format="jpg", quality=95)
    out = {"png": open_source(png, class_names=candidate_pool.class_names), "jpg": open_source(root / "jpg")}
    try:
        write_parquet(candidate_pool, root / "parquet" / "pool.parquet")
        out["parquet"] = open_source(root / "parquet")
    except ImportError:  # pragma: no cover - pyarrow is a dev dependency
        pass

    def jpeg(x: np.ndarray) -> np.ndarray:
        buf = io.BytesIO()
        Image.fromarray(x).save(buf, format="JPEG", quality=95)
        return np.asarray(Image.open(buf).convert("RGB"))

    decoded = np.stack([jpeg(x) for x in candidate_pool.images])
    out["jpg_decoded"] = ImageSet(decoded, candidate_pool.labels, candidate_pool.class_names, candidate_pool.ids,
                                  candidate_pool.metadata, name=candidate_pool.name)
    return out
