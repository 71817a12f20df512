"""Evaluate a model on an image set: fast batched inference with an on-disk cache.

``evaluate(model, dataset)`` runs a zoo model (by name), a prediction-file model, any
``torch.nn.Module`` or a callable from a float batch to logits, and returns an
:class:`EvalResult` holding per-image predictions and correctness and the counts.

Results of zoo models and modules are cached on disk under a key made of the model
card, the weights' sha256, the dataset's image fingerprint and the preprocessing, so
a rerun is a disk read. Cache writes are atomic (a temporary file, then
``os.replace``): an interrupted run leaves no partial entry.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import time
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from replicate._validation import check_choice, check_int, fail
from replicate.models.results import EvalResult, labels_fingerprint, make_result

if TYPE_CHECKING:  # pragma: no cover
    from replicate.imageset import ImageSet

__all__ = [
    "EvalResult",
    "evaluate",
    "extract_features",
    "predict",
    "cache_dir",
    "clear_cache",
    "labels_fingerprint",
    "make_result",
]

CPU_BATCH_SIZE = 256
CUDA_BATCH_SIZE = 1000

Device = Literal["auto", "cpu", "cuda"]
DEVICES = ("auto", "cpu", "cuda")


# --------------------------------------------------------------------------- models


@dataclass
class _Runner:
    """A model made ready for inference: forward functions, preprocessing, identity."""

    name: str
    source: str
    forward: Any
    preprocessing: Any
    num_classes: int | None
    identity: dict[str, Any] | None
    weights_sha256: str | None = None
    features: Any = None
    module: Any = None
    card: Any = None
    loader: Any = None
    threads_used: int | None = None

    def ensure(self) -> _Runner:
        """Build the network now if it was deferred (zoo models load only on a cache miss)."""
        if self.forward is None and self.loader is not None:
            self.forward, self.features, self.module = self.loader()
            self.loader = None
        return self


def _module_identity(module: Any) -> dict[str, Any]:
    """Identity of a module for the cache: its class and a hash of every parameter and buffer."""
    import torch

    d = hashlib.sha256()
    for key, t in module.state_dict().items():
        if not isinstance(t, torch.Tensor):
            continue
        t = t.detach().cpu().contiguous()
        d.update(f"{key}:{t.dtype}:{tuple(t.shape)}".encode())
        d.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    cls = type(module)
    return {"class": f"{cls.__module__}.{cls.__qualname__}", "state_sha256": d.hexdigest()}


def _check_remote_code(spec: str, allow_remote_code: bool) -> None:
    """A ``hub:`` model runs its repository's Python: only on an explicit opt-in, never offline."""
    if allow_remote_code is not True:
        raise fail(
            "model",
            spec,
            "a registered model unless remote code is allowed: a 'hub:' entry downloads and runs "
            "the Python code of that repository",
            "If you trust the repository, pass allow_remote_code=True (CLI: --allow-remote-code), or "
            "build the network yourself and pass the nn.Module or register it with "
            "replicate.models.register_model. Config files cannot enable it.",
            error=PermissionError,
        )
    if os.environ.get("REPLICATE_OFFLINE", "") not in ("", "0", "false", "False"):
        raise fail(
            "model",
            spec,
            "a local model while REPLICATE_OFFLINE is set (a 'hub:' entry is fetched from the internet)",
            "Unset REPLICATE_OFFLINE, or pass the nn.Module built from a local copy.",
            error=PermissionError,
        )


