"""Agreement on the line (Baek et al. 2022): ALine-S / ALine-D and the method's own check."""

from __future__ import annotations

import json

import numpy as np
import pytest
from scipy import stats as sps

from replicate.stats.agreement import AgreementLine, agreement_on_the_line, pairwise_agreement


def _latent_models(rng, m=8, n_orig=4000, n_new=3000, shift=0.6, classes=10):
    """Models of varying skill on images of varying difficulty; the new set's images are harder.

    Model ``i`` is right on image ``x`` when ``skill_i + e_ix > difficulty_x`` (probit
    item-response model), otherwise it predicts a wrong class drawn per image and model.
    """
    skill = np.linspace(0.3, 2.0, m)
    out = []
    for n, d in ((n_orig, 0.0), (n_new, shift)):
        labels = rng.integers(0, classes, n)
        diff = rng.normal(d, 1.0, n)
        right = skill[:, None] + rng.normal(0, 1.0, (m, n)) > diff
        wrong = (labels + rng.integers(1, classes, (m, n))) % classes
        out.append((np.where(right, labels, wrong), labels))
    return out


def test_pairwise_agreement_counts_equal_predictions():
    p = np.array([[0, 1, 2, 3], [0, 1, 2, 0], [1, 1, 0, 0]])
    a = pairwise_agreement(p)
    np.testing.assert_allclose(a, [[1, 0.75, 0.25], [0.75, 1, 0.5], [0.25, 0.5, 1]])


def test_identical_sets_give_identity_line_and_original_accuracies():
    rng = np.random.default_rng(0)
    (po, yo), _ = _latent_models(rng)
    r = agreement_on_the_line(po, po, yo, labels_new=yo)
    assert r.slope == pytest.approx(1.0) and r.intercept == pytest.approx(0.0, abs=1e-12)
    np.testing.assert_allclose(r.predicted_s, r.accuracy_original)
    np.testing.assert_allclose(r.predicted_d, r.accuracy_original)
    assert r.mae_d == pytest.approx(0.0, abs=1e-12) and r.holds


def test_aline_predicts_a_harder_set_without_its_labels():
    rng = np.random.default_rng(1)
    (po, yo), (pn, yn) = _latent_models(rng)
    r = agreement_on_the_line(po, pn, yo, labels_new=yn)
    naive = float(np.mean(np.abs(r.accuracy_original - r.accuracy_new)))
    assert naive > 0.1  # a real shift
    assert r.mae_d < 0.2 * naive and r.mae_s < 0.2 * naive
    unlabelled = agreement_on_the_line(po, pn, yo)
    np.testing.assert_array_equal(unlabelled.predicted_d, r.predicted_d)  # labels_new only validates
    assert unlabelled.accuracy_new is None
    with pytest.raises(ValueError, match="labels_new"):
        _ = unlabelled.mae_d


def test_aline_d_solves_the_pair_equations():
    """ALine-D's probits satisfy the least-squares normal equations of the pair system."""
    rng = np.random.default_rng(2)
    (po, yo), (pn, _) = _latent_models(rng, m=5)
    r = agreement_on_the_line(po, pn, yo)
    z = sps.norm.ppf(r.predicted_d)
    zo = sps.norm.ppf(r.accuracy_original)
    i, j = r.pairs.T
    lhs = (z[i] + z[j]) / 2
    rhs = sps.norm.ppf(r.agreement_new) + r.slope * ((zo[i] + zo[j]) / 2 - sps.norm.ppf(r.agreement_original))
    resid = lhs - rhs
    grad = np.zeros(len(z))
    np.add.at(grad, i, resid / 2)
    np.add.at(grad, j, resid / 2)
    np.testing.assert_allclose(grad, 0.0, atol=1e-10)


def test_check_flags_a_broken_line():
    rng = np.random.default_rng(3)
    (po, yo), (pn, yn) = _latent_models(rng)
    pn = pn.copy()
    pn[2] = rng.permutation(pn[2])  # one mismatched prediction file
    r = agreement_on_the_line(po, pn, yo, labels_new=yn)
    assert not r.holds and any("agreement line does not hold" in w for w in r.warnings)
    ok = agreement_on_the_line(po, pn, yo, labels_new=yn, exclude=["model2"])
    assert ok.r2 > 0.95 and "model2" not in ok.names and ok.excluded == ("model2",)


