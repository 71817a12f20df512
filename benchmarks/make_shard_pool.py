"""Generate a benchmark candidate pool as WebDataset tar shards (not committed: generated).

Images are derived from real ones: CIFAR-10 train and the Tiny-ImageNet candidate pool
(../shared), each with a random crop (keeping 70-100% of each side), a resize to a random
48-128 px per side (aspect ratio not kept) and JPEG re-encoding at quality 70-95. Planted
near-duplicates of CIFAR-10 test (light crop of at most 1 px per side, resize, JPEG 90-95)
carry their source in the JSON member: ``planted_test_index``. Every sample has ``id``,
``label`` and ``keyword`` (the class name plus one of 5 keyword variants).

    python benchmarks/make_shard_pool.py OUT_DIR --n 1000000 [--planted 500] [--shard-size 10000]

Deterministic for a given ``--seed``: the same arguments give the same bytes.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import sys
import tarfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
SHARED = Path(os.environ.get("REPLICATE_SHARED", ROOT.parent / "shared"))
CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")

_SRC: dict[str, np.ndarray] = {}


def _load() -> dict[str, np.ndarray]:
    if not _SRC:
        train = np.load(SHARED / "data/cifar10/train.npz")
        pool = np.load(SHARED / "data/candidates/tinyimagenet_cifar10_32x32.npz")
        test = np.load(SHARED / "data/cifar10/test.npz")
        _SRC["images"] = np.concatenate([train["images"], pool["images"]])
        _SRC["labels"] = np.concatenate([train["labels"], pool["cifar10_label"]]).astype(np.int64)
        _SRC["test"] = test["images"]
        _SRC["test_labels"] = test["labels"].astype(np.int64)
    return _SRC


def plan(n: int, planted: int, seed: int) -> dict[str, np.ndarray]:
    """Which source image each pool position derives from (and where the planted ones go)."""
    src = _load()
    rng = np.random.default_rng(seed)
    base = rng.integers(0, len(src["images"]), size=n)
    slots = np.sort(rng.choice(n, size=min(planted, n), replace=False))
    test_idx = rng.choice(len(src["test"]), size=len(slots), replace=False)
    return {"base": base, "slots": slots, "test_idx": test_idx}


def _encode(img: np.ndarray, rng: np.random.Generator, planted: bool) -> bytes:
    from PIL import Image

    pil = Image.fromarray(img)
    if planted:
        left, top = rng.integers(0, 2, size=2)
        right, bottom = 32 - rng.integers(0, 2, size=2)
        quality = int(rng.integers(90, 96))
    else:
        cw, ch = rng.integers(23, 33, size=2)
        left, top = rng.integers(0, 33 - cw), rng.integers(0, 33 - ch)
        right, bottom = left + cw, top + ch
        quality = int(rng.integers(70, 96))
    w, h = (int(x) for x in rng.integers(48, 129, size=2))
    pil = pil.crop((int(left), int(top), int(right), int(bottom))).resize((w, h), Image.Resampling.BICUBIC)
    buf = io.BytesIO()
    pil.save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


def write_shard(args: tuple[Path, int, int, int, int, int]) -> int:
    out, shard, start, stop, n, seed = args
    src = _load()
    p = plan(n, _PLANTED, seed)
    planted_at = dict(zip(p["slots"].tolist(), p["test_idx"].tolist()))
    path = out / f"pool-{shard:06d}.tar"
    tmp = path.with_suffix(".tar.tmp")
    with tarfile.open(tmp, "w") as tf:
        for i in range(start, stop):
            rng = np.random.default_rng([seed, i])
            meta: dict[str, object] = {"id": f"bench/{i:08d}"}
            if i in planted_at:
                t = planted_at[i]
                img, label = src["test"][t], int(src["test_labels"][t])
                meta["planted_test_index"] = t
            else:
                b = int(p["base"][i])
                img, label = src["images"][b], int(src["labels"][b])
                meta["planted_test_index"] = -1
            meta["label"] = label
            meta["keyword"] = f"{CLASSES[label]}_{int(rng.integers(0, 5))}"
            data = _encode(img, rng, i in planted_at)
            for ext, blob in (("jpg", data), ("json", json.dumps(meta).encode())):
                info = tarfile.TarInfo(f"{i:08d}.{ext}")
                info.size = len(blob)
                tf.addfile(info, io.BytesIO(blob))
    os.replace(tmp, path)
    return stop - start


_PLANTED = 500


def main(argv: list[str] | None = None) -> int:
    global _PLANTED
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", type=Path)
    ap.add_argument("--n", type=int, default=1_000_000)
    ap.add_argument("--planted", type=int, default=500)
    ap.add_argument("--shard-size", type=int, default=10_000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    a = ap.parse_args(argv)
    _PLANTED = a.planted
    a.out.mkdir(parents=True, exist_ok=True)
    (a.out / "classes.txt").write_text("".join(c + "\n" for c in CLASSES))
    jobs = [(a.out, s, start, min(start + a.shard_size, a.n), a.n, a.seed)
            for s, start in enumerate(range(0, a.n, a.shard_size))]
    t = time.perf_counter()
    if a.workers > 1:
        with ProcessPoolExecutor(a.workers, initializer=_set_planted, initargs=(a.planted,)) as ex:
            done = sum(ex.map(write_shard, jobs))
    else:
        done = sum(write_shard(j) for j in jobs)
    p = plan(a.n, a.planted, a.seed)
    truth = {"n": a.n, "seed": a.seed, "planted": [{"id": f"bench/{i:08d}", "test_index": int(t)}
                                                  for i, t in zip(p["slots"].tolist(), p["test_idx"].tolist())]}
    (a.out / "planted.json").write_text(json.dumps(truth) + "\n")
    print(f"wrote {done} images in {len(jobs)} shards to {a.out} in {time.perf_counter() - t:.1f} s")
    return 0


def _set_planted(planted: int) -> None:
    global _PLANTED
    _PLANTED = planted


if __name__ == "__main__":
    sys.exit(main())
