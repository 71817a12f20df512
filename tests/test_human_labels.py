"""Accuracy against human labels (CIFAR-10H-style votes) and the label-noise-adjusted gap."""

from __future__ import annotations

import json

import numpy as np
import pytest
from scipy import stats as sps

from replicate.stats import (
    HumanLabelAccuracy,
    human_label_accuracy,
    human_majority,
    label_noise_adjusted_gap,
)

VOTES = np.array([
    [9, 1, 0],   # clear class 0
    [2, 8, 0],   # clear class 1, label says 0 -> contested
    [5, 5, 0],   # tie 0/1, label 1 -> majority 1
    [0, 3, 3],   # tie 1/2, label 0 -> lowest tied index, 1 (contested)
    [0, 0, 10],  # clear class 2
    [4, 0, 6],   # split (top share 0.6)
])  # fmt: skip
LABELS = np.array([0, 0, 1, 0, 2, 2])


def test_majority_and_ties():
    maj, ties = human_majority(VOTES, LABELS)
    np.testing.assert_array_equal(maj, [0, 1, 1, 1, 2, 2])
    assert ties == 2
    np.testing.assert_array_equal(human_majority(VOTES)[0], [0, 1, 0, 1, 2, 2])


def test_accuracies_errors_and_intervals_by_hand():
    pred = np.array([[0, 1, 1, 2, 2, 0], [0, 0, 1, 0, 2, 2]])
    r = human_label_accuracy(pred, VOTES, LABELS, names=["a", "b"], split_below=0.7)
    np.testing.assert_array_equal(r.accuracy_labels.correct, [3, 6])
    np.testing.assert_array_equal(r.accuracy_majority.correct, [4, 4])
    share = VOTES / VOTES.sum(1, keepdims=True)
    soft_a = share[np.arange(6), pred[0]]
    assert r.soft[0] == pytest.approx(soft_a.mean())
    half = sps.t.ppf(0.975, 5) * soft_a.std(ddof=1) / np.sqrt(6)
    assert (r.soft_lower[0], r.soft_upper[0]) == pytest.approx((soft_a.mean() - half, soft_a.mean() + half))
    # model a: errors on images 1, 3, 5 (labels 0, 0, 2); contested = {1, 3}; split (< 0.7) = {2, 3, 5}
    assert r.n_contested == 2 and r.n_split == 3
    assert r.errors_contested.correct[0] == 2 and r.errors_contested.n[0] == 3
    assert r.errors_split.correct[0] == 2
    assert np.isnan(r.errors_contested.accuracy[1])  # model b makes no errors
    back = HumanLabelAccuracy.from_dict(json.loads(json.dumps(r.to_dict())))
    np.testing.assert_allclose(back.soft, r.soft)
    assert "majority" in r.summary() and list(r.to_dataframe().index) == ["a", "b"]


def test_label_noise_adjusted_gap_estimate_and_bound():
    rng = np.random.default_rng(0)
    pred_o = np.array([[0, 1, 1, 1, 2, 2], [0, 1, 1, 1, 2, 0]])
    pred_n = rng.integers(0, 3, (2, 6))
    lab_n = rng.integers(0, 3, 6)
    bound = label_noise_adjusted_gap(pred_o, VOTES, LABELS, pred_n, lab_n, names=["a", "b"])
    assert bound.kind == "upper bound" and "upper bound" in bound.assumption
    # against majorities model a gets 6/6 on the original instead of 4/6
    acc_n = (pred_n == lab_n).mean(1)
    assert bound.adjusted.gap[0] == pytest.approx(1.0 - acc_n[0])
    assert bound.observed.gap[0] == pytest.approx(4 / 6 - acc_n[0])
    est = label_noise_adjusted_gap(pred_o, VOTES, LABELS, pred_n, lab_n, VOTES, names=["a", "b"])
    maj_n = human_majority(VOTES, lab_n)[0]
    assert est.kind == "estimate"
    assert est.adjusted.gap[1] == pytest.approx((pred_o[1] == human_majority(VOTES, LABELS)[0]).mean()
                                               - (pred_n[1] == maj_n).mean())
    assert "estimate" in est.summary()


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"human_votes": VOTES / 10.0}, TypeError, r"human_votes.dtype == 'float64'; must be integer vote counts"),
        ({"human_votes": -VOTES}, ValueError, r"human_votes == -9.0; must be >= 0"),
        ({"human_votes": VOTES[:4]}, ValueError, r"len\(human_votes\) == 4; must be 6"),
        ({"labels": LABELS[:5]}, ValueError, r"len\(labels\) == 5; must be 6"),
        ({"predictions": np.array([[0, 1, 2, 3, 0, 0]])}, ValueError, r"predictions == 3; must be class indices "
                                                                      r"in \[0, 3\)"),
        ({"split_below": 0}, ValueError, r"split_below == 0; must be in \(0, 1\)"),
    ],
)
def test_bad_input(kwargs, error, match):
    args = {"predictions": np.zeros((1, 6), int), "human_votes": VOTES, "labels": LABELS}
    args.update(kwargs)
    with pytest.raises(error, match=match):
        human_label_accuracy(**args)