def _prepare(
    model_or_name: Any,
    *,
    weights: Any,
    preprocessing: Any,
    name: str | None,
    cache_key: str | None,
    device: str,
    compile: bool,
    need_features: bool = False,
    allow_remote_code: bool = False,
) -> _Runner:
    import torch

    from replicate.models._registry import ModelCard, Preprocessing, get_card, load_model

    if preprocessing is not None and not isinstance(preprocessing, Preprocessing):
        raise fail(
            "preprocessing",
            preprocessing,
            "a replicate.models.Preprocessing",
            "e.g. Preprocessing(scale='unit', mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25)).",
            error=TypeError,
        )
    card = None
    module = None
    source = "module"
    identity: dict[str, Any] | None = None
    sha = None
    path = None
    if isinstance(model_or_name, str) and model_or_name.startswith("hub:"):
        spec = model_or_name[4:]
        repo, _, entry = spec.rpartition(":")
        if not repo or not entry:
            raise fail("model", model_or_name, "'hub:owner/repo:entry' (a torch.hub entry point)")
        _check_remote_code(model_or_name, allow_remote_code)
        module = torch.hub.load(repo, entry, trust_repo=True)  # the caller named this repo and opted in
        source = "hub"
        name = name or model_or_name
        identity = {"hub": spec, **_module_identity(module)}
        fresh = False
    elif isinstance(model_or_name, (str, ModelCard)):
        from replicate.models._weights import resolve_weights_sha

        card = get_card(model_or_name) if isinstance(model_or_name, str) else model_or_name
        path, sha = resolve_weights_sha(card, weights)
        source, fresh = "zoo", True
    elif isinstance(model_or_name, torch.nn.Module):
        module = model_or_name
        card = getattr(module, "card", None)
        sha = getattr(module, "weights_sha256", None)
        if card is not None and sha is not None:
            source = "zoo"
        fresh = False
    elif callable(model_or_name):
        if need_features:
            raise fail(
                "model",
                model_or_name,
                "a zoo name or a torch.nn.Module with forward_features(x) for feature extraction",
                "Wrap your network in an nn.Module whose forward_features returns the penultimate layer.",
                error=TypeError,
            )
        pre = preprocessing or Preprocessing()
        fname = str(name or getattr(model_or_name, "__name__", type(model_or_name).__name__))
        ident = None if cache_key is None else {"callable": cache_key}
        return _Runner(fname, "callable", model_or_name, pre, None, ident)
    else:
        raise fail(
            "model",
            model_or_name,
            "a zoo model name, a ModelCard, a torch.nn.Module, a callable or 'hub:owner/repo:entry'",
            "See replicate.models.list_models().",
            error=TypeError,
        )

    if card is not None:
        pre = preprocessing or card.preprocessing
        name = name or card.name
        num_classes: int | None = card.num_classes
        if sha is not None:
            identity = {"card": card.name, "architecture": card.architecture, "weights_sha256": sha}
    else:
        pre = preprocessing or Preprocessing()
        name = name or type(module).__name__
        num_classes = None
    if identity is None:
        identity = _module_identity(module)
    if cache_key is not None:
        identity = {**identity, "cache_key": cache_key}

    def build() -> tuple[Any, Any, Any]:
        mod = module if module is not None else load_model(card, path)  # type: ignore[arg-type]
        return _optimise(mod, fresh, name or "", device, compile, need_features)

    if module is None:  # a zoo model: built only when the cache misses
        return _Runner(name, source, None, pre, num_classes, identity, sha, None, None, card, build)
    fwd, feats, module = build()
    return _Runner(name, source, fwd, pre, num_classes, identity, sha, feats, module, card)


def _optimise(
    module: Any, fresh: bool, name: str, device: str, compile: bool, need_features: bool
) -> tuple[Any, Any, Any]:
    """(forward, forward_features, module) ready for inference on ``device``."""
    import copy

    import torch

    # Speed-ups that leave predictions unchanged: batch norm folded into convs (zoo
    # architectures define fuse()), weights in channels-last memory (a copy for a
    # module we did not build).
    if need_features and not hasattr(module, "forward_features"):
        raise fail(
            "model",
            name,
            "a module with forward_features(x) (the penultimate layer)",
            "Zoo models have it; add one to your module.",
            error=TypeError,
        )
    was_training = module.training
    if hasattr(module, "fuse") or was_training:
        if not fresh:
            module = copy.deepcopy(module)
        module.eval()
        if hasattr(module, "fuse"):
            module.fuse()
    elif not fresh:
        module = copy.deepcopy(module)
    module = module.to(device=device, memory_format=torch.channels_last)
    fwd: Any = module
    feats = getattr(module, "forward_features", None)
    if compile:
        fwd = torch.compile(module)
        if feats is not None:
            feats = torch.compile(feats)
    elif device == "cpu" and fresh:  # zoo architectures only: a user module may branch on its input
        fwd = _FrozenOnCPU(module)
        if feats is not None:  # the dataset test's and near-duplicates' features: the same path
            feats = _FrozenOnCPU(_features_module(module))
    return fwd, feats, module


