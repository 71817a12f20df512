"""The public API: every re-exported name resolves, and import stays light."""

from __future__ import annotations

import subprocess
import sys

import replicate


def test_every_public_name_resolves() -> None:
    for name in replicate.__all__:
        assert getattr(replicate, name) is not None, name


def test_evaluate_is_callable_and_a_module() -> None:
    from replicate.evaluate import EvalResult, evaluate

    assert replicate.evaluate.EvalResult is EvalResult
    assert callable(replicate.evaluate)
    assert replicate.evaluate.evaluate is evaluate


def test_import_does_not_load_torch() -> None:
    code = "import sys, replicate; replicate.ImageSet; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"


def test_unknown_attribute() -> None:
    import pytest

    with pytest.raises(AttributeError, match="has no attribute 'nope'"):
        replicate.nope  # noqa: B018