@pytest.mark.shared
@pytest.mark.slow
def test_cifar10h_on_published_cifar10_predictions(shared):
    """Pinned on CIFAR-10H (../shared test_extra_labels.npz) and the CIFAR-10.1 release's predictions."""
    z = np.load(shared / "data/cifar10/test_extra_labels.npz")
    d = np.load(shared / "data/cifar10_1/labels_and_model_predictions.npz")
    names = d["model_names"].astype(str)
    r = human_label_accuracy(d["pred_original"].astype(np.int64), z["cifar10h_counts"], z["labels"], names=names)
    assert (r.n_contested, r.n_split, r.n_ties, r.votes_min, r.votes_max) == (77, 603, 3, 47, 63)
    i = list(names).index("shake_shake_26_2x64d_SSI_cutout16")
    assert r.accuracy_labels.correct[i] == 9711  # the published 97.11%
    assert r.accuracy_majority.correct[i] == 9691
    assert r.soft[i] == pytest.approx(0.9342, abs=5e-5)
    # better models put a larger share of their errors on images humans dispute
    rho = sps.spearmanr(r.accuracy_labels.accuracy, r.errors_contested.accuracy).statistic
    assert rho > 0.8


def test_compare_adds_the_label_noise_gap():
    from types import SimpleNamespace

    from replicate.stats import Comparison, compare

    rng = np.random.default_rng(3)
    votes, labels = np.tile(VOTES, (50, 1)), np.tile(LABELS, 50)
    skill = np.array([0.5, 0.6, 0.7, 0.8, 0.9])[:, None]
    pred_o = np.where(rng.random((5, 300)) < skill, labels, rng.integers(0, 3, (5, 300)))
    lab_n = rng.integers(0, 3, 400)
    pred_n = np.where(rng.random((5, 400)) < skill - 0.1, lab_n, rng.integers(0, 3, (5, 400)))

    def results(pred, y):
        return [SimpleNamespace(model=f"m{i}", n=len(y), n_correct=int((p == y).sum()), correct=p == y,
                                predictions=p, labels=y) for i, p in enumerate(pred)]

    c = compare(results(pred_o, labels), results(pred_n, lab_n), bootstrap="none", human_votes_original=votes)
    ref = label_noise_adjusted_gap(pred_o, votes, labels, pred_n, lab_n, names=[f"m{i}" for i in range(5)])
    np.testing.assert_allclose(c.label_noise.adjusted.gap, ref.adjusted.gap)
    assert c.label_noise.kind == "upper bound" and "label-noise-adjusted" in c.summary()
    d = json.loads(json.dumps(c.to_dict()))
    assert Comparison.from_dict(d).to_dict() == d
    with pytest.raises(ValueError, match=r"human_votes_original == None; must be given when human_votes_new is"):
        compare(results(pred_o, labels), results(pred_n, lab_n), bootstrap="none",
                human_votes_new=np.ones((400, 3), int))