def _features_module(module: Any) -> Any:
    """A module whose ``forward`` is ``module.forward_features`` (for tracing)."""
    import torch

    class Features(torch.nn.Module):
        def __init__(self, inner: Any) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, x: Any) -> Any:
            return self.inner.forward_features(x)

    return Features(module).eval()


class _FrozenOnCPU:
    """The module as a frozen TorchScript graph on the CPU (with 2+ threads).

    ``torch.jit.freeze`` inlines the weights as constants and folds what it can; the
    graph then runs oneDNN's convolutions without the Python module dispatch. It is
    frozen only, not passed through ``optimize_for_inference`` (conv + ReLU fusion and
    pre-packed weights): measured in one process on this 2-core box, the optimized graph
    ran slower than the frozen one at 2 threads (ResNet-20 163 vs 228 img/s, ResNet-56
    39 vs 62, batches of 250; benchmarks/results/evaluate_notes.md), and a frozen-only
    graph costs about 1 s to build instead of 1-2.5 s. On one thread the frozen graph ran
    no faster than the eager batch-norm-folded, channels-last module (ResNet-56 129 vs
    128 img/s, ResNet-20 290 vs 374), so with one thread the module stays eager.
    Otherwise the graph is traced on the first ``CHECK_IMAGES`` images of the first
    batch (a trace runs the module once), and its logits on them are checked against
    eager mode; any failure or difference falls back to eager mode for good. (``torch.
    compile`` on the CPU took 21 s to compile ResNet-56 and ran slower than eager here.)
    These torch.jit entry points are deprecated in favour of torch.compile, so their
    FutureWarnings are silenced here and a future torch without them takes the eager path.
    """

    CHECK_IMAGES = 8

    def __init__(self, module: Any) -> None:
        self.module = module
        self.frozen: Any = None
        self.tried = False

    def __call__(self, x: Any) -> Any:
        if self.frozen is not None:
            return self.frozen(x)
        if not self.tried:
            self.tried = True
            self.frozen = self._freeze(x[: self.CHECK_IMAGES])
            if self.frozen is not None:
                return self.frozen(x)
        return self.module(x)

    def _freeze(self, sample: Any) -> Any:
        import torch

        if torch.get_num_threads() < 2:
            return None
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                traced = torch.jit.trace(self.module, sample, check_trace=False)
                frozen = torch.jit.freeze(traced)
                out = frozen(sample)
        except Exception:  # noqa: BLE001 - any tracing failure means: stay eager
            return None
        eager = self.module(sample)
        same = out.shape == eager.shape and torch.allclose(out, eager, rtol=1e-4, atol=1e-4)
        return frozen if same and torch.equal(out.argmax(1), eager.argmax(1)) else None


# --------------------------------------------------------------------------- cache


def cache_dir() -> Path:
    """Where evaluations are cached: ``$REPLICATE_HOME/evaluations``."""
    from replicate.models._weights import home_dir

    return home_dir() / "evaluations"


def clear_cache() -> int:
    """Delete every cached evaluation and feature file; returns how many were removed."""
    removed = 0
    root = cache_dir()
    if root.is_dir():
        for p in root.rglob("*.npz"):
            p.unlink()
            removed += 1
    return removed


def _cache_key(kind: str, identity: Mapping[str, Any], image_fingerprint: str, pre: Any) -> str:
    blob = json.dumps(
        {"v": 1, "kind": kind, "model": identity, "images": image_fingerprint, "pre": pre.to_dict()},
        sort_keys=True,
    )
    return hashlib.sha256(blob.encode()).hexdigest()


def _cache_path(key: str) -> Path:
    return cache_dir() / key[:2] / f"{key}.npz"


def _cache_read(key: str) -> dict[str, np.ndarray] | None:
    path = _cache_path(key)
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    except Exception as exc:  # noqa: BLE001 - any unreadable entry is recomputed
        warnings.warn(
            f"unreadable evaluation cache entry {path} ({type(exc).__name__}); recomputing it",
            RuntimeWarning,
            stacklevel=3,
        )
        return None


