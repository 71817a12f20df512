"""Selection-frequency bias (Engstrom et al. 2020): beta-binomial mixture and jackknife corrections.

The full coverage study (1,000 simulations per annotator count) is
validation/selection_bias_simulation.py; here small seeded simulations of the same process.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
from scipy import special
from scipy import stats as sps

from replicate import ImageSet
from replicate.stats.selection_bias import (
    SelectionBiasCorrection,
    _bb_log,
    _Cells,
    _mixture_terms,
    correct_sampling_result,
    fit_beta_mixture,
    selection_bias_correction,
)

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "validation"))
import selection_bias_simulation as sim  # noqa: E402


def test_beta_binomial_log_pmf_matches_scipy():
    k = np.array([0, 3, 7, 10])
    n = np.full(4, 10)
    a, b = np.array([0.7, 5.0]), np.array([2.0, 1.3])
    ours = _bb_log(k.astype(float), n.astype(float), a, b)
    ref = np.stack([sps.betabinom.logpmf(k, 10, a[j], b[j]) for j in range(2)], axis=1)
    np.testing.assert_allclose(ours, ref, rtol=1e-12)


def test_mixture_score_is_the_gradient():
    cells = _Cells(np.full(6, 12), np.array([0, 2, 5, 8, 11, 12]), np.array([3.0, 5, 9, 4, 2, 7]), None)
    theta = np.array([0.3, np.log(2.0), np.log(6.0), np.log(3.0), np.log(1.5)])

    def total(t):
        return float(cells.total @ _mixture_terms(t, 2, cells)[0])

    grad = cells.total @ _mixture_terms(theta, 2, cells)[1]
    num = np.array([(total(theta + e) - total(theta - e)) / 2e-6 for e in np.eye(5) * 1e-6])
    np.testing.assert_allclose(grad, num, rtol=1e-5, atol=1e-6)


def test_fit_beta_mixture_recovers_a_known_mixture():
    rng = np.random.default_rng(0)
    s = sim._draw_s(rng, sim.ORIGINAL, 20_000)
    k = rng.binomial(20, s)
    mix = fit_beta_mixture(k, 20)
    true_mean = sum(w * a / (a + b) for w, a, b in zip(*sim.ORIGINAL.values()))
    assert mix.mean == pytest.approx(true_mean, abs=0.005)
    grid = np.linspace(0.05, 0.95, 19)
    true_cdf = sum(w * special.betainc(a, b, grid) for w, a, b in zip(*sim.ORIGINAL.values()))
    assert np.max(np.abs(mix.cdf(grid) - true_cdf)) < 0.02


def test_simulation_truth_is_consistent():
    tr = sim.truth()
    assert tr["gap"] == pytest.approx(tr["accuracy_original"] - tr["corrected_new"])
    assert 0.02 < tr["gap"] < 0.06


@pytest.mark.parametrize("n", [10, 40])
def test_naive_gap_biased_correction_recovers_truth(n):
    """Small seeded version of the validation: 4 simulations of the ImageNetV2 process."""
    tr = sim.truth()
    rng = np.random.default_rng([7, n])
    res = [sim.one(rng, n, ("mixture", "jackknife"), 100) for _ in range(4)]
    naive = np.mean([r["naive"] for r in res])
    mix = np.array([r["mixture"] for r in res])
    assert naive - tr["gap"] > 0.004  # the naive gap overstates the drop (bias shrinks with n)
    assert abs(mix[:, 0].mean() - tr["gap"]) < 0.4 * (naive - tr["gap"])
    assert np.sum((mix[:, 1] <= tr["gap"]) & (tr["gap"] <= mix[:, 2])) >= 3
    if n == 40:
        jk = np.array([r["jackknife"] for r in res])
        assert abs(jk[:, 0].mean() - tr["gap"]) < 0.4 * (naive - tr["gap"])


def _toy(rng, n=10, n_orig=3000, n_pool=9000, n_new=2000):
    s_o, s_p = sim._draw_s(rng, sim.ORIGINAL, n_orig), sim._draw_s(rng, sim.POOL, n_pool)
    k_o, k_p = rng.binomial(n, s_o), rng.binomial(n, s_p)
    c_o = rng.random(n_orig) < special.expit(sim.ALPHA + sim.BETA * s_o)
    c_p = rng.random(n_pool) < special.expit(sim.ALPHA - sim.SHIFT + sim.BETA * s_p)
    return k_o, c_o, k_p, c_p


def test_one_call_on_a_sample_matched_histogram_result():
    from replicate.sampling import sample_matched_histogram

    rng = np.random.default_rng(1)
    n = 10
    k_o, c_o, k_p, c_p = _toy(rng, n)
    pool = ImageSet(np.zeros((len(k_p), 2, 2, 3), np.uint8), np.zeros(len(k_p), int), ("a",),
                    metadata={"freq": k_p / n, "votes": k_p, "annotators": np.full(len(k_p), n),
                              "correct": c_p}, name="pool")
    res = sample_matched_histogram(pool, "freq", {"a": k_o / n}, 2000, bins=5, seed=0)
    ts = res.testset
    corr = correct_sampling_result(res, k_o, n, {"m": c_o}, pool, {"m": ts.metadata["correct"]}, n_bootstrap=100)
    direct = selection_bias_correction(k_o, n, {"m": c_o}, k_p, n, ts.metadata["votes"], n,
                                       {"m": ts.metadata["correct"]}, edges=np.linspace(0, 1, 6),
                                       n_bootstrap=100)
    for m in ("mixture", "jackknife"):
        np.testing.assert_allclose(corr.corrected_gap[m], direct.corrected_gap[m])
    assert corr.naive_gap[0] > corr.corrected_gap["mixture"][0]
    back = SelectionBiasCorrection.from_dict(json.loads(json.dumps(corr.to_dict())))
    np.testing.assert_allclose(back.upper["mixture"], corr.upper["mixture"])
    assert back.mixture_pool.a == pytest.approx(corr.mixture_pool.a)
    assert "naive gap" in corr.summary() and corr.bias("mixture")[0] > 0
    with pytest.raises(KeyError, match=r"pool.metadata\['k'\] == 'missing'"):
        correct_sampling_result(res, k_o, n, {"m": c_o}, pool, {"m": ts.metadata["correct"]}, votes="k")


def _args(**over):
    rng = np.random.default_rng(2)
    k_o, c_o, k_p, c_p = _toy(rng, 10, 300, 900, 200)
    args = dict(original_votes=k_o, original_annotators=10, correct_original=c_o[None], pool_votes=k_p,
                pool_annotators=10, new_votes=k_p[:200], new_annotators=10, correct_new=c_p[None, :200],
                n_bootstrap=50)
    args.update(over)
    return args


@pytest.mark.parametrize(
    ("over", "error", "match"),
    [
        ({"original_votes": np.r_[11, np.zeros(299, int)]}, ValueError,
         r"original_votes == 11; must be <= the number of annotators \(10\)"),
        ({"new_votes": np.full(200, 0.5)}, TypeError, r"new_votes.dtype == 'float64'; must be integer vote counts"),
        ({"pool_votes": np.full(900, -1)}, ValueError, r"pool_votes == -1; must be >= 0"),
        ({"edges": [0, 0.5, 1.2]}, ValueError, r"edges == \[0, 0.5, 1.2\]; must be strictly increasing bin edges "
                                               r"within \[0, 1\]"),
        ({"correct_new": np.ones((1, 150), bool)}, ValueError, r"correct_new images == 150; must be 200"),
        ({"correct_original": np.ones((1, 300), int)}, TypeError, r"correct_original == .*per-image correctness"),
        ({"pool_annotators": np.r_[np.full(450, 10), np.full(450, 12)]}, ValueError,
         r"annotators == \[10, 12\]; must be one number of annotators for every image with method 'jackknife'"),
        ({"methods": ["bootstrap"]}, ValueError, r"methods == 'bootstrap'; must be one of: 'mixture', 'jackknife'"),
        ({"n_components": 0}, ValueError, r"n_components == 0; must be >= 1"),
    ],
)
def test_bad_input(over, error, match):
    with pytest.raises(error, match=match):
        selection_bias_correction(**_args(**over))


def test_varying_annotators_allowed_for_the_mixture():
    ann = np.r_[np.full(450, 10), np.full(450, 12)]
    r = selection_bias_correction(**_args(pool_annotators=ann, methods=["mixture"]))
    assert r.methods == ("mixture",) and r.annotators == (10, 12)
