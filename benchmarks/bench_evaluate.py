"""Evaluation speed: ResNet-56 on the CIFAR-10 test set, and a cached rerun.

Targets: ``replicate.evaluate`` at least 1.5x the throughput of a plain loop
(``model(x[i:i+500]).argmax(1)`` under ``torch.no_grad`` over float32 NCHW batches
prepared beforehand, the unmodified published network) on 2 CPU threads, measured in
the same run and interleaved (baseline, evaluate, baseline, evaluate, ...; best of
each); a cached rerun under 1 s. The evaluate timing includes loading and verifying
the weights and converting uint8 pixels. Both must give the same predictions.

Uses the real CIFAR-10 test set and ResNet-56 weights from ../shared; without them,
random pixels and random weights of the same shape. ``--quick`` uses 2,000 images.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import SHARED, write  # noqa: E402

THREADS = 2


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="2,000 images, 2 rounds")
    parser.add_argument("--rounds", type=int, default=None, help="interleaved rounds (default 3, quick 2)")
    parser.add_argument("--batch-size", type=int, default=None, help="evaluate()'s batch size (default: its own)")
    args = parser.parse_args()
    n = 2000 if args.quick else 10000
    rounds = args.rounds or (2 if args.quick else 3)
    torch.set_num_threads(THREADS)

    from replicate.evaluation import evaluate
    from replicate.imageset import CIFAR10_CLASSES, ImageSet
    from replicate.models import CifarResNet, get_card, load_model

    os.environ["REPLICATE_OFFLINE"] = "1"
    real = (SHARED / "data/cifar10/test.npz").is_file() and (SHARED / "weights").is_dir()
    if real:
        from replicate.io import load_npz

        os.environ["REPLICATE_WEIGHTS"] = str(SHARED / "weights")
        ds = load_npz(SHARED / "data/cifar10/test.npz", name="cifar10-test").select(np.arange(n))
        model_arg: object = "resnet56"
        base_model = load_model("resnet56")
    else:
        rng = np.random.default_rng(0)
        ds = ImageSet(rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8), np.arange(n) % 10, CIFAR10_CLASSES)
        torch.manual_seed(0)
        base_model = CifarResNet(56).eval()
        model_arg = base_model
    pre = get_card("resnet56").preprocessing
    x = pre(ds.images).contiguous()  # float32 NCHW, prepared before timing

    def baseline() -> np.ndarray:
        with torch.no_grad():
            return torch.cat([base_model(x[i : i + 500]).argmax(1) for i in range(0, len(x), 500)]).numpy()

    with tempfile.TemporaryDirectory() as home:
        os.environ["REPLICATE_HOME"] = home

        def ours() -> np.ndarray:
            return evaluate(model_arg, ds, cache=False, threads=THREADS, batch_size=args.batch_size).predictions

        t_base, t_ours = [], []
        for _ in range(rounds):
            t = time.perf_counter()
            p_base = baseline()
            t_base.append(time.perf_counter() - t)
            t = time.perf_counter()
            p_ours = ours()
            t_ours.append(time.perf_counter() - t)
        same = bool(np.array_equal(p_base, p_ours))

        first = evaluate(model_arg, ds, threads=THREADS)  # fills the cache
        t = time.perf_counter()
        again = evaluate(model_arg, ds, threads=THREADS)
        t_cached = time.perf_counter() - t
        cached_ok = bool(again.params["cached"] and np.array_equal(first.predictions, again.predictions))

    speedup = min(t_base) / min(t_ours)
    write(
        "evaluate" if not args.quick else "evaluate_quick",
        {
            "data": "real CIFAR-10 test + published ResNet-56" if real else "random pixels + random ResNet-56",
            "images": n,
            "threads": THREADS,
            "rounds": rounds,
            "evaluate_batch_size": args.batch_size or "default",
            "baseline_seconds": t_base,
            "evaluate_seconds": t_ours,
            "baseline_images_per_s": n / min(t_base),
            "evaluate_images_per_s": n / min(t_ours),
            "speedup": speedup,
            "same_predictions": same,
            "n_correct": int(first.n_correct),
            "cached_rerun_seconds": t_cached,
            "cached_rerun_ok": cached_ok,
            "targets": {"speedup": ">= 1.5", "cached_rerun_seconds": "< 1"},
            "met": {"speedup": speedup >= 1.5 and same, "cached_rerun": t_cached < 1.0 and cached_ok},
            "method": "evaluate(): batch norm folded into convs (torch.nn.utils.fusion), channels-last "
            "weights and input, torch.inference_mode, and on the CPU a frozen TorchScript graph with "
            "oneDNN conv fusion (checked against eager on the first batch); baseline: the published "
            "network as loaded.",
        },
    )


if __name__ == "__main__":
    main()