def _cache_write(key: str, arrays: Mapping[str, np.ndarray]) -> Path | None:
    """Write atomically: a temporary file in the same folder, then ``os.replace``.

    A cache that cannot be written (read-only ``$REPLICATE_HOME``, a full disk) is not an
    error: the result is returned uncached, with a warning, and no partial file is left.
    """
    path = _cache_path(key)
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{key[:8]}-", suffix=".npz.tmp", dir=path.parent)
        with os.fdopen(fd, "wb") as fh:
            np.savez(fh, **dict(arrays))  # type: ignore[arg-type]
        os.replace(tmp, path)
    except OSError as exc:
        if tmp is not None and os.path.exists(tmp):
            os.unlink(tmp)
        warnings.warn(
            f"the evaluation cache {str(cache_dir())!r} cannot be written ({exc.strerror or exc}); "
            "the result is not cached. Set REPLICATE_HOME to a writable directory to cache it.",
            RuntimeWarning,
            stacklevel=3,
        )
        return None
    except BaseException:
        if tmp is not None and os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


# --------------------------------------------------------------------------- inference


def cpu_threads(samples: int = 5) -> int | None:
    """Threads for a CPU forward pass: torch's setting, capped by the cores idle now.

    torch's OpenMP threads wait for each other after every operation, so on cores
    shared with other busy processes two threads ran the CIFAR ResNets about half as
    fast as one (benchmarks/bench_evaluate.py). The number of other runnable tasks is
    read from ``/proc/stat`` (``procs_running``, the median of ``samples`` readings
    10 ms apart, less this one); ``None`` where that is unavailable (torch's setting
    is kept). An explicit ``threads=`` argument is used as given.
    """
    import torch

    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # pragma: no cover - not Linux
        cores = os.cpu_count() or 1
    readings = []
    try:
        for i in range(samples):
            if i:
                time.sleep(0.01)
            with open("/proc/stat", encoding="ascii") as fh:
                readings += [int(line.split()[1]) for line in fh if line.startswith("procs_running")]
    except (OSError, ValueError, IndexError):  # pragma: no cover - not Linux
        return None
    if not readings:  # pragma: no cover
        return None
    others = int(np.median(readings)) - 1
    return max(1, min(torch.get_num_threads(), cores - others))



def _batch_size(batch_size: int | None, device: str) -> int:
    if batch_size is None:
        return CUDA_BATCH_SIZE if _resolve_device(device) == "cuda" else CPU_BATCH_SIZE
    return check_int("batch_size", batch_size, minimum=1)


def _resolve_device(device: str) -> str:
    import torch

    check_choice("device", device, DEVICES)
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise fail("device", device, "'cpu' or 'auto' on a machine without CUDA", "Use device='auto'.")
    return device


def _as_imageset(dataset: Any) -> ImageSet:
    from replicate.imageset import ImageSet

    if isinstance(dataset, ImageSet):
        return dataset
    if isinstance(dataset, (str, os.PathLike)):
        from replicate.io import load

        return load(dataset)
    raise fail("dataset", dataset, "an ImageSet or a path replicate.load() reads", error=TypeError)


def _check_images(runner: _Runner, ds: ImageSet) -> None:
    pre = runner.preprocessing
    h, w, c = ds.image_shape if len(ds) else (0, 0, 3)
    if pre.input_size is not None and len(ds) and (h, w) != tuple(pre.input_size):
        raise fail(
            f"image size of {ds.name!r}",
            f"{h}x{w}",
            f"{pre.input_size[0]}x{pre.input_size[1]} for {runner.name}",
            "Resize the images first (e.g. with PIL), or evaluate a model made for this size.",
        )
    if pre.mean is not None and len(pre.mean) != c:
        raise fail(
            f"channels of {ds.name!r}",
            c,
            f"{len(pre.mean)} for {runner.name}'s normalisation",
            "Convert the images to RGB first.",
        )


@dataclass
class _Inference:
    predictions: np.ndarray
    logits: np.ndarray | None
    top5: np.ndarray | None
    cached: bool
    seconds: float
    cache_file: str | None


