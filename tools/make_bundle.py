"""Make the small real data bundle that ships inside the package (replicate/data/).

Run once from a checkout that has ../shared beside it:
    python tools/make_bundle.py
It samples real CIFAR-10 test/train images and the real candidate pool (seeded,
stratified by class), copies the CIFAR-10.1 prediction files, the CIFAR-10 test labels,
the CIFAR-10.1 keyword counts and the ResNet-20 weights, and writes provenance with
the sha256 of every source file. Re-running gives byte-identical arrays.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared"
OUT = ROOT / "replicate" / "data"
SEED = 20181001  # fixed: the bundle must not change between runs

N_TEST_PER_CLASS = 60
N_TRAIN_PER_CLASS = 60
N_POOL_PER_CLASS = 120  # classes present in the pool only


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def stratified(labels: np.ndarray, per_class: int, rng: np.random.Generator) -> np.ndarray:
    picks = []
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        picks.append(np.sort(rng.choice(idx, size=min(per_class, len(idx)), replace=False)))
    return np.sort(np.concatenate(picks))


def main() -> None:
    rng = np.random.default_rng(SEED)
    demo = OUT / "demo"
    demo.mkdir(parents=True, exist_ok=True)
    sources = {}

    for split, per_class in (("test", N_TEST_PER_CLASS), ("train", N_TRAIN_PER_CLASS)):
        src = SHARED / f"data/cifar10/{split}.npz"
        d = np.load(src)
        idx = stratified(d["labels"], per_class, rng)
        np.savez_compressed(
            demo / f"cifar10_{split}_sample.npz",
            images=d["images"][idx],
            labels=d["labels"][idx].astype(np.int64),
            label_names=d["label_names"],
            cifar10_index=idx.astype(np.int64),
            exact=d["exact"][idx],
        )
        sources[f"cifar10_{split}_sample.npz"] = {"from": f"data/cifar10/{split}.npz", "sha256": sha256(src)}
        if split == "test":
            np.savez_compressed(demo / "cifar10_test_labels.npz", labels=d["labels"].astype(np.uint8), label_names=d["label_names"])
            sources["cifar10_test_labels.npz"] = sources[f"cifar10_{split}_sample.npz"]

    src = SHARED / "data/candidates/tinyimagenet_cifar10_32x32.npz"
    d = np.load(src)
    idx = stratified(d["cifar10_label"], N_POOL_PER_CLASS, rng)
    pool_dir = OUT / "candidates" / "tinyimagenet-cifar10-sample"
    pool_dir.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(
        pool_dir / "images.npz",
        images=d["images"][idx],
        cifar10_label=d["cifar10_label"][idx].astype(np.int64),
        label_names=d["label_names"],
        wnid=d["wnid"][idx],
        keyword=d["keyword"][idx],
        source_filename=d["source_filename"][idx],
        source_is_grayscale=d["source_is_grayscale"][idx],
        pool_index=idx.astype(np.int64),
    )
    sources["candidates/tinyimagenet-cifar10-sample/images.npz"] = {
        "from": "data/candidates/tinyimagenet_cifar10_32x32.npz",
        "sha256": sha256(src),
    }
    (pool_dir / "pool.toml").write_text(
        f'''name = "tinyimagenet-cifar10-sample"
description = "A {N_POOL_PER_CLASS}-per-class sample of a real candidate pool: Tiny-ImageNet images of the 22 synsets that CINIC-10 maps to CIFAR-10 classes, downsampled 64->32 with a box filter."
source = "Tiny-ImageNet (CS231n), synsets mapped to CIFAR-10 classes by CINIC-10's synset list"
licence = "ImageNet terms of use (non-commercial research and education)"
collection = "ImageNet images found by WordNet synset search and verified by MTurk; no airplane or horse synsets in this pool, so those classes have no candidates"
data = "images.npz"
sha256 = "{sha256(pool_dir / 'images.npz')}"
label_key = "cifar10_label"

[columns]
keyword = "WordNet words of the image's synset (the search keyword)"
wnid = "WordNet id of the synset"
source_filename = "file name in Tiny-ImageNet"
source_is_grayscale = "the source image was grayscale"
pool_index = "row in the full 12,100-image pool"
'''
    )

    src = SHARED / "data/cifar10_1/labels_and_model_predictions.npz"
    shutil.copyfile(src, demo / "cifar10_1_predictions.npz")
    sources["cifar10_1_predictions.npz"] = {"from": "data/cifar10_1/labels_and_model_predictions.npz", "sha256": sha256(src)}

    src = SHARED / "data/cifar10_1/keyword_metadata.json"
    meta = json.loads(src.read_text())
    keep = {k: meta[k] for k in ("keyword_counts_v4", "keyword_counts_v6", "keyword_counts_v7", "keywords_v4")}
    (demo / "cifar10_1_keyword_counts.json").write_text(json.dumps(keep, indent=1, sort_keys=True) + "\n")
    sources["cifar10_1_keyword_counts.json"] = {"from": "data/cifar10_1/keyword_metadata.json", "sha256": sha256(src)}

    weights = OUT / "weights"
    weights.mkdir(exist_ok=True)
    src = SHARED / "weights/akamaster_resnet_cifar10/resnet20-12fca82f.th"
    shutil.copyfile(src, weights / src.name)
    sources[f"weights/{src.name}"] = {"from": "weights/akamaster_resnet_cifar10/" + src.name, "sha256": sha256(src)}

    files = sorted(p for p in OUT.rglob("*") if p.is_file() and p.suffix in (".npz", ".json", ".th", ".toml"))
    listing = {str(p.relative_to(OUT)): sha256(p) for p in files if p.name != "bundle.json"}
    (OUT / "bundle.json").write_text(
        json.dumps({"seed": SEED, "sources": sources, "files": listing}, indent=1, sort_keys=True) + "\n"
    )
    total = sum(p.stat().st_size for p in files)
    print(f"bundle: {len(files)} files, {total / 1e6:.2f} MB")


if __name__ == "__main__":
    main()
