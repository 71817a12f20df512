"""Run the pool stages on a Dask distributed cluster (the optional ``dask`` extra).

The executor maps the per-chunk functions of :mod:`replicate.streaming` (decode and hash a
chunk, search it against the prepared reference index, count its keywords) over the
chunks of a source on the cluster's workers; the merges run on the driver, so the results
are those of the local executor. The reference index is scattered once to every worker
(``broadcast=True``), not shipped with each task.

``executor="local"`` (the default everywhere) needs nothing of this module; ``"dask"``
connects to the scheduler at ``address`` (else the Dask convention: the
``DASK_SCHEDULER_ADDRESS`` environment variable / ``scheduler-address`` config) or starts a
``LocalCluster`` on this machine. Before any work starts the executor checks that the
scheduler answers, that it has workers, that every worker imports the same replicate
code as the driver, and that every worker can read the source's files; a dedup
``feature_model`` other than :data:`WORKER_FEATURE_MODELS` is refused before connecting.

``import replicate`` does not import Dask; only :func:`connect` does.
"""

from __future__ import annotations

import hashlib
import os
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

from replicate._validation import check_choice, check_int, fail

__all__ = ["EXECUTORS", "WORKER_FEATURE_MODELS", "DaskExecutor", "connect", "resolve", "code_fingerprint",
           "check_feature_model"]

EXECUTORS = ("local", "dask")

# the dedup feature models a worker computes itself: replicate's copy-detection descriptor,
# whose weights ship inside the package and which replicate.models.descriptor loads once per
# process (so once per worker). A zoo or registered model would need its weights (or its
# Python registration) on every worker and is loaded per call: not run on a cluster.
WORKER_FEATURE_MODELS = ("copydesc32",)

# the modules whose code decides a pool stage's result: driver and workers must agree on them
_STAGE_MODULES = ("streaming.py", "sources.py", "hashing.py", "hamming.py", "keywords.py", "sampling.py", "_l2.py",
                  "dedup", "models/descriptor.py")  # the descriptor: features and the gate embed on workers


def check_feature_model(name: str, model: Any) -> None:
    """A clear error unless ``model`` (a dedup ``feature_model``) can run on Dask workers."""
    if model is not None and model not in WORKER_FEATURE_MODELS:
        raise fail(name, model, f"None or one of {WORKER_FEATURE_MODELS} with executor 'dask' (the workers compute "
                   "the pool's features; a zoo or registered model is not loaded on them)",
                   "Use feature_model = 'copydesc32', or run this dedup with executor = 'local'.")


def code_fingerprint() -> str:
    """sha256 over the replicate files the pool stages run (equal on driver and workers)."""
    root = Path(__file__).resolve().parent
    h = hashlib.sha256()
    for name in _STAGE_MODULES:
        p = root / name
        files = sorted(p.rglob("*.py")) if p.is_dir() else [p]
        for f in files:
            h.update(f.relative_to(root).as_posix().encode() + b"\0" + f.read_bytes())
    return h.hexdigest()


def _probes() -> tuple[Callable[[], Any], Callable[[Sequence[str]], Any]]:
    """Functions pickled by value (nested: cloudpickle does not import this module on the
    worker to load them), so that they run where replicate itself is not importable."""

    def package() -> Any:
        import importlib
        import sys

        try:
            mod = importlib.import_module("replicate.distributed")
        except Exception as exc:  # any import failure is the answer
            return {"error": f"{type(exc).__name__}: {exc}", "python": sys.executable}
        return {"fingerprint": mod.code_fingerprint(), "file": mod.__file__, "python": sys.executable}

    def readable(paths: Sequence[str]) -> list[str]:
        import os as _os

        return [p for p in paths if not _os.access(p, _os.R_OK)]

    return package, readable


