"""Batched perceptual hashing vs imagehash's per-image loop, measured in the same run.

Target: batched pHash of 32x32 images, bit-identical to imagehash, at least 30x the
imagehash loop (aim 60x). The other hashers are measured the same way. Every batched
result is checked bit for bit against imagehash on the images the loop hashed.

    python benchmarks/bench_hashing.py [--quick]

Writes benchmarks/results/hashing.json (hashing_quick.json with --quick).
"""

from __future__ import annotations

import argparse
import os
import sys

import numpy as np
from _common import SHARED, best_of, machine, write

TARGET_RATIO = 30.0
AIM_RATIO = 60.0


def load_images(n: int) -> tuple[np.ndarray, str]:
    path = SHARED / "data" / "cifar10" / "train.npz"
    if path.is_file():
        with np.load(path) as z:
            return np.ascontiguousarray(z["images"][:n]), "CIFAR-10 train (real images)"
    print(f"{path} not found: using random 32x32 images", file=sys.stderr)
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, size=(n, 32, 32, 3), dtype=np.uint8), "random 32x32 images"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer images (a fast run)")
    args = ap.parse_args()

    import imagehash
    from PIL import Image

    from replicate.hashing import hash_bits, hash_images, hashes_to_hex

    n_batch = 20_000 if args.quick else 50_000
    n_loop = {"phash": 1000 if args.quick else 3000}
    images, source = load_images(n_batch)
    funcs = {
        "phash": imagehash.phash,
        "ahash": imagehash.average_hash,
        "dhash": imagehash.dhash,
        "dhash_vertical": imagehash.dhash_vertical,
        "phash_simple": imagehash.phash_simple,
        "whash": imagehash.whash,
    }
    import numba

    threads = numba.get_num_threads()
    info = {**machine(), "numba": numba.__version__, "numba_threads": threads}
    results = {}
    for method, func in funcs.items():
        m = n_loop.get(method, 300 if args.quick else 1000)
        subset = images[:m]
        hash_images(subset[:64], method)  # compile / warm up
        # baseline: imagehash on PIL images, one at a time, the way it is used
        ref = [str(func(Image.fromarray(img))) for img in subset]
        ours_subset = hashes_to_hex(hash_images(subset, method), hash_bits(method))
        identical = ours_subset == ref
        # interleave the timings so that baseline and batched runs see the same machine load
        t_loop = t_batch = t_batch1 = float("inf")
        for _ in range(3):
            t_loop = min(t_loop, best_of(lambda func=func, subset=subset: [func(Image.fromarray(img)) for img in subset], 1))
            numba.set_num_threads(threads)
            t_batch = min(t_batch, best_of(lambda method=method: hash_images(images, method), 1))
            numba.set_num_threads(1)
            t_batch1 = min(t_batch1, best_of(lambda method=method: hash_images(images, method), 1))
        numba.set_num_threads(threads)
        loop_rate = m / t_loop
        batch_rate = len(images) / t_batch
        batch1_rate = len(images) / t_batch1
        results[method] = {
            "loop_images": m,
            "loop_seconds_best_of_3": t_loop,
            "loop_images_per_s": loop_rate,
            "batch_images": len(images),
            "batch_threads": threads,
            "batch_seconds_best_of_3": t_batch,
            "batch_images_per_s": batch_rate,
            "ratio": batch_rate / loop_rate,
            "batch_1_thread_images_per_s": batch1_rate,
            "ratio_1_thread": batch1_rate / loop_rate,
            "bit_identical_on_loop_images": bool(identical),
        }
        print(
            f"{method:15s} imagehash {loop_rate:9.0f}/s  batched {batch_rate:10.0f}/s ({threads} threads, {batch_rate / loop_rate:5.1f}x)"
            f"  {batch1_rate:10.0f}/s (1 thread, {batch1_rate / loop_rate:5.1f}x)  identical={identical}"
        )
    ph = results["phash"]
    out = {
        "what": "batched perceptual hashing vs imagehash per-image loop (same run)",
        "images": source,
        "image_shape": list(images.shape[1:]),
        "quick": args.quick,
        "target": {"method": "phash", "ratio_at_least": TARGET_RATIO, "aim": AIM_RATIO, "bit_identical": True},
        "met": bool(ph["ratio"] >= TARGET_RATIO and ph["bit_identical_on_loop_images"]),
        "aim_met": bool(ph["ratio"] >= AIM_RATIO),
        "results": results,
        "machine_at_start": info,
        "load_avg_1min_at_end": os.getloadavg()[0],
    }
    path = write("hashing_quick" if args.quick else "hashing", out)
    print(f"phash ratio {ph['ratio']:.1f}x (target {TARGET_RATIO:.0f}x, aim {AIM_RATIO:.0f}x): met={out['met']}; wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