def _run_logits(
    runner: _Runner,
    ds: ImageSet,
    *,
    batch_size: int,
    device: str,
    threads: int | None,
    progress: bool,
    keep_logits: bool,
    features: bool = False,
    expected_classes: int | None = None,
) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
    """Forward every batch; returns predictions, logits (if kept) and top-5 indices (if >= 100 classes)."""
    import torch
    from tqdm.auto import tqdm

    n = len(ds)
    if n:  # equal batches (10,000 at 256 -> 40 of 250): one shape, no re-planned last batch
        batch_size = -(-n // -(-n // batch_size))
    old_threads = torch.get_num_threads()
    if threads is None and device == "cpu":
        threads = cpu_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    runner.threads_used = torch.get_num_threads() if device == "cpu" else None
    runner.ensure()
    fn = runner.features if features else runner.forward
    preds = np.empty(n, dtype=np.int64)
    logits_out: np.ndarray | None = None
    top5: np.ndarray | None = None
    old_tf32 = torch.backends.cudnn.allow_tf32 if device == "cuda" else None
    try:
        if device == "cuda":
            torch.backends.cudnn.allow_tf32 = False  # the same numbers as float32 on the CPU
        with torch.inference_mode(), tqdm(
            total=n, disable=not progress, unit="img", desc=runner.name, leave=False
        ) as bar:
            for start in range(0, n, batch_size):
                x = runner.preprocessing(ds.images[start : start + batch_size], device)
                out = fn(x)
                if not isinstance(out, torch.Tensor):
                    out = torch.as_tensor(np.asarray(out))
                if out.ndim != 2 or out.shape[0] != x.shape[0]:
                    raise fail(
                        f"output of {runner.name}",
                        tuple(out.shape),
                        f"({x.shape[0]}, classes) for a batch of {x.shape[0]} images",
                        "The model (or callable) must return one row of logits per image.",
                    )
                out = out.float()
                bad = torch.isnan(out).any(1)
                if bool(bad.any()):
                    pos = (torch.nonzero(bad).flatten()[:5] + start).tolist()
                    raise fail(
                        f"{'features' if features else 'logits'} of {runner.name}",
                        f"NaN for {int(bad.sum())} images of batch at {start} (positions {pos})",
                        "finite",
                        "Check the weights (a failed load or training blow-up) and the preprocessing.",
                    )
                if logits_out is None:
                    k = out.shape[1]
                    if not features and runner.num_classes is None:
                        runner.num_classes = k
                        if expected_classes is not None and k != expected_classes:
                            raise fail(
                                f"classes of {ds.name!r}",
                                expected_classes,
                                f"{k}, the number of classes {runner.name} predicts (logits.shape[1])",
                                "Evaluate on a set with the model's classes, or wrap the model to map "
                                "its outputs to the set's classes.",
                            )
                    if not features and k != runner.num_classes:
                        raise fail(f"logits.shape[1] of {runner.name}", k, f"{runner.num_classes}")
                    if features or keep_logits:
                        logits_out = np.empty((n, k), dtype=np.float32)
                    else:
                        logits_out = np.empty((0, k), dtype=np.float32)
                    if not features and k >= 100:
                        top5 = np.empty((n, 5), dtype=np.int64)
                stop = start + x.shape[0]
                if features or keep_logits:
                    logits_out[start:stop] = out.cpu().numpy()
                if not features:
                    preds[start:stop] = out.argmax(1).cpu().numpy()
                    if top5 is not None:
                        top5[start:stop] = out.topk(5, 1).indices.cpu().numpy()
                bar.update(x.shape[0])
    finally:
        if threads is not None:
            torch.set_num_threads(old_threads)
        if old_tf32 is not None:
            torch.backends.cudnn.allow_tf32 = old_tf32
    if n == 0:
        logits_out = np.empty((0, runner.num_classes or 0), dtype=np.float32)
    keep = features or keep_logits
    return preds, (logits_out if keep else None), top5


def _infer(
    runner: _Runner,
    ds: ImageSet,
    *,
    batch_size: int,
    device: str,
    threads: int | None,
    progress: bool,
    cache: bool,
    expected_classes: int | None = None,
) -> _Inference:
    """Predictions of a runner on a set, from the cache when there."""
    t0 = time.perf_counter()
    key = None
    if cache and runner.identity is not None:
        key = _cache_key("logits", runner.identity, ds.image_fingerprint, runner.preprocessing)
        hit = _cache_read(key)
        if hit is not None and len(hit.get("predictions", ())) == len(ds):
            if runner.num_classes is None and "logits" in hit:
                runner.num_classes = int(hit["logits"].shape[1])
            return _Inference(
                hit["predictions"].astype(np.int64),
                hit["logits"] if hit["logits"].shape[0] == len(ds) else None,
                hit["top5"] if "top5" in hit else None,
                True,
                time.perf_counter() - t0,
                str(_cache_path(key)),
            )
    preds, logits, top5 = _run_logits(
        runner,
        ds,
        batch_size=batch_size,
        device=device,
        threads=threads,
        progress=progress,
        keep_logits=True,
        expected_classes=expected_classes,
    )
    path = None
    if key is not None:
        arrays: dict[str, np.ndarray] = {"predictions": preds}
        k = logits.shape[1] if logits is not None else 0
        # Logits are kept for small heads only (1000-class logits of 50k images are 200 MB).
        arrays["logits"] = logits if logits is not None and k <= 100 else np.empty((0, k), np.float32)
        if top5 is not None:
            arrays["top5"] = top5
        written = _cache_write(key, arrays)
        path = None if written is None else str(written)
    return _Inference(preds, logits, top5, False, time.perf_counter() - t0, path)


# --------------------------------------------------------------------------- API


def evaluate(
    model_or_name: Any,
    dataset: ImageSet | str | os.PathLike[str],
    *,
    batch_size: int | None = None,
    device: Device = "auto",
    cache: bool = True,
    threads: int | None = None,
    progress: bool = False,
    compile: bool = False,
    return_logits: bool = False,
    weights: str | os.PathLike[str] | None = None,
    preprocessing: Any = None,
    name: str | None = None,
    cache_key: str | None = None,
    allow_remote_code: bool = False,
) -> EvalResult:
    """Evaluate a model on a labelled image set.

    Parameters
    ----------
    model_or_name
        a zoo name (``"resnet20"``; see :func:`replicate.models.list_models`), a
        prediction-file entry (``"cifar10.1/wrn_28_10"``, bound to the sets it was
        computed on), a :class:`replicate.models.ModelCard`, a ``torch.nn.Module``
        (logits from ``forward``), a callable from a float batch to logits, or
        ``"hub:owner/repo:entry"`` (torch.hub; runs that repository's code, so only
        with ``allow_remote_code=True`` and never under ``REPLICATE_OFFLINE``).
    dataset
        an :class:`~replicate.imageset.ImageSet` or a path ``replicate.load`` reads;
        every image must be labelled, with as many classes as the model predicts.
    batch_size, threads
        images per forward pass (default: ``CPU_BATCH_SIZE`` on the CPU, where small
        batches stay in cache, ``CUDA_BATCH_SIZE`` on a GPU); CPU threads (``None``:
        torch's setting, capped by the cores other processes leave idle, see
        :func:`cpu_threads`; the number used is ``params["threads_used"]``).
    device
        ``"auto"`` (CUDA when present, else CPU), ``"cpu"`` or ``"cuda"``.
    cache
        read and write the on-disk cache (``$REPLICATE_HOME/evaluations``), keyed by
        the model card, weights sha256, the set's image fingerprint and the
        preprocessing. Plain callables are cached only with a ``cache_key``.
    progress
        show a tqdm progress bar.
    compile
        run the model through ``torch.compile`` first.
    return_logits
        keep the ``(n, classes)`` logits in the result.
    weights
        an explicit weights file for a zoo model (its sha256 is checked).
    preprocessing
        a :class:`replicate.models.Preprocessing` for user models (default: pixels
        scaled to [0, 1], NCHW) or to override a card's.
    name
        the result's model name (default: the card's or the class's name).
    cache_key
        a string naming a callable's identity so its results can be cached.
    allow_remote_code
        allow a ``"hub:owner/repo:entry"`` model, which downloads and runs the Python
        code of that repository (off by default; see docs/security.md).

    Returns
    -------
    EvalResult
        per-image predictions and correctness, counts per class, provenance.
    """
    batch_size = _batch_size(batch_size, device)
    if threads is not None:
        threads = check_int("threads", threads, minimum=1)
    ds = _as_imageset(dataset)
    if len(ds) == 0:
        raise fail(f"dataset {ds.name!r}", "an empty set (0 images)", "at least one image for evaluate()",
                   "An accuracy of no images is undefined; check the selection that made the set.")
    if _is_prediction_model(model_or_name):
        from replicate.models.predictions import evaluate_prediction_model

        return evaluate_prediction_model(model_or_name, ds, name=name)
    dev = _resolve_device(device)
    if len(ds) and not ds.is_labeled:
        unl = int((ds.labels < 0).sum())
        raise fail(
            f"labels of {ds.name!r}",
            f"{unl} unlabelled images (label -1)",
            "labelled for evaluate()",
            "Use replicate.predict() for unlabelled images, or "
            "dataset.select(dataset.labels >= 0).",
        )
    runner = _prepare(
        model_or_name,
        weights=weights,
        preprocessing=preprocessing,
        name=name,
        cache_key=cache_key,
        device=dev,
        compile=compile,
        allow_remote_code=allow_remote_code,
    )
    _check_images(runner, ds)
    _check_classes(runner, ds)
    inf = _infer(
        runner,
        ds,
        batch_size=batch_size,
        device=dev,
        threads=threads,
        progress=progress,
        cache=cache,
        expected_classes=len(ds.class_names),
    )
    _check_classes(runner, ds)
    labels = ds.labels
    top5_correct = None
    if inf.top5 is not None:
        top5_correct = (inf.top5 == labels[:, None]).any(1)
    params = {
        "preprocessing": runner.preprocessing.to_dict(),
        "batch_size": batch_size,
        "device": dev,
        "threads": threads,
        "threads_used": runner.threads_used if not inf.cached else None,
        "compile": compile,
        "cached": inf.cached,
        "seconds": round(inf.seconds, 4),
        "cache_file": inf.cache_file,
        "image_fingerprint": ds.image_fingerprint,
    }
    return make_result(
        model=runner.name,
        dataset=ds.name,
        dataset_fingerprint=labels_fingerprint(ds.image_fingerprint, labels),
        predictions=inf.predictions,
        labels=labels,
        class_names=ds.class_names,
        top5_correct=top5_correct,
        logits=inf.logits if return_logits else None,
        ids=ds.ids,
        source=runner.source,
        weights_sha256=runner.weights_sha256,
        params=params,
    )


def _check_classes(runner: _Runner, ds: ImageSet) -> None:
    k = len(ds.class_names)
    if runner.num_classes is not None and len(ds) and runner.num_classes != k:
        raise fail(
            f"classes of {ds.name!r}",
            k,
            f"{runner.num_classes}, the number of classes {runner.name} predicts",
            "Evaluate on a set with the model's classes (class_names in the model's order), "
            "or wrap the model to map its outputs to the set's classes.",
        )


def _is_prediction_model(model_or_name: Any) -> bool:
    from replicate.models._registry import ModelCard, get_card

    if isinstance(model_or_name, ModelCard):
        return model_or_name.kind == "predictions"
    if isinstance(model_or_name, str) and not model_or_name.startswith("hub:"):
        return get_card(model_or_name).kind == "predictions"
    return False


def predict(
    model_or_name: Any,
    dataset: ImageSet | str | os.PathLike[str],
    *,
    batch_size: int | None = None,
    device: Device = "auto",
    cache: bool = True,
    threads: int | None = None,
    progress: bool = False,
    weights: str | os.PathLike[str] | None = None,
    preprocessing: Any = None,
    cache_key: str | None = None,
    allow_remote_code: bool = False,
) -> np.ndarray:
    """Predicted class of every image (labels not needed), int64 ``(N,)``; cached like :func:`evaluate`.

    Parameters
    ----------
    model_or_name
        the model, as for :func:`evaluate` (a zoo name, a prediction-file entry, a
        :class:`replicate.models.ModelCard`, a ``torch.nn.Module``, a callable from a float
        batch to logits, or ``"hub:owner/repo:entry"`` with ``allow_remote_code=True``).
    dataset
        an :class:`~replicate.imageset.ImageSet` or a path ``replicate.load`` reads.
    batch_size, threads
        images per forward pass (``None``: ``CPU_BATCH_SIZE`` on the CPU,
        ``CUDA_BATCH_SIZE`` on a GPU); CPU threads (``None``: as for :func:`evaluate`).
    device
        ``"auto"`` (CUDA when present, else CPU), ``"cpu"`` or ``"cuda"``.
    cache
        read and write the on-disk cache (``$REPLICATE_HOME/evaluations``).
    progress
        show a tqdm progress bar.
    weights
        an explicit weights file for a zoo model (its sha256 is checked).
    preprocessing
        a :class:`replicate.models.Preprocessing` for user models or to override a card's
        (``None``: the card's, else pixels scaled to [0, 1], NCHW).
    cache_key
        a string naming a callable's identity so its predictions can be cached.
    allow_remote_code
        allow a ``"hub:owner/repo:entry"`` model (downloads and runs that repository's code).

    Returns
    -------
    numpy.ndarray
        the predicted class index of every image, int64 ``(N,)``.
    """
    batch_size = _batch_size(batch_size, device)
    ds = _as_imageset(dataset)
    dev = _resolve_device(device)
    runner = _prepare(
        model_or_name,
        weights=weights,
        preprocessing=preprocessing,
        name=None,
        cache_key=cache_key,
        device=dev,
        compile=False,
        allow_remote_code=allow_remote_code,
    )
    _check_images(runner, ds)
    inf = _infer(runner, ds, batch_size=batch_size, device=dev, threads=threads, progress=progress, cache=cache)
    return inf.predictions


def extract_features(
    model_or_name: Any,
    dataset: ImageSet | str | os.PathLike[str],
    *,
    batch_size: int | None = None,
    device: Device = "auto",
    cache: bool = True,
    threads: int | None = None,
    progress: bool = False,
    weights: str | os.PathLike[str] | None = None,
    preprocessing: Any = None,
    allow_remote_code: bool = False,
) -> np.ndarray:
    """Penultimate-layer features ``(N, D)`` float32 of every image (``forward_features``).

    Zoo models give their pooled features (64-d for the CIFAR ResNets); any module
    with a ``forward_features(x)`` method works. Cached like :func:`evaluate`.

    Parameters
    ----------
    model_or_name
        the model, as for :func:`evaluate` (a zoo name, a prediction-file entry, a
        :class:`replicate.models.ModelCard`, a ``torch.nn.Module``, a callable from a float
        batch to logits, or ``"hub:owner/repo:entry"`` with ``allow_remote_code=True``).
    dataset
        an :class:`~replicate.imageset.ImageSet` or a path ``replicate.load`` reads.
    batch_size, threads
        images per forward pass (``None``: ``CPU_BATCH_SIZE`` on the CPU,
        ``CUDA_BATCH_SIZE`` on a GPU); CPU threads (``None``: as for :func:`evaluate`).
    device
        ``"auto"`` (CUDA when present, else CPU), ``"cpu"`` or ``"cuda"``.
    cache
        read and write the on-disk cache (``$REPLICATE_HOME/evaluations``).
    progress
        show a tqdm progress bar.
    weights
        an explicit weights file for a zoo model (its sha256 is checked).
    preprocessing
        a :class:`replicate.models.Preprocessing` for user models or to override a card's
        (``None``: the card's, else pixels scaled to [0, 1], NCHW).
    allow_remote_code
        allow a ``"hub:owner/repo:entry"`` model (downloads and runs that repository's code).

    Returns
    -------
    numpy.ndarray
        float32 ``(N, D)``, one feature row per image in the set's order.
    """
    batch_size = _batch_size(batch_size, device)
    ds = _as_imageset(dataset)
    dev = _resolve_device(device)
    runner = _prepare(
        model_or_name,
        weights=weights,
        preprocessing=preprocessing,
        name=None,
        cache_key=None,
        device=dev,
        compile=False,
        need_features=True,
        allow_remote_code=allow_remote_code,
    )
    _check_images(runner, ds)
    key = None
    if cache and runner.identity is not None:
        key = _cache_key("features", runner.identity, ds.image_fingerprint, runner.preprocessing)
        hit = _cache_read(key)
        if hit is not None and hit["features"].shape[0] == len(ds):
            return hit["features"]
    _p, feats, _t = _run_logits(
        runner, ds, batch_size=batch_size, device=dev, threads=threads, progress=progress,
        keep_logits=True, features=True,
    )
    if feats is None:  # pragma: no cover - features=True always keeps them
        raise RuntimeError("feature extraction returned nothing")
    if key is not None:
        _cache_write(key, {"features": feats})
    return feats
