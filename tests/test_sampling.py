"""Tests for replicate.sampling: stratified draws, shortfall policies, exclusions, fit tests."""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np
import pytest
from conftest import make_imageset
from scipy import stats

from replicate import ImageSet
from replicate.keywords import KeywordCounts, allocate, load_cifar10_1_counts
from replicate.sampling import goodness_of_fit, sample, sample_matched_histogram, total_variation


def _pool(per_cell: dict[tuple[str, str], int], seed: int = 0) -> ImageSet:
    """A pool with ``per_cell[(class, keyword)]`` images of each (class, keyword)."""
    classes = tuple(sorted({c for c, _ in per_cell}))
    labels, kws = [], []
    for (c, k), n in per_cell.items():
        labels += [classes.index(c)] * n
        kws += [k] * n
    n = len(labels)
    images = np.random.default_rng(seed).integers(0, 256, size=(n, 2, 2, 3), dtype=np.uint8)
    return ImageSet(images, labels, classes, metadata={"keyword": np.array(kws)}, name="pool")


@pytest.fixture
def pool() -> ImageSet:
    return _pool({("cat", "tabby"): 30, ("cat", "tomcat"): 10, ("dog", "puppy"): 25, ("dog", "mutt"): 5})


@pytest.fixture
def target() -> KeywordCounts:
    return KeywordCounts.from_dict({"cat": {"tabby": 12, "tomcat": 8}, "dog": {"puppy": 10, "mutt": 10}}, classes=("cat", "dog"))


def test_sample_hits_targets_and_is_reproducible(pool) -> None:
    target = KeywordCounts.from_dict({"cat": {"tabby": 12, "tomcat": 8}, "dog": {"puppy": 10, "mutt": 5}}, classes=("cat", "dog"))
    r = sample(pool, target, seed=3)
    assert r.n_selected == 35 and not r.shortfalls
    got = {(s.class_name, s.keyword): s.achieved for s in r.strata}
    assert got == {("cat", "tabby"): 12, ("cat", "tomcat"): 8, ("dog", "puppy"): 10, ("dog", "mutt"): 5}
    assert len(set(r.selected_ids)) == 35
    r2 = sample(pool, target, seed=3)
    assert r2.selected_ids == r.selected_ids
    assert sample(pool, target, seed=4).selected_ids != r.selected_ids
    sub = r.testset
    assert sub is not None and list(sub.ids) == list(r.selected_ids)
    assert sub.info["parents"][0]["name"] == "pool" and sub.info["parents"][0]["role"] == "candidate_pool"
    assert sub.info["parents"][1] == {"role": "original", "name": "dict"}
    # every selected image's keyword is its stratum's keyword
    assert np.array_equal(sub.metadata["stratum"], sub.metadata["keyword"])


def test_shortfall_report(pool, target) -> None:
    r = sample(pool, target, policy="report", seed=0)
    assert r.per_class()["dog"] == {"target": 20, "allocated": 15, "available": 30, "achieved": 15}
    (sf,) = r.shortfalls
    assert (sf.class_name, sf.keyword, sf.target, sf.available, sf.missing) == ("dog", "mutt", 10, 5, 5)
    d = json.loads(json.dumps(r.to_dict()))
    assert d["shortfalls"][0]["missing"] == 5 and d["n_selected"] == 35
    assert "shortfalls: 1 strata, 5 images missing" in r.summary()


def test_shortfall_redistribute_within_class(pool, target) -> None:
    r = sample(pool, target, policy="redistribute", seed=0)
    rows = {(s.class_name, s.keyword): s for s in r.strata}
    assert rows[("dog", "mutt")].achieved == 5
    assert rows[("dog", "puppy")].achieved == 15  # the 5 missing mutts moved to puppy
    assert rows[("cat", "tabby")].achieved == 12  # other classes untouched
    assert r.n_selected == 40 and len(r.shortfalls) == 1  # the shortfall is still recorded


def test_redistribute_goes_to_most_left() -> None:
    p = _pool({("cat", "a"): 3, ("cat", "b"): 20, ("cat", "c"): 8})
    t = KeywordCounts.from_dict({"cat": {"a": 10, "b": 5, "c": 5}}, classes=("cat",))
    r = sample(p, t, policy="redistribute")
    got = {s.keyword: s.achieved for s in r.strata}
    # a is 7 short; b has 15 left, c has 3: one at a time to the most left -> b gets all 7
    assert got == {"a": 3, "b": 12, "c": 5}


def test_policy_fail(pool, target) -> None:
    with pytest.raises(ValueError, match=r"size == 40; must be at most what the pool can give under policy 'fail' \(5 images short in 1 strata: dog/mutt 5<10\)"):
        sample(pool, target, policy="fail")
    ok = KeywordCounts.from_dict({"cat": {"tabby": 5}}, classes=("cat", "dog"))
    assert sample(pool, ok, policy="fail").n_selected == 5


