"""Image-set I/O: open a saved 50,000-image set and read a batch; content-hash throughput.

Targets: opening the saved CIFAR-10 train set and reading one batch under 1 s;
content-hashing all 60,000 CIFAR-10 images at >= 200 MB/s. Baseline in the same run:
a single-threaded hashlib loop, and reading the .npz the set came from.
Uses the real CIFAR-10 from ../shared when present, else random pixels of the same size.
"""

from __future__ import annotations

import argparse
import hashlib
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import SHARED, best_of, write  # noqa: E402

import replicate  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="fewer repeats")
    args = parser.parse_args()
    repeat = 1 if args.quick else 3

    real = (SHARED / "data/cifar10/train.npz").is_file()
    if real:
        t = time.perf_counter()
        train = replicate.load(SHARED / "data/cifar10/train.npz")
        test = replicate.load(SHARED / "data/cifar10/test.npz")
        npz_open = time.perf_counter() - t
        images = np.concatenate([train.images, test.images])
    else:
        rng = np.random.default_rng(0)
        images = rng.integers(0, 256, (60000, 32, 32, 3), dtype=np.uint8)
        train = replicate.ImageSet(images[:50000], rng.integers(0, 10, 50000), name="train")
        npz_open = None

    mb = images.nbytes / 1e6
    t_threads = best_of(lambda: replicate.content_hashes(images), repeat)
    t_loop = best_of(lambda: [hashlib.sha256(im.tobytes()).digest() for im in images], repeat)

    with tempfile.TemporaryDirectory() as d:
        path = train.save(Path(d) / "train")

        def open_and_read() -> None:
            s = replicate.ImageSet.load(path)
            batch = next(s.batches(1000))
            float(np.asarray(batch.images, dtype=np.float32).mean())

        t_open = best_of(open_and_read, repeat)

    write(
        "imageset",
        {
            "real_data": real,
            "hash_images": len(images),
            "hash_megabytes": mb,
            "hash_seconds": t_threads,
            "hash_mb_per_s": mb / t_threads,
            "hash_baseline_loop_mb_per_s": mb / t_loop,
            "hash_speedup_vs_loop": t_loop / t_threads,
            "hash_target_mb_per_s": 200,
            "hash_target_met": mb / t_threads >= 200,
            "open_saved_50k_and_read_batch_seconds": t_open,
            "open_baseline_npz_load_seconds": npz_open,
            "open_target_seconds": 1.0,
            "open_target_met": t_open < 1.0,
        },
    )


if __name__ == "__main__":
    main()
