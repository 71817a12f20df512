"""Finding weight files and checking their sha256.

Search order for a card's ``weights_file``: an explicit path; the weights shipped
inside the package (``replicate/data/weights``); the cache directory
(``$REPLICATE_HOME/weights``, default under the user's cache dir); each directory in
``$REPLICATE_WEIGHTS`` (``os.pathsep``-separated, searched recursively by file name);
then a download from the card's URL with ``torch.hub.download_url_to_file`` into the
cache. The sha256 is checked on every load.
"""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path

from replicate._validation import fail
from replicate.manifest import sha256_file
from replicate.models._registry import ModelCard

__all__ = [
    "home_dir",
    "weights_dirs",
    "find_local",
    "resolve_weights",
    "check_sha256",
    "WeightsError",
]

PACKAGE_WEIGHTS = Path(__file__).resolve().parent.parent / "data" / "weights"
PACKAGE_DATA = Path(__file__).resolve().parent.parent / "data"


class WeightsError(FileNotFoundError):
    """No weights file was found, or the one found does not match its card's sha256."""


def home_dir() -> Path:
    """replicate's cache root: ``$REPLICATE_HOME``, else the user's cache dir."""
    env = os.environ.get("REPLICATE_HOME")
    if env:
        return Path(env).expanduser()
    import platformdirs

    return Path(platformdirs.user_cache_dir("replicate"))


def weights_dirs() -> list[Path]:
    """Directories listed in ``$REPLICATE_WEIGHTS`` (``os.pathsep``-separated)."""
    env = os.environ.get("REPLICATE_WEIGHTS", "")
    return [Path(p).expanduser() for p in env.split(os.pathsep) if p.strip()]


@lru_cache(maxsize=256)
def _sha_cached(path: str, size: int, mtime_ns: int) -> str:
    return sha256_file(path)


def file_sha256(path: str | os.PathLike[str]) -> str:
    """sha256 of a file (memoised on path, size and mtime within this process)."""
    st = os.stat(path)
    return _sha_cached(str(Path(path).resolve()), st.st_size, st.st_mtime_ns)


def check_sha256(path: str | os.PathLike[str], expected: str | None, what: str = "weights") -> str:
    """Return the file's sha256 after checking it against ``expected`` (full digest or prefix)."""
    found = file_sha256(path)
    if expected and not found.startswith(expected.lower()):
        raise WeightsError(
            f"{what} file {str(path)!r} has sha256 {found}; must be {expected} "
            "(the published file). The file is corrupt, truncated or a different release: "
            "delete it and let replicate download it again, or pass the right file."
        )
    return found


def _search_dir(root: Path, filename: str) -> Path | None:
    if not root.is_dir():
        return None
    direct = root / filename
    if direct.is_file():
        return direct
    for dirpath, _dirs, files in os.walk(root):
        if filename in files:
            return Path(dirpath) / filename
    return None


def _candidates(card: ModelCard) -> list[tuple[str, Path]]:
    """(description, directory) pairs in search order (explicit path excluded)."""
    out = [("package data", PACKAGE_DATA if card.kind == "predictions" else PACKAGE_WEIGHTS)]
    out.append(("cache ($REPLICATE_HOME)", home_dir() / "weights"))
    out += [("$REPLICATE_WEIGHTS", d) for d in weights_dirs()]
    return out


def find_local(card: ModelCard) -> Path | None:
    """The first local file named ``card.weights_file`` in the search order, or None."""
    if not card.weights_file:
        return None
    for _desc, d in _candidates(card):
        hit = _search_dir(d, card.weights_file)
        if hit is not None:
            return hit
    return None


def _download_allowed(download: bool | None) -> bool:
    if download is not None:
        return download
    return os.environ.get("REPLICATE_OFFLINE", "") in ("", "0", "false", "False")


def _verified(path: Path, card: ModelCard) -> tuple[Path, str]:
    return path, check_sha256(path, card.sha256, what=f"{card.name} weights")


def resolve_weights(
    card: ModelCard | str,
    explicit: str | os.PathLike[str] | None = None,
    *,
    download: bool | None = None,
) -> Path:
    """The verified weights file of ``card`` (see the module docstring for the order).

    ``download=None`` downloads unless ``$REPLICATE_OFFLINE`` is set. Raises
    :class:`WeightsError` naming every place searched when nothing is found, and on a
    sha256 mismatch naming the expected and found digests and the path.
    """
    return resolve_weights_sha(card, explicit, download=download)[0]


def resolve_weights_sha(
    card: ModelCard | str,
    explicit: str | os.PathLike[str] | None = None,
    *,
    download: bool | None = None,
) -> tuple[Path, str]:
    """Like :func:`resolve_weights`, also returning the file's checked sha256."""
    if not isinstance(card, ModelCard):
        from replicate.models._registry import get_card

        card = get_card(card)
    if explicit is not None:
        p = Path(explicit).expanduser()
        if not p.is_file():
            raise fail(
                "weights",
                str(explicit),
                "an existing file",
                f"Pass the path of {card.weights_file or 'the weights file'} for {card.name!r}.",
                error=WeightsError,
            )
        return _verified(p, card)
    if not card.weights_file:
        raise WeightsError(f"model {card.name!r} has no weights file; pass weights=PATH.")
    looked: list[str] = []
    for desc, d in _candidates(card):
        hit = _search_dir(d, card.weights_file)
        if hit is not None:
            return _verified(hit, card)
        looked.append(f"{d} ({desc}{'' if d.is_dir() else ', missing'})")
    if not weights_dirs():
        looked.append("$REPLICATE_WEIGHTS (not set)")
    target = home_dir() / "weights" / card.weights_file
    if card.url and _download_allowed(download):
        try:
            return _download(card, target)
        except WeightsError:
            raise
        except Exception as exc:  # noqa: BLE001 - network errors vary; report them all
            looked.append(f"{card.url} (download failed: {type(exc).__name__}: {exc})")
    elif card.url:
        looked.append(f"{card.url} (download disabled)")
    else:
        looked.append("no public download URL for this file")
    raise WeightsError(
        f"no weights found for model {card.name!r}: file {card.weights_file!r} is not in "
        + "; ".join(looked)
        + f". Provide it: pass weights=PATH, copy it to {target.parent}, or add its folder to "
        "$REPLICATE_WEIGHTS"
        + (f", or download {card.url}" if card.url else "")
        + "."
    )


def _download(card: ModelCard, target: Path) -> tuple[Path, str]:
    """Download ``card.url`` to ``target`` atomically, checking the sha256 (torch.hub)."""
    from torch.hub import download_url_to_file

    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(target.name + f".part{os.getpid()}")
    try:
        download_url_to_file(str(card.url), str(tmp), progress=True)
        check_sha256(tmp, card.sha256, what=f"{card.name} weights (downloaded from {card.url})")
        os.replace(tmp, target)
    finally:
        if tmp.exists():
            tmp.unlink()
    return _verified(target, card)
