"""The public API: every re-exported name resolves, and import stays light."""

from __future__ import annotations

import subprocess
import sys

import replicate


def test_every_public_name_resolves() -> None:
    for name in replicate.__all__:
        assert getattr(replicate, name) is not None, name


def test_evaluate_is_a_function_of_the_evaluation_module() -> None:
    import importlib
    import types

    from replicate.evaluation import EvalResult, evaluate
    from replicate.models.results import EvalResult as Result

    assert isinstance(replicate.evaluate, types.FunctionType)
    assert replicate.evaluate is evaluate
    assert replicate.EvalResult is EvalResult is Result  # one class, re-exported
    importlib.import_module("replicate.evaluation")  # importing the module leaves the function in place
    assert replicate.evaluate is evaluate


def test_results_and_predictions_do_not_import_evaluation() -> None:
    code = (
        "import sys; import replicate.models.predictions, replicate.models.results; "
        "print('replicate.evaluation' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"


def test_import_does_not_load_torch() -> None:
    code = "import sys, replicate; replicate.ImageSet; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"


def test_unknown_attribute() -> None:
    import pytest

    with pytest.raises(AttributeError, match="has no attribute 'nope'"):
        replicate.nope  # noqa: B018