def test_models_are_matched_by_name_and_round_trip():
    rng = np.random.default_rng(4)
    (po, yo), (pn, yn) = _latent_models(rng, m=4)
    names = ["a", "b", "c", "d"]
    orig = dict(zip(names, po))
    new = {k: pn[names.index(k)] for k in ["d", "b", "a", "c"]}
    r = agreement_on_the_line(orig, new, yo, labels_new=yn, original_name="o", new_name="n")
    ref = agreement_on_the_line(po, pn, yo, labels_new=yn, names=names)
    np.testing.assert_allclose(r.predicted_d, ref.predicted_d)
    back = AgreementLine.from_dict(json.loads(json.dumps(r.to_dict())))
    np.testing.assert_allclose(back.predicted_s, r.predicted_s)
    assert back.warnings == r.warnings and back.mae_d == pytest.approx(r.mae_d)
    assert "ALine-D" in r.summary() and list(r.to_dataframe().index) == names


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"predictions_new": np.zeros((3, 5), int)}, r"predictions_new rows == 3; must be 4"),
        ({"labels_original": np.zeros(7, int)}, r"len\(labels_original\) == 7; must be 10"),
        ({"labels_new": np.zeros(3, int)}, r"len\(labels_new\) == 3; must be 5"),
        ({"exclude": ["x"]}, r"exclude == \['x'\]; must be names of models"),
        ({"exclude": ["model0", "model1"]}, r"number of models == 2; must be >= 3"),
        ({"min_r2": 1.5}, r"min_r2 == 1.5; must be in \(0, 1\)"),
        ({"predictions_original": np.full((4, 10), 0.5)}, r"predictions_original.dtype == 'float64'"),
    ],
)
def test_bad_input(kwargs, match):
    rng = np.random.default_rng(5)
    args = {"predictions_original": rng.integers(0, 3, (4, 10)), "predictions_new": rng.integers(0, 3, (4, 5)),
            "labels_original": rng.integers(0, 3, 10)}
    args.update(kwargs)
    with pytest.raises((ValueError, TypeError), match=match):
        agreement_on_the_line(**args)


def test_bad_input_model_names_disagree():
    rng = np.random.default_rng(6)
    p = rng.integers(0, 3, (3, 10))
    with pytest.raises(ValueError, match=r"predictions_new models == \['c'\]; must be the same models"):
        agreement_on_the_line(dict(zip("abc", p)), dict(zip("abd", p)), p[0])
    with pytest.raises(ValueError, match=r"predictions_original shapes"):
        agreement_on_the_line({"a": p[0], "b": p[1][:5], "c": p[2]}, p, p[0])


def _published(shared, release, original, new):
    from replicate.models.predictions import load_predictions

    path = {"cifar": "data/cifar10_1/labels_and_model_predictions.npz", "imagenet": "data/imagenetv2/predictions.npz"}
    ps = load_predictions(shared / path[release])
    rn = ps.results(new)
    models = {r.model for r in rn}
    ro = [r for r in ps.results(original) if r.model in models]
    return ro, rn


@pytest.mark.shared
@pytest.mark.slow
@pytest.mark.parametrize(("new", "mae_d"), [("cifar10.1-v4", 0.0115), ("cifar10.1-v6", 0.0113)])
def test_cifar10_1_mae_pinned(shared, new, mae_d):
    """MAE of ALine-D on the 30 published CIFAR-10.1 models (measured in validation/validate_agreement.py)."""
    ro, rn = _published(shared, "cifar", "cifar10-test", new)
    r = agreement_on_the_line(ro, rn, labels_new=rn[0].labels)
    assert r.mae_d == pytest.approx(mae_d, abs=5e-4)
    assert r.r2 > 0.98 and abs(r.slope - r.accuracy_slope) < 0.05
    # the naive guess (new = original accuracy) is off by the whole drop
    assert np.mean(np.abs(r.accuracy_original - r.accuracy_new)) > 5 * r.mae_d


@pytest.mark.shared
@pytest.mark.slow
def test_imagenetv2_mismatched_file_breaks_the_line(shared):
    """``fv_16k``'s mismatched MatchedFrequency file fails the check; without it the line holds."""
    ro, rn = _published(shared, "imagenet", "imagenet-val", "imagenetv2-threshold0.7")
    r = agreement_on_the_line(ro, rn, labels_new=rn[0].labels)
    assert not r.holds and r.r2 < 0.95
    ok = agreement_on_the_line(ro, rn, labels_new=rn[0].labels, exclude=["fv_16k"])
    assert ok.holds and ok.r2 > 0.99 and ok.mae_d < 0.005


