"""Sessions for replicate: `nox -l` lists them, `nox` runs the tests.

Each session's virtualenv is reused between runs and sees the system's
site-packages, so an installed torch is reused, never reinstalled; the project is
reinstalled only when pyproject.toml changes.
"""

from __future__ import annotations

import os
from pathlib import Path

import nox

nox.options.sessions = ["tests"]
nox.options.reuse_existing_virtualenvs = True
nox.options.error_on_missing_interpreters = True

ROOT = Path(__file__).parent
VENV = {"venv_params": ["--system-site-packages"], "reuse_venv": True}


def _install(session: nox.Session) -> None:
    """Install replicate with its dev extras (skipped when already current)."""
    stamp = Path(session.virtualenv.location) / ".replicate-installed"
    key = (ROOT / "pyproject.toml").read_text()
    if stamp.exists() and stamp.read_text() == key:
        return
    session.install("-e", ".[dev]")
    stamp.write_text(key)


@nox.session(**VENV)
def tests(session: nox.Session) -> None:
    """Run the test suite (real-data tests skip where ../shared is absent)."""
    _install(session)
    session.run("python", "-m", "pytest", *(session.posargs or ["-q"]))


@nox.session(default=False, **VENV)
def browser(session: nox.Session) -> None:
    """Browser tests only (report screenshot, review app); fail, not skip, without Chromium."""
    _install(session)
    session.run("python", "-m", "pytest", "-m", "browser", "-q", *session.posargs, env={"REPLICATE_REQUIRE_BROWSER": "1"})


@nox.session(**VENV)
def lint(session: nox.Session) -> None:
    """Check style and common bugs with ruff."""
    _install(session)
    session.run("ruff", "check", "replicate", "tests", "benchmarks", "validation", "noxfile.py")


@nox.session(**VENV)
def typecheck(session: nox.Session) -> None:
    """Type-check the package with mypy."""
    _install(session)
    session.run("mypy", "replicate")


@nox.session(**VENV)
def demo(session: nox.Session) -> None:
    """The main job on the embedded default: new test set, evaluation, reanalysis, reports."""
    _install(session)
    session.run("replicate", "demo", "--out", "demo-out", *session.posargs)


@nox.session(name="replicate", default=False, **VENV)
def replicate_run(session: nox.Session) -> None:
    """A full run from a config: `nox -s replicate -- CONFIG [options]`."""
    if not session.posargs:
        session.error("give a config: nox -s replicate -- configs/cifar10-full.toml")
    _install(session)
    session.run("replicate", "run", *session.posargs)


def _scripts(folder: str, prefix: str) -> list[Path]:
    return sorted((ROOT / folder).glob(f"{prefix}*.py"))


@nox.session(default=False, **VENV)
def bench(session: nox.Session) -> None:
    """Run every benchmark; each writes benchmarks/results/<topic>.json."""
    _install(session)
    scripts = _scripts("benchmarks", "bench_")
    wanted = [a for a in session.posargs if not a.startswith("-")]
    flags = [a for a in session.posargs if a.startswith("-")]
    for script in scripts:
        if wanted and not any(w in script.stem for w in wanted):
            continue
        session.run("python", str(script), *flags)


@nox.session(default=False, **VENV)
def validate(session: nox.Session) -> None:
    """Real-data checks against ../shared (skipped with a reason when it is absent)."""
    _install(session)
    shared = Path(os.environ.get("REPLICATE_SHARED", ROOT.parent / "shared"))
    if not (shared / "README.md").is_file():
        session.skip(f"real data not available: {shared} does not exist (set REPLICATE_SHARED)")
    env = {"REPLICATE_SHARED": str(shared), "REPLICATE_WEIGHTS": str(shared / "weights")}
    wanted = [a for a in session.posargs if not a.startswith("-")]
    for script in _scripts("validation", "validate_"):
        if wanted and not any(w in script.stem for w in wanted):
            continue
        session.run("python", str(script), env=env)