@dataclass(frozen=True)
class _Dedup:
    flagged_ids: tuple[str, ...]


def test_exclusions(pool, target) -> None:
    tabby = pool.ids[pool.metadata["keyword"] == "tabby"]
    dedup = _Dedup(tuple(tabby[:20]))
    r = sample(pool, target, exclude={"near_duplicate": dedup, "blacklist": [tabby[20], "not-an-id"]}, policy="report")
    assert r.exclusions == {"near_duplicate": 20, "blacklist": 1}
    assert r.exclusions_not_in_pool == {"near_duplicate": 0, "blacklist": 1}
    assert not set(r.selected_ids) & set(tabby[:21])
    rows = {(s.class_name, s.keyword): s for s in r.strata}
    assert rows[("cat", "tabby")].available == 9 and rows[("cat", "tabby")].achieved == 9
    r2 = sample(pool, target, exclude=dedup)  # an object with flagged_ids alone
    assert r2.exclusions == {"near_duplicate": 20}
    r3 = sample(pool, target, exclude=list(tabby[:2]))  # a plain list is a blacklist
    assert r3.exclusions == {"blacklist": 2}
    with pytest.raises(TypeError, match=r"exclude == 'pool/000001'; must be an iterable of ids"):
        sample(pool, target, exclude="pool/000001")


def test_unmatched_keywords_reported(pool) -> None:
    t = KeywordCounts.from_dict({"cat": {"tabby": 5, "siamese": 4}}, classes=("cat", "dog"))
    r = sample(pool, t, policy="report")
    (sf,) = r.shortfalls
    assert sf.keyword == "siamese" and sf.available == 0 and sf.reason == "no pool keyword matches"
    assert r.unmatched_pool == {"cat": {"tomcat": 10}, "dog": {"mutt": 5, "puppy": 25}}


def test_sample_bad_input(pool, target) -> None:
    with pytest.raises(KeyError, match=r"column == 'kw'; must be a metadata column of pool 'pool' \(columns: keyword\)"):
        sample(pool, target, column="kw")
    unlabelled = ImageSet(pool.images, None, metadata=pool.metadata, name="u")
    with pytest.raises(ValueError, match=r"labels of pool 'u' == 'all 70 unlabelled \(-1\)'; must be labelled candidates"):
        sample(unlabelled, target)
    bad = KeywordCounts.from_dict({"cow": {"x": 1}}, classes=("cow",))
    with pytest.raises(ValueError, match=r"allocation class name == 'cow'; must be one of: 'cat', 'dog'"):
        sample(pool, bad)
    with pytest.raises(ValueError, match=r"policy == 'drop'; must be one of: 'fail', 'report', 'redistribute'"):
        sample(pool, target, policy="drop")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"seed == -1; must be >= 0"):
        sample(pool, target, seed=-1)
    with pytest.raises(TypeError, match=r"pool == 'ndarray'; must be an ImageSet"):
        sample(pool.images, target)  # type: ignore[arg-type]


def test_partly_unlabelled_pool_counts_exclusion(target) -> None:
    p = make_imageset(40)
    labels = p.labels.copy()
    labels[:4] = -1
    p2 = ImageSet(p.images, labels, p.class_names, metadata=p.metadata, name="p2")
    t = KeywordCounts.from_dict({"cat": {"cat_kw0": 1}}, classes=p.class_names)
    r = sample(p2, t)
    assert r.exclusions == {"unlabelled": 4}


def test_sample_with_allocation_and_save_manifest(tmp_path) -> None:
    p = make_imageset(300, classes=10)
    kc = KeywordCounts.from_dict(
        {c: {f"{c}_kw0": 5, f"{c}_kw1": 3, f"{c}_kw2": 2} for c in p.class_names}, classes=p.class_names
    )
    a = allocate(kc, 100, "v6")
    r = sample(p, a, seed=1, original="toy original")
    assert r.n_selected == 100 and r.per_class()["cat"]["achieved"] == 10
    out = r.testset.save(tmp_path / "new")
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["parents"][0]["name"] == "toy" and manifest["parents"][1]["name"] == "toy original"
    assert manifest["parents"][0]["fingerprint"] == p.fingerprint


# --------------------------------------------------------------------------- histogram matching