class DaskExecutor:
    """A Dask client plus (when this executor started it) its local cluster.

    Use as a context manager, or call :meth:`close`. :meth:`imap` keeps at most
    ``in_flight`` tasks on the cluster and yields their results in submission order.
    """

    name = "dask"

    def __init__(self, client: Any, cluster: Any = None) -> None:
        self.client = client
        self.cluster = cluster
        self._checked: set[str] = set()

    def __enter__(self) -> DaskExecutor:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def close(self) -> None:
        self.client.close()
        if self.cluster is not None:
            self.cluster.close()

    @property
    def n_workers(self) -> int:
        return len(self.client.scheduler_info(n_workers=-1)["workers"])

    @property
    def n_threads(self) -> int:
        return sum(w["nthreads"] for w in self.client.scheduler_info(n_workers=-1)["workers"].values())

    def check_workers(self) -> None:
        """Every worker imports replicate with the driver's stage code (else a clear error)."""
        package, _ = _probes()
        found = self.client.run(package)
        mine = code_fingerprint()
        for worker, info in sorted(found.items()):
            if "error" in info:
                raise fail(f"Dask worker {worker}", info["error"], "able to import replicate",
                           f"Install replicate-testsets[dask] in the workers' environment ({info['python']}).",
                           error=RuntimeError)
            if info["fingerprint"] != mine:
                raise fail(f"Dask worker {worker}", f"replicate at {info['file']}",
                           "running the driver's replicate code (the pool stages' files differ)",
                           "Install the same replicate version on the driver and the workers.", error=RuntimeError)

    def check_paths(self, paths: Iterable[str | os.PathLike[str]], what: str = "source") -> None:
        """Every worker can read every path (else a clear error naming the first worker and path)."""
        _, readable = _probes()
        wanted = [str(Path(p).resolve()) for p in paths]
        key = "\0".join(wanted)
        if key in self._checked:
            return
        for worker, missing in sorted(self.client.run(readable, wanted).items()):
            if missing:
                raise fail(f"{what} path on Dask worker {worker}", missing[0], "readable by every worker",
                           "Put the source on storage the workers mount at the same path.",
                           error=FileNotFoundError)
        self._checked.add(key)

    def broadcast(self, obj: Any) -> Any:
        """``obj`` on every worker once; pass the returned future as a task argument.

        On a local cluster this executor started, the driver sends to the workers directly
        (on this 2-core box, CIFAR-10 train+test's prepared references reached 2 warm
        workers in 0.9-1.2 s instead of 2.2-2.5 s through the scheduler); on another
        cluster the client's own setting holds (Dask's default: through the scheduler,
        which the driver is known to reach)."""
        direct = True if self.cluster is not None else None  # None: the client's own setting
        return self.client.scatter([obj], broadcast=True, hash=False, direct=direct)[0]  # a list: scatter splits collections

    def imap(self, fn: Callable[..., Any], items: Iterable[Any], *args: Any, in_flight: int | None = None) -> Iterator[Any]:
        """``fn(item, *args)`` for each item on the cluster, results in order."""
        from distributed import KilledWorker

        limit = in_flight or max(2, 2 * self.n_threads)
        pending: deque[Any] = deque()
        it = iter(items)
        try:
            for item in it:
                pending.append(self.client.submit(fn, item, *args, pure=False))
                if len(pending) >= limit:
                    break
            while pending:
                fut = pending.popleft()
                try:
                    result = fut.result()
                except KilledWorker as exc:
                    raise RuntimeError(f"a Dask worker died on every try of task {exc.task!r} (the scheduler's "
                                       "allowed-failures); nothing of this stage was kept. Rerun when the cluster is "
                                       "healthy (a worker that runs out of memory: smaller chunk_size).") from exc
                nxt = next(it, None)
                if nxt is not None:
                    pending.append(self.client.submit(fn, nxt, *args, pure=False))
                yield result
        finally:
            for fut in pending:
                fut.cancel()


def connect(address: str | None = None, *, n_workers: int | None = None, timeout: float = 10.0) -> DaskExecutor:
    """A :class:`DaskExecutor`: the scheduler at ``address`` (else ``DASK_SCHEDULER_ADDRESS``),
    or a new local cluster of ``n_workers`` single-threaded worker processes (default: the CPUs)."""
    try:
        import dask
        import distributed
    except ImportError as exc:
        raise ImportError("executor='dask' needs Dask distributed: pip install 'replicate-testsets[dask]'") from exc
    address = address or dask.config.get("scheduler-address", None)
    if address:
        if n_workers is not None:
            raise fail("n_workers", n_workers, "None with a cluster address (the cluster has its workers)")
        try:
            client = distributed.Client(address, timeout=f"{timeout}s", set_as_default=False)
        except (OSError, TimeoutError) as exc:
            raise fail("address", address, "the address of a running Dask scheduler (no scheduler answered: "
                       f"{type(exc).__name__})", "Start one with `dask scheduler`, or leave the address unset for a "
                       "local cluster.", error=ConnectionError) from exc
        ex = DaskExecutor(client)
        try:
            client.wait_for_workers(1, timeout=timeout)
        except (OSError, TimeoutError) as exc:
            ex.close()
            raise fail("address", address, f"a Dask scheduler with at least one worker (none joined in {timeout:g} s)",
                       "Start workers with `dask worker ADDRESS`.", error=ConnectionError) from exc
    else:
        n = (os.cpu_count() or 1) if n_workers is None else check_int("n_workers", n_workers, minimum=1)
        cluster = distributed.LocalCluster(n_workers=n, threads_per_worker=1, processes=True, dashboard_address=":0")
        ex = DaskExecutor(distributed.Client(cluster, set_as_default=False), cluster)
    try:
        ex.check_workers()
    except Exception:
        ex.close()
        raise
    return ex


def resolve(executor: Any, address: str | None = None) -> tuple[DaskExecutor | None, bool]:
    """``(executor, owned)``: ``None`` for ``"local"``; a connected :class:`DaskExecutor` for
    ``"dask"`` (``owned``: the caller closes it) or the one passed in."""
    if isinstance(executor, DaskExecutor):
        return executor, False
    if not isinstance(executor, str):
        raise fail("executor", type(executor).__name__, f"one of {EXECUTORS} or a DaskExecutor", error=TypeError)
    name = check_choice("executor", executor, EXECUTORS)
    if name == "local":
        if address is not None:
            raise fail("address", address, "None with executor='local'", "Pass executor='dask'.")
        return None, False
    return connect(address), True
