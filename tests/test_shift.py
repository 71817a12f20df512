"""Tests for replicate.shift: the dataset test, its statistics, covariate shift and the CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import make_imageset

from replicate import ImageSet
from replicate.shift import (
    ShiftResult,
    colour_stat_features,
    control_test,
    covariate_shift,
    dataset_test,
    delong_auc,
    image_statistics,
    phash_bits,
    pixel_features,
    remove_cross_duplicates,
    split_halves,
)
from replicate.shift.classifier import _fit_logistic
from replicate.shift.covariate import _energy_permutation

# --------------------------------------------------------------------------- helpers


def _noise_set(n: int, seed: int, name: str, shift: int = 0, classes: int = 4) -> ImageSet:
    """n 32x32 images of smooth noise; ``shift`` brightens every pixel (a covariate shift)."""
    rng = np.random.default_rng(seed)
    base = rng.normal(120, 40, size=(n, 8, 8, 3))
    img = np.repeat(np.repeat(base, 4, axis=1), 4, axis=2) + rng.normal(0, 10, size=(n, 32, 32, 3)) + shift
    images = np.clip(img, 0, 255).astype(np.uint8)
    labels = np.arange(n) % classes
    return ImageSet(images, labels, tuple(f"c{i}" for i in range(classes)), name=name)


FAST = {"features": "colour-stats", "permutations": 20, "near_duplicates": None}


# --------------------------------------------------------------------------- statistics


def _delong_bruteforce(scores, y):
    """DeLong et al. (1988), eqs. for V10/V01 written out as O(mn) loops (independent check)."""
    pos, neg = scores[y == 1], scores[y == 0]
    psi = (pos[:, None] > neg[None, :]) + 0.5 * (pos[:, None] == neg[None, :])
    v10, v01 = psi.mean(axis=1), psi.mean(axis=0)
    return psi.mean(), v10.var(ddof=1) / len(pos) + v01.var(ddof=1) / len(neg)


def test_delong_matches_definition_with_ties():
    rng = np.random.default_rng(1)
    scores = np.round(rng.normal(size=300) + np.r_[np.zeros(140), np.full(160, 0.7)], 1)  # many ties
    y = np.r_[np.zeros(140), np.ones(160)]
    auc, var = delong_auc(scores, y)
    ref_auc, ref_var = _delong_bruteforce(scores, y)
    assert auc == pytest.approx(ref_auc, abs=1e-12)
    assert var == pytest.approx(ref_var, rel=1e-10)
    # AUC = U / (m n) (Mann-Whitney identity; scipy's U of the positives)
    from scipy.stats import mannwhitneyu

    u = mannwhitneyu(scores[y == 1], scores[y == 0]).statistic
    assert auc == pytest.approx(u / (140 * 160), abs=1e-12)


def test_delong_needs_two_of_each():
    with pytest.raises(ValueError, match="at least 2 of each"):
        delong_auc(np.array([0.1, 0.2, 0.3]), np.array([0, 0, 1]))


def test_batched_logistic_matches_separate_scipy_fits():
    from scipy.optimize import minimize
    from scipy.special import expit

    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 6))
    x[:, 5] = x[:, 4] + 0.01 * rng.normal(size=200)  # collinear columns: the reparametrisation must cope
    y = np.stack([(x @ rng.normal(size=6) + rng.normal(size=200) > 0) for _ in range(3)], axis=1).astype(float)
    c = 0.5
    w, b, _ = _fit_logistic(x, y, c, max_iter=500, tol=1e-10)
    for p in range(3):
        # reference: sum logloss + ||w||^2 / (2C), intercept unpenalised (scikit-learn's objective)
        def f(t, p=p):
            z = x @ t[:6] + t[6]
            return np.logaddexp(0, z).sum() - y[:, p] @ z + t[:6] @ t[:6] / (2 * c)

        def g(t, p=p):
            r = expit(x @ t[:6] + t[6]) - y[:, p]
            return np.r_[x.T @ r + t[:6] / c, r.sum()]

        ref = minimize(f, np.zeros(7), jac=g, method="BFGS", options={"gtol": 1e-10}).x
        np.testing.assert_allclose(w[:, p], ref[:6], atol=1e-5)
        assert b[p] == pytest.approx(ref[6], abs=1e-5)


def test_energy_statistic_is_scipy_energy_distance_squared():
    from scipy.stats import energy_distance

    rng = np.random.default_rng(2)
    xa, xb = rng.normal(size=80), rng.normal(0.8, 1.0, size=60)
    e, p = _energy_permutation(xa, xb, 99, rng)
    assert e == pytest.approx(energy_distance(xa, xb) ** 2, rel=1e-10)
    assert p == pytest.approx(0.01)  # a 0.8 sd shift beats every one of 99 permutations


def test_phash_bits_equal_imagehash():
    import imagehash
    from PIL import Image

    s = make_imageset(6)
    bits, hasher = phash_bits(s)
    assert bits.shape == (6, 64) and bits.dtype == bool
    for i in range(6):
        ref = imagehash.phash(Image.fromarray(s.images[i]), hash_size=8).hash.ravel()
        np.testing.assert_array_equal(bits[i], ref, err_msg=hasher)


def test_features_shapes_and_values():
    s = make_imageset(7)
    px = pixel_features(s)
    assert px.shape == (7, 192)
    # the first 8x8 block of image 0, channel 0, is the mean of its 4x4 pixels
    assert px[0, 0] == pytest.approx(s.images[0, :4, :4, 0].mean() / 255, rel=1e-6)
    cs = colour_stat_features(s)
    assert cs.shape == (7, 50) and np.all(np.isfinite(cs))
    assert cs[0, 0] == pytest.approx(s.images[0, ..., 0].mean() / 255, rel=1e-5)
    np.testing.assert_allclose(cs[:, 26:].reshape(7, 3, 8).sum(axis=2), 1.0, rtol=1e-6)  # histograms
    with pytest.raises(ValueError, match="a divisor of the image size"):
        pixel_features(s, size=5)


def test_image_statistics_constant_image():
    img = np.zeros((1, 32, 32, 3), np.uint8)
    img[..., 0] = 255  # pure red: saturation 1, no edges
    st = image_statistics(ImageSet(img)).iloc[0]
    assert st["mean_r"] == 1.0 and st["mean_g"] == 0.0
    assert st["saturation"] == pytest.approx(1.0)
    assert st["contrast"] == pytest.approx(0.0, abs=1e-7)
    assert st["brightness"] == pytest.approx(0.299, abs=1e-6)  # BT.601 luma of red


# --------------------------------------------------------------------------- the dataset test


def test_detects_a_brightness_shift_and_not_a_null():
    a = _noise_set(240, 0, "a")
    shifted = dataset_test(a, _noise_set(240, 1, "b", shift=12), **FAST)
    same = dataset_test(a, _noise_set(240, 2, "c"), **FAST)
    assert shifted.accuracy > 0.9 and shifted.p_value == pytest.approx(1 / 21)
    assert shifted.distinguishable and shifted.auc_ci[0] > 0.9
    assert not same.distinguishable
    assert same.accuracy_ci[0] < 0.5 < same.accuracy_ci[1]


def test_sample_is_balanced_stratified_and_folds_disjoint():
    a = _noise_set(100, 0, "a")
    # b has many more c0 and no c3 images
    b = _noise_set(200, 1, "b")
    b = b.select(b.labels != 3)
    r = dataset_test(a, b, folds=4, **FAST)
    assert dict(r.class_n) == {"c0": 25, "c1": 25, "c2": 25}
    assert dict(r.classes_dropped) == {"c3": (25, 0)}
    assert r.n_per_set == 75 and r.n_total == 150
    assert len(np.unique(r.ids)) == 150  # every image once: in exactly one test fold
    for f in range(4):
        in_fold = r.folds == f
        assert in_fold[~r.is_b].sum() == in_fold[r.is_b].sum()  # each fold balanced between sets
    assert sum(r.fold_n) == 150 and sum(r.fold_correct) == r.n_correct
    assert sum(r.class_correct.values()) == r.n_correct


def test_max_per_set_keeps_class_proportions():
    a, b = _noise_set(200, 0, "a"), _noise_set(200, 1, "b")
    r = dataset_test(a, b, max_per_set=40, **FAST)
    assert r.n_per_set == 40 and dict(r.class_n) == {"c0": 10, "c1": 10, "c2": 10, "c3": 10}


def test_same_seed_same_result_other_seed_other_sample():
    a, b = _noise_set(120, 0, "a"), _noise_set(120, 1, "b", shift=4)
    r1, r2 = dataset_test(a, b, seed=3, **FAST), dataset_test(a, b, seed=3, **FAST)
    assert r1.n_correct == r2.n_correct and r1.p_value == r2.p_value
    np.testing.assert_array_equal(r1.scores, r2.scores)
    r3 = dataset_test(a, b, seed=4, **FAST)
    assert not np.array_equal(r1.folds, r3.folds)


def test_exact_cross_duplicates_are_removed_from_both_sets():
    a = _noise_set(80, 0, "a")
    b0 = _noise_set(80, 1, "b")
    images = np.array(b0.images)
    images[:5] = a.images[10:15]  # five of a's images also appear in b
    b = ImageSet(images, b0.labels, b0.class_names, name="b")
    a2, b2, rec = remove_cross_duplicates(a, b, near_duplicates=None)
    assert len(a2) == 75 and len(b2) == 75
    assert rec["exact_hashes"] == 5 and rec["removed_ids_a"] == sorted(a.ids[10:15].tolist())
    r = dataset_test(a, b, **FAST)
    assert r.duplicates["removed_a"] == 5 and not set(r.ids) & set(a.ids[10:15])


def test_near_duplicate_detector_is_pluggable():
    a, b = _noise_set(80, 0, "a"), _noise_set(80, 1, "b")
    calls = []

    def detector(x, y):
        calls.append((x.name, y.name))
        return [x.ids[0], x.ids[1]], [y.ids[7]]

    r = dataset_test(a, b, near_duplicates=detector, features="colour-stats", permutations=5)
    assert calls == [("a", "b")]
    assert r.duplicates["removed_a"] == 2 and r.duplicates["removed_b"] == 1
    assert r.duplicates["near_method"] == "detector"
    assert a.ids[0] not in r.ids and b.ids[7] not in r.ids


def test_near_duplicates_auto_uses_replicate_dedup():
    a = make_imageset(40, seed=0, name="a")
    b0 = make_imageset(40, seed=1, name="b")
    images = np.array(b0.images)
    noise = np.random.default_rng(0).integers(-2, 3, size=(3, 32, 32, 3))
    images[:3] = np.clip(a.images[5:8].astype(int) + noise, 0, 255)  # three near-copies of a's images
    b = ImageSet(images, b0.labels, b0.class_names, name="b")
    _, _, rec = remove_cross_duplicates(a, b, near_duplicates="auto")
    assert rec["exact_hashes"] == 0
    assert rec["removed_ids_a"] == ["a/000005", "a/000006", "a/000007"]
    assert rec["removed_ids_b"] == ["b/000000", "b/000001", "b/000002"]
    assert rec["near_method"].startswith("replicate.dedup.find_near_duplicates")


def test_callable_features_and_result_outputs():
    a, b = _noise_set(100, 0, "a"), _noise_set(100, 1, "b", shift=20)

    def mean_colour(s):
        return np.asarray(s.images, dtype=np.float32).mean(axis=(1, 2))

    r = dataset_test(a, b, features=mean_colour, permutations=10, top=5, near_duplicates=None)
    assert isinstance(r, ShiftResult) and r.features == "mean_colour"
    d = r.to_dict()
    json.dumps(d, allow_nan=False)
    assert d["n_correct"] == r.n_correct and d["accuracy_ci"] == list(r.accuracy_ci)
    assert d["auc_ci_method"].startswith("delong") and len(d["null_auc"]) == 10
    assert len(r.top_a) == 5 and set(r.top_a) <= set(a.ids) and set(r.top_b) <= set(b.ids)
    assert r.top_b_scores == tuple(sorted(r.top_b_scores, reverse=True))
    for i in r.top_a + r.top_b:
        assert f"alt='{i}'" in r.gallery_html
    assert r.gallery_html.count("data:image/png;base64,") == 10
    text = r.summary()
    assert f"{r.n_correct}/{r.n_total}" in text and "Clopper-Pearson" in text and "DeLong" in text
    assert "10 permutations cannot give p < alpha=0.05" in text and "use at least 19" in text
    df = r.to_dataframe()
    assert len(df) == r.n_total and df["correct"].sum() == r.n_correct


def test_results_round_trip_through_json():
    from replicate._results import Result
    from replicate.shift import CovariateShiftResult

    a, b = _noise_set(60, 0, "a"), _noise_set(60, 1, "b", shift=20)
    r = dataset_test(a, b, features="colour-stats", permutations=10, folds=3, near_duplicates=None)
    d = json.loads(json.dumps(r.to_dict()))
    back = ShiftResult.from_dict(d)
    assert isinstance(back, Result) and back.to_dict() == r.to_dict()
    assert back.summary() == r.summary()
    assert back.accuracy_ci == r.accuracy_ci and isinstance(back.accuracy_ci, tuple)
    assert back.classes_dropped == r.classes_dropped and back.fold_correct == r.fold_correct
    np.testing.assert_array_equal(back.null_auc, r.null_auc)
    assert len(back.ids) == 0 and back.gallery_html == ""  # the per-image sample is not in the dict

    c = covariate_shift(a, b, permutations=20, energy_n=50)
    cd = json.loads(json.dumps(c.to_dict()))
    cback = CovariateShiftResult.from_dict(cd)
    assert isinstance(cback, Result) and cback.to_dict() == c.to_dict()
    assert cback.summary() == c.summary() and cback.differing() == c.differing()
    np.testing.assert_allclose(cback.table["energy_p_holm"], c.table["energy_p_holm"])
    with pytest.raises(ValueError, match=r"data == .*must be a CovariateShiftResult dict with the keys table"):
        CovariateShiftResult.from_dict({k: v for k, v in cd.items() if k != "table"})
    with pytest.raises(TypeError, match=r"data == \[\]; must be a mapping"):
        CovariateShiftResult.from_dict([])
    with pytest.raises(ValueError, match=r"data == .*must be a ShiftResult dict with the fields .*auc"):
        ShiftResult.from_dict({k: v for k, v in d.items() if k != "auc"})


def test_split_halves_disjoint_and_class_balanced():
    s = make_imageset(41)
    h1, h2 = split_halves(s, seed=1)
    assert not set(h1.ids) & set(h2.ids)
    assert h1.class_counts() == h2.class_counts()
    assert len(h1) == 20  # 41 images, 10 classes: the odd image of class 0 is left out


# --------------------------------------------------------------------------- bad input


def test_bad_input():
    a = _noise_set(60, 0, "a")
    small = ImageSet(np.zeros((4, 16, 16, 3), np.uint8), np.zeros(4, int), a.class_names)
    with pytest.raises(ValueError, match=r"image shape of b .*must be \(32, 32, 3\)"):
        dataset_test(a, small, **FAST)
    other = ImageSet(a.images, a.labels, ("x", "c1", "c2", "c3"), name="o")
    with pytest.raises(ValueError, match=r"class_names of b .*only in a: \['c0'\], only in b: \['x'\]"):
        dataset_test(a, other, **FAST)
    with pytest.raises(ValueError, match=r"images per set after sampling == .*must be >= folds \(5\)"):
        dataset_test(a.select(np.arange(3)), _noise_set(3, 1, "b"), **FAST)
    with pytest.raises(ValueError, match=r"features == 'resnet2000'; must be one of: .*Did you mean 'resnet20'"):
        dataset_test(a, _noise_set(60, 1, "b"), features="resnet2000")
    with pytest.raises(TypeError, match="features == 3; must be a zoo model name"):
        dataset_test(a, a, features=3)
    with pytest.raises(ValueError, match=r"features\('bad'\) output shape == \(2, 3\); must be \(60, D\)"):
        dataset_test(a, _noise_set(60, 1, "b"), features=_named("bad", lambda s: np.zeros((2, 3))),
                     permutations=0, near_duplicates=None)
    with pytest.raises(ValueError, match="folds == 1; must be >= 2"):
        dataset_test(a, a, folds=1)
    with pytest.raises(ValueError, match="C == -1.0; must be a positive finite number"):
        dataset_test(a, a, C=-1)
    with pytest.raises(TypeError, match="near_duplicates == 'yes'; must be 'auto', None or a callable"):
        dataset_test(a, _noise_set(60, 1, "b"), features="pixels", near_duplicates="yes")
    with pytest.raises(KeyError, match=r"near_duplicates\(a, b\) ids for b == \['nope'\]; must be ids of images in 'b'"):
        dataset_test(a, _noise_set(60, 1, "b"), features="pixels", near_duplicates=lambda x, y: ([], ["nope"]))
    with pytest.raises(TypeError, match=r"near_duplicates\(a, b\) == 'list'; must be a tuple"):
        dataset_test(a, _noise_set(60, 1, "b"), features="pixels", near_duplicates=lambda x, y: [])
    with pytest.raises(TypeError, match="b == 'x.npz'; must be an ImageSet"):
        dataset_test(a, "x.npz")
    with pytest.raises(ValueError, match=r"len\(b\) == 1; must be >= 2 images"):
        covariate_shift(a, a.select([0]))


def _named(name, fn):
    fn.__name__ = name
    return fn


# --------------------------------------------------------------------------- covariate shift


def test_covariate_shift_finds_brightness_not_noise():
    a = _noise_set(300, 0, "a")
    # 200 permutations: the smallest p (1/201) survives Holm over 7 statistics
    r = covariate_shift(a, _noise_set(300, 1, "b", shift=15), permutations=200, energy_n=200)
    row = r.table.set_index("statistic").loc["brightness"]
    assert row["cohens_d"] > 0.2 and row["ks_p"] < 1e-3 and row["energy_p"] == pytest.approx(1 / 201)
    assert "brightness" in r.differing()
    null = covariate_shift(a, _noise_set(300, 2, "c"), permutations=200, energy_n=200)
    assert null.differing() == []
    d = null.to_dict()
    json.dumps(d, allow_nan=False)
    assert len(d["table"]) == 7 and len(d["hash_bits"]["freq_a"]) == 64
    assert "pHash bit balance" in null.summary()


# --------------------------------------------------------------------------- real data


@pytest.mark.shared
def test_control_on_real_cifar_halves_is_at_chance(cifar_test):
    sub = cifar_test.select(np.random.default_rng(0).permutation(len(cifar_test))[:1200])
    for features in ("colour-stats", "pixels"):
        r = control_test(sub, features=features, permutations=50, seed=1, near_duplicates=None)
        # at chance: the permutation test does not reject, and the held-out accuracy lies
        # within the spread that shuffled set labels give
        assert r.p_value > 0.05, r.summary()
        assert abs(r.accuracy - 0.5) < 3 * np.std(r.null_accuracy), r.summary()
        assert abs(np.mean(r.null_auc) - 0.5) < 0.02


@pytest.mark.shared
def test_cifar_vs_imagenet_derived_pool_is_far_above_chance(cifar_test, candidate_pool):
    r = dataset_test(cifar_test, candidate_pool, features="colour-stats", max_per_set=600,
                     permutations=50, near_duplicates=None)
    assert set(r.classes_dropped) == {"airplane", "horse"}  # no such images in the pool
    assert r.accuracy_ci[0] > 0.7 and r.p_value == pytest.approx(1 / 51)


@pytest.mark.shared
def test_zoo_features_resnet20(shared, cifar_test, candidate_pool, monkeypatch, tmp_path):
    weights = shared / "weights"
    monkeypatch.setenv("REPLICATE_WEIGHTS", str(weights))
    monkeypatch.setenv("REPLICATE_HOME", str(tmp_path))
    rng = np.random.default_rng(0)
    a = cifar_test.select(rng.permutation(len(cifar_test))[:300])
    b = candidate_pool.select(rng.permutation(len(candidate_pool))[:300])
    r = dataset_test(a, b, features="resnet20", permutations=20, near_duplicates=None)
    assert r.features == "resnet20" and r.params["feature_dim"] == 64
    assert r.accuracy_ci[0] > 0.6 and r.p_value == pytest.approx(1 / 21)


# --------------------------------------------------------------------------- CLI


def test_cli_json_and_out(tmp_path, capsys):
    from replicate.cli import main

    pa, pb = tmp_path / "a", tmp_path / "b"
    _noise_set(80, 0, "a").save(pa)
    _noise_set(80, 1, "b", shift=20).save(pb)
    out = tmp_path / "out"
    code = main(["shift", str(pa), str(pb), "--features", "colour-stats", "--permutations", "10",
                 "--no-near-duplicates", "--json", "--out", str(out)])
    assert code == 0
    data = json.loads(capsys.readouterr().out)
    assert data["dataset_test"]["n_total"] == 160 and data["dataset_test"]["features"] == "colour-stats"
    assert data["covariate_shift"]["table"][0]["statistic"] == "mean_r"
    for name in ("shift.json", "gallery.html", "scores.csv", "covariates.csv", "manifest.json"):
        assert (out / name).is_file()
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["kind"] == "shift" and manifest["config"]["features"] == "colour-stats"
    code = main(["shift", str(pa), str(pb), "--features", "nope"])
    assert code == 2
    assert "features == 'nope'; must be one of" in capsys.readouterr().err