def _release_file(tmp_path, rng, new_labels=False):
    """A prediction file in the CIFAR-10.1 layout whose new set has predictions but (by default) no labels."""
    (po, yo), (pn, yn) = _latent_models(rng, m=6, n_orig=2000, n_new=1500)
    arrays = {"model_names": np.array([f"m{i}" for i in range(6)]), "pred_original": po.astype(np.int8),
              "labels_original": yo, "pred_new": pn.astype(np.int8)}
    if new_labels:
        arrays["labels_new"] = yn
    path = tmp_path / "preds.npz"
    np.savez(path, **arrays)
    return path, (po, yo, pn, yn)


def test_unlabelled_new_set_from_a_prediction_file(tmp_path):
    from replicate.stats import agreement_from_predictions

    path, (po, yo, pn, yn) = _release_file(tmp_path, np.random.default_rng(7))
    r = agreement_from_predictions(path, "new")
    ref = agreement_on_the_line(po, pn, yo, names=[f"m{i}" for i in range(6)])
    np.testing.assert_allclose(r.predicted_d, ref.predicted_d)
    assert r.accuracy_new is None and r.new_name == "new"
    with pytest.raises(ValueError, match=r"new == 'cifar10-test'; must be a set other than the original"):
        agreement_from_predictions(path, "cifar10-test")


def test_cli_compare_agreement_mode(tmp_path, capsys):
    from replicate.cli import main

    path, _ = _release_file(tmp_path, np.random.default_rng(8))
    assert main(["compare", "--predictions", str(path), "--new", "new", "--agreement", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["new_name"] == "new" and len(out["predicted_d"]) == 6 and out["accuracy_new"] is None
    assert main(["compare", "--predictions", str(path), "--agreement"]) != 0
    assert "--agreement == True; must be used with --predictions FILE --new NAME" in capsys.readouterr().err


def test_compare_joins_agreement_and_round_trips():
    from types import SimpleNamespace

    from replicate.stats import Comparison, compare

    rng = np.random.default_rng(9)
    (po, yo), (pn, yn) = _latent_models(rng, m=5, n_orig=1500, n_new=1000)

    def results(pred, y):
        return [SimpleNamespace(model=f"m{i}", n=len(y), n_correct=int((p == y).sum()), correct=p == y,
                                predictions=p, labels=y) for i, p in enumerate(pred)]

    c = compare(results(po, yo), results(pn, yn), bootstrap="none", agreement=True)
    assert c.agreement is not None and c.agreement.mae_d < 0.03
    assert "agreement on the line" in c.summary()
    d = json.loads(json.dumps(c.to_dict()))
    assert Comparison.from_dict(d).to_dict() == d
    plain = compare(results(po, yo), results(pn, yn), bootstrap="none")
    assert plain.agreement is None and plain.label_noise is None
    counts = {f"m{i}": (int((p == yo).sum()), len(yo)) for i, p in enumerate(po)}
    with pytest.raises(ValueError, match=r"predictions == None; must be per-image predictions and labels"):
        compare(counts, counts, agreement=True)


def test_report_carries_the_agreement_scatter():
    from types import SimpleNamespace

    from replicate.report import build_report, render
    from replicate.stats import compare

    rng = np.random.default_rng(10)
    (po, yo), (pn, yn) = _latent_models(rng, m=5, n_orig=1500, n_new=1000)

    def results(pred, y, ds):
        return [SimpleNamespace(model=f"m{i}", dataset=ds, n=len(y), n_correct=int((p == y).sum()), correct=p == y,
                                predictions=p, labels=y) for i, p in enumerate(pred)]

    c = compare(results(po, yo, "orig"), results(pn, yn, "new"), bootstrap="none", agreement=True)
    rep = build_report(c)
    names = [f.name for f in rep.figures]
    assert "agreement-0-new" in names
    fig = rep.figures[names.index("agreement-0-new")]
    assert fig.data[:4] == b"\x89PNG" and "agreement line" in fig.alt
    assert "agreement-0-new" in render(rep, "html")
