"""``replicate hash PATH --method phash --out FILE``: perceptual hashes of an image set."""

from __future__ import annotations

import argparse
import json
from typing import Any

from replicate.cli import print_json


def _param(text: str) -> tuple[str, Any]:
    if "=" not in text:
        raise argparse.ArgumentTypeError(f"--param == {text!r}; must be NAME=VALUE (e.g. highfreq_factor=4)")
    name, value = text.split("=", 1)
    try:
        parsed = json.loads(value)
    except json.JSONDecodeError:
        parsed = value
    return name.strip(), parsed


def register(sub: argparse._SubParsersAction) -> None:
    from replicate.hashing import list_hashers

    p = sub.add_parser("hash", help="perceptual hashes of an image set (bit-identical to imagehash)")
    p.add_argument("path", help="any format replicate.load() reads (saved set, .npz, CIFAR folder, ...)")
    p.add_argument("--method", default="phash", help=f"hasher: {', '.join(list_hashers())} (default phash)")
    p.add_argument(
        "--hash-size", type=int, default=8, help="hash grid side, as in imagehash (default 8: 64 bits)"
    )
    p.add_argument(
        "--param",
        type=_param,
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="another hasher parameter, e.g. highfreq_factor=4, image_scale=64, mode=db4 (repeatable)",
    )
    p.add_argument("--chunk-size", type=int, default=1 << 15, help="images hashed at a time (default 32768)")
    p.add_argument("--out", required=True, help="hashes file to write (.npz; values, ids and metadata)")
    p.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    p.add_argument(
        "--json", action="store_true", help="print JSON (keys method, params, bits, n, versions, out)"
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from replicate.hashing import hash_set
    from replicate.io import load

    images = load(args.path)
    params = dict(args.param)
    hashes = hash_set(images, args.method, hash_size=args.hash_size, chunk_size=args.chunk_size, **params)
    out = hashes.save(args.out, overwrite=args.overwrite)
    if args.json:
        print_json({**hashes.meta(), "out": str(out), "set": images.name})
        return 0
    print(f"{images.name}: {hashes.summary()}")
    print(f"wrote {out}")
    return 0