def test_matched_histogram_fills_from_neighbours() -> None:
    rng = np.random.default_rng(0)
    n = 400
    values = np.concatenate([rng.uniform(0, 0.2, 50), rng.uniform(0.2, 1.0, 350)])
    labels = np.zeros(n, dtype=int)
    p = ImageSet(rng.integers(0, 256, (n, 2, 2, 3), dtype=np.uint8), labels, ("a",), metadata={"freq": values})
    ref = {"a": np.repeat([0.1, 0.3, 0.5, 0.7, 0.9], [60, 10, 10, 10, 10])}  # 60% in the lowest bin
    r = sample_matched_histogram(p, "freq", ref, 100, bins=5, policy="redistribute", seed=0)
    rows = {s.keyword: s for s in r.strata}
    assert rows["[0, 0.2)"].target == 60 and rows["[0, 0.2)"].achieved == 50
    assert rows["[0.2, 0.4)"].achieved == 20  # the 10 missing come from the nearest bin
    assert r.n_selected == 100
    r2 = sample_matched_histogram(p, "freq", ref, 100, bins=5, policy="report", seed=0)
    assert r2.n_selected == 90 and r2.shortfalls[0].missing == 10
    with pytest.raises(TypeError, match=r"reference == 'list'; must be a mapping \{class: values\}"):
        sample_matched_histogram(p, "freq", [0.1], 10)


# --------------------------------------------------------------------------- goodness of fit


def test_fit_asymptotic_matches_scipy() -> None:
    obs, exp = [30, 50, 20], [0.3, 0.4, 0.3]
    t = goodness_of_fit(obs, exp, method="asymptotic")
    ref = stats.chisquare(obs, np.array(exp) * 100)
    g = stats.power_divergence(obs, np.array(exp) * 100, lambda_="log-likelihood")
    assert t.chi2 == pytest.approx(ref.statistic) and t.chi2_p == pytest.approx(ref.pvalue)
    assert t.g == pytest.approx(g.statistic) and t.g_p == pytest.approx(g.pvalue)
    assert t.p_method == "asymptotic" and t.dof == 2
    assert t.tvd == pytest.approx(0.5 * (0 + 0.1 + 0.1))


def test_fit_monte_carlo_agrees_with_asymptotic_for_large_counts() -> None:
    obs, exp = [220, 180, 100, 500], [0.2, 0.2, 0.1, 0.5]
    a = goodness_of_fit(obs, exp, method="asymptotic")
    m = goodness_of_fit(obs, exp, method="monte_carlo", n_resamples=20_000, seed=1)
    assert m.p_method == "monte_carlo" and m.n_resamples == 20_000
    assert abs(m.chi2_p - a.chi2_p) < 0.02 and abs(m.g_p - a.g_p) < 0.02
    assert m.chi2 == a.chi2  # statistics do not depend on the p-value method


def test_fit_exact_matches_hand_computation() -> None:
    # observed (3, 1, 0) against uniform shares, n = 4: the tables at least as extreme are the 6
    # orderings of (3, 1, 0) (probability 4/81 each) and the 3 of (4, 0, 0) (1/81 each): p = 27/81
    t = goodness_of_fit([3, 1, 0], [1, 1, 1])
    assert t.p_method == "exact"  # auto: small expected counts, few tables
    assert t.chi2_p == pytest.approx(27 / 81) and t.g_p == pytest.approx(27 / 81)
    m = goodness_of_fit([3, 1, 0], [1, 1, 1], method="monte_carlo", n_resamples=50_000, seed=2)
    assert abs(m.chi2_p - 27 / 81) < 0.01
    with pytest.raises(ValueError, match=r"method == 'exact'; must be used with at most 200000 tables"):
        goodness_of_fit([500, 500, 500, 500, 500], [1, 1, 1, 1, 1], method="exact")


@pytest.mark.parametrize("method", ["monte_carlo", "exact"])
def test_fit_small_expected_is_calibrated(method: str) -> None:
    # small expected counts: the p-value must not reject more than its level under the null
    p = np.array([0.5, 0.3, 0.1, 0.05, 0.05])
    rng = np.random.default_rng(5)
    pvals = []
    for _ in range(200):
        obs = rng.multinomial(20, p)
        t = goodness_of_fit(obs, p, method=method, n_resamples=2000, seed=int(rng.integers(1 << 30)))
        assert t.p_method == method
        pvals.append(t.chi2_p)
    rate = np.mean(np.array(pvals) <= 0.05)
    # the test is discrete, so at most about 5% (binomial 200 draws: 99.9% upper bound ~ 0.11)
    assert rate <= 0.11


def test_fit_edge_cases_and_bad_input() -> None:
    t = goodness_of_fit([0, 5, 0], [0, 1, 1])
    assert t.dropped_empty == 1 and len(t.categories) == 2
    inf = goodness_of_fit([3, 5], [0, 1])
    assert inf.chi2 == float("inf") and inf.chi2_p == 0.0
    with pytest.raises(ValueError, match=r"observed == \[-1.0, 2.0\]; must be non-negative integer counts"):
        goodness_of_fit([-1, 2], [1, 1])
    with pytest.raises(ValueError, match=r"method == 'exakt'; must be one of: 'auto', 'asymptotic', 'exact', 'monte_carlo'"):
        goodness_of_fit([1, 2], [1, 1], method="exakt")  # type: ignore[arg-type]
    assert total_variation([1, 1], [1, 0]) == pytest.approx(0.5)


def test_result_fit_report(pool, target) -> None:
    r = sample(pool, target, policy="report", seed=0)
    rep = r.fit(target, n_resamples=500)
    assert rep.overall.observed == (12, 8, 10, 5)
    assert rep.class_balance.categories == ("cat", "dog")
    assert set(rep.per_class) == {"cat", "dog"}
    assert rep.vs_original is not None and rep.vs_original.n == 35
    assert json.loads(json.dumps(rep.to_dict()))["overall"]["p_method"] in {"asymptotic", "monte_carlo"}


# --------------------------------------------------------------------------- real data


@pytest.mark.shared
def test_real_pool_v6_shortfalls(candidate_pool, shared) -> None:
    v6 = load_cifar10_1_counts(shared / "data/cifar10_1/keyword_metadata.json", "v6")
    a = allocate(v6, 2000, "v6")
    r = sample(candidate_pool, a, synonyms="tinyimagenet-wordnet-to-cifar10_1", policy="redistribute", seed=0,
               fingerprint=False)
    pc = r.per_class()
    # the pool has no airplane or horse images, and its only deer synset (bison) matches no deer keyword
    assert pc["airplane"]["achieved"] == pc["horse"]["achieved"] == pc["deer"]["achieved"] == 0
    assert all(pc[c]["achieved"] == 200 for c in ("automobile", "bird", "cat", "dog", "frog", "ship", "truck"))
    assert r.n_selected == 1400
    assert len(set(r.selected_ids)) == 1400


# --------------------------------------------------------------------------- CLI


def test_cli_sample(tmp_path, capsys) -> None:
    from replicate.cli import main

    p = make_imageset(300, classes=10)
    pool_path = p.save(tmp_path / "pool")
    kc = KeywordCounts.from_dict({c: {f"{c}_kw0": 2, f"{c}_kw1": 1} for c in p.class_names}, classes=p.class_names)
    target = tmp_path / "target.json"
    target.write_text(json.dumps(kc.to_dict()))
    ex = tmp_path / "dups.json"
    ex.write_text(json.dumps({"flagged_ids": [str(p.ids[0]), "missing-id"]}))
    args = ["sample", str(pool_path), "--target", str(target), "--size", "60", "--strategy", "v6", "--seed", "2",
            "--exclude", str(ex), "--out", str(tmp_path / "new"), "--json"]
    assert main(args) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["n_selected"] == 60 and data["exclusions"] == {"exclude:dups.json": 1}
    assert data["exclusions_not_in_pool"] == {"exclude:dups.json": 1}
    new = ImageSet.load(tmp_path / "new")
    assert len(new) == 60 and str(p.ids[0]) not in set(new.ids)
    saved = json.loads((tmp_path / "new" / "sampling.json").read_text())
    assert saved["selected_ids"] == list(new.ids)
    # same seed, same draw
    assert main(args[:-3] + ["--json"]) == 0
    assert json.loads(capsys.readouterr().out)["strata"] == data["strata"]
    assert main(["sample", str(pool_path), "--target", str(target), "--size", "6000", "--policy", "fail"]) == 2
    assert "must be at most what the pool can give under policy 'fail'" in capsys.readouterr().err


def test_exclude_accepts_a_dedup_result() -> None:
    """The dedup stage's result plugs in directly: its flagged_ids are excluded."""
    dedup = pytest.importorskip("replicate.dedup")
    p = make_imageset(60, seed=1, name="pool")
    orig = make_imageset(20, seed=2, name="orig")
    imgs = orig.images.copy()
    imgs[0], imgs[1] = p.images[5], p.images[17]  # two planted copies of pool images
    orig = ImageSet(imgs, orig.labels, orig.class_names, name="orig")
    found = dedup.find_near_duplicates(p, {"orig": orig})
    assert sorted(found.flagged_ids) == ["pool/000005", "pool/000017"]
    kc = KeywordCounts.from_dict({c: {f"{c}_kw{i}": 2 for i in range(3)} for c in p.class_names}, classes=p.class_names)
    r = sample(p, kc, exclude=found, policy="report")
    assert r.exclusions == {"near_duplicate": 2}
    assert r.n_selected == 58 and not set(found.flagged_ids) & set(r.selected_ids)
