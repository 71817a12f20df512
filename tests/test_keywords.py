"""Tests for replicate.keywords: counts, normalisation, matching and allocation."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from conftest import make_imageset
from hypothesis import given, settings
from hypothesis import strategies as st

from replicate.keywords import (
    KeywordCounts,
    allocate,
    keyword_counts,
    largest_remainder,
    load_cifar10_1_counts,
    load_cifar10_2_counts,
    load_keyword_counts,
    load_synonyms,
    match_keywords,
    normalize_keyword,
)

CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")


# --------------------------------------------------------------------------- normalisation


@pytest.mark.parametrize(
    "raw, norm",
    [
        ("Sports Car", "sports_car"),
        ("sports_car", "sports_car"),
        ("sports  cars", "sports_car"),
        ("cargo_ships", "cargo_ship"),
        ("Egyptian cat", "egyptian_cat"),
        ("ponies", "pony"),
        ("boxes", "box"),
        ("albatross", "albatross"),
        ("rana_pipiens", "rana_pipien"),  # same rule on both sides, so Latin names still meet
        ("bufo_viridis", "bufo_viridis"),
        ("bus", "bus"),
    ],
)
def test_normalize_keyword(raw: str, norm: str) -> None:
    assert normalize_keyword(raw) == norm


def test_normalize_keyword_rejects_non_strings() -> None:
    with pytest.raises(TypeError, match=r"keyword == 3; must be a string"):
        normalize_keyword(3)  # type: ignore[arg-type]


# --------------------------------------------------------------------------- KeywordCounts


def test_from_dict_orders_and_totals() -> None:
    kc = KeywordCounts.from_dict({"cat": {"tabby": 3, "cat": 5, "zero": 0}, "dog": {"puppy": 2.0}}, classes=("cat", "dog", "frog"))
    assert list(kc["cat"]) == ["cat", "tabby"]  # by count, zero dropped
    assert kc.class_totals() == {"cat": 8, "dog": 2, "frog": 0}
    assert kc.total == 10 and kc.n_keywords == 3
    df = kc.to_dataframe()
    assert list(df.columns) == ["class", "keyword", "count", "share_of_class"]
    assert df["count"].sum() == 10
    d = kc.to_dict()
    assert json.loads(json.dumps(d))["counts"]["cat"] == {"cat": 5, "tabby": 3}
    assert "cat" in kc.summary()


@pytest.mark.parametrize(
    "bad, err, pattern",
    [
        ({"cat": {"tabby": -1}}, ValueError, r"counts\['cat'\]\['tabby'\] == -1; must be a non-negative integer count"),
        ({"cat": {"tabby": 2.5}}, ValueError, r"== 2.5; must be a non-negative integer count"),
        ({"cat": {"tabby": "3"}}, TypeError, r"== '3'; must be a non-negative integer count"),
        ({"cat": {"tabby": float("nan")}}, ValueError, r"must be a non-negative integer count"),
        ({"kat": {"tabby": 1}}, ValueError, r"class name == 'kat'; must be one of: .*Did you mean 'cat'"),
    ],
)
def test_from_dict_bad_input(bad: dict, err: type, pattern: str) -> None:
    with pytest.raises(err, match=pattern):
        KeywordCounts.from_dict(bad, classes=CLASSES)


def test_restrict_and_top_k() -> None:
    kc = KeywordCounts.from_dict({"cat": {"a": 5, "b": 3, "c": 3}}, classes=("cat",))
    assert list(kc.top_k(2)["cat"]) == ["a", "b"]  # tie between b and c broken by name
    assert dict(kc.restrict({"cat": ["c"]})["cat"]) == {"c": 3}
    with pytest.raises(KeyError, match=r"keyword in class 'cat' == 'z'; must be one of the 3 keywords"):
        kc.restrict({"cat": ["z"]})


def test_keyword_counts_from_metadata(toy) -> None:
    kc = keyword_counts(toy)
    # make_imageset: 40 images, label i % 10, keyword f"{class}_kw{i % 3}"
    assert kc.class_totals() == {c: 4 for c in CLASSES}
    expected_cat = {}
    for i in range(40):
        if i % 10 == 3:
            k = f"cat_kw{i % 3}"
            expected_cat[k] = expected_cat.get(k, 0) + 1
    assert dict(kc["cat"]) == expected_cat


def test_keyword_counts_bad_input(toy) -> None:
    with pytest.raises(KeyError, match=r"column == 'kw'; must be a metadata column of 'toy' \(columns: keyword"):
        keyword_counts(toy, column="kw")
    unl = toy.select(np.arange(len(toy)))
    unl.labels[:3] = -1
    with pytest.raises(ValueError, match=r"3 of 40 unlabelled.*must be all labelled"):
        keyword_counts(unl)


# --------------------------------------------------------------------------- published tables


@pytest.mark.shared
def test_cifar10_1_tables(shared) -> None:
    path = shared / "data/cifar10_1/keyword_metadata.json"
    v4 = load_cifar10_1_counts(path, "v4")
    # keyword_counts_v4 in the CIFAR-10.1 release: 250 keywords (25 per class), 57,148 images
    assert v4.n_keywords == 250 and v4.total == 57148
    assert all(len(v4[c]) == 25 for c in CLASSES)
    assert v4["cat"]["tabby_cat"] == 1069 and v4["frog"]["leopard_frog"] == 384
    v6 = load_cifar10_1_counts(path, "v6")
    assert v6.class_totals() == {c: 200 for c in CLASSES}  # CIFAR-10.1 v6: 2,000 images, 200 per class
    with pytest.raises(ValueError, match=r"version == 'v5'; must be one of: 'v4', 'v6', 'v7'"):
        load_cifar10_1_counts(path, "v5")  # type: ignore[arg-type]
    assert load_keyword_counts(path, version="v7").source == "cifar10.1:keyword_counts_v7"


@pytest.mark.shared
def test_cifar10_2_counts_and_v6_gives_200_per_class(shared) -> None:
    path = shared / "data/cifar10_2/metadata.npz"
    test = load_cifar10_2_counts(path, "test")
    # CIFAR-10.2 (Lu et al. 2020): 200 test and 1,000 train images per class
    assert test.class_totals() == {c: 200 for c in CLASSES}
    assert load_cifar10_2_counts(path, "train").class_totals() == {c: 1000 for c in CLASSES}
    a = allocate(test, 2000, "v6")
    assert a.targets.class_totals() == {c: 200 for c in CLASSES}
    # counts that already sum to 200 per class are a fixed point of the v6 allocation
    assert a.targets.to_dict()["counts"] == test.to_dict()["counts"]
    a2 = allocate(load_cifar10_2_counts(path, "train"), 2000, "v6")
    assert a2.total == 2000 and a2.targets.class_totals() == {c: 200 for c in CLASSES}


@pytest.mark.shared
def test_v6_allocation_reproduces_published_cifar10_1_v6(shared) -> None:
    """CIFAR-10.1 v6 split 200 images per class in proportion to CIFAR-10's keyword counts.

    The release gives CIFAR-10's counts only for the top 25 keywords per class
    (keyword_counts_v4). For the class whose v6 keywords all lie in that top 25 and
    which had no shortfall (cat), largest-remainder allocation must reproduce the
    published v6 counts exactly. For automobile and dog it must differ only where the
    release moved images after a shortfall (the totals still agree).
    """
    path = shared / "data/cifar10_1/keyword_metadata.json"
    v4, v6 = load_cifar10_1_counts(path, "v4"), load_cifar10_1_counts(path, "v6")
    cat = allocate(v4.restrict({"cat": list(v6["cat"])}), 200, "v6", classes=["cat"])
    assert dict(cat.targets["cat"]) == dict(v6["cat"])
    auto = allocate(v4.restrict({"automobile": list(v6["automobile"])}), 200, "v6", classes=["automobile"])
    diff = {k: (auto.targets["automobile"].get(k, 0), n) for k, n in v6["automobile"].items() if auto.targets["automobile"].get(k, 0) != n}
    assert diff == {"coupe": (25, 26), "wagon": (10, 9)}  # one image moved from wagon to coupe
    # the whole published v6 table is a fixed point of the v6 allocation
    assert allocate(v6, 2000, "v6").targets.to_dict()["counts"] == v6.to_dict()["counts"]


@pytest.mark.shared
def test_v4_allocation_matches_published_v4(shared) -> None:
    """CIFAR-10.1 v4: ceil(count / 30) per top-25 keyword (2,028 images asked, 2,021 published)."""
    meta = json.loads((shared / "data/cifar10_1/keyword_metadata.json").read_text())
    v4 = load_cifar10_1_counts(shared / "data/cifar10_1/keyword_metadata.json", "v4")
    a = allocate(v4, strategy="v4", ratio=30)
    assert a.total == 2028
    published = {kw: len(ix) for kw, ix in meta["cifar10.1_v4_ti_indices_per_keyword"].items()}
    assert sum(published.values()) == 2021
    flat = {kw: n for (_, kw), n in a.targets.flat().items()}
    same = [kw for kw in flat if flat[kw] == published.get(kw, 0)]
    # 239 of 250 keywords got exactly ceil(count/30); 9 got no images and 2 (cruiser, cavalier) one more
    assert len(same) == 239


# --------------------------------------------------------------------------- allocation


def test_largest_remainder_rounding_and_ties() -> None:
    assert largest_remainder([1, 1, 1], 2).tolist() == [1, 1, 0]  # ties: by position
    assert largest_remainder([1, 1, 1], 2, names=["c", "a", "b"]).tolist() == [0, 1, 1]  # ties: by name
    assert largest_remainder([5, 3, 2], 7).tolist() == [4, 2, 1]  # 3.5, 2.1, 1.4 -> 3,2,1 + one to 0.5
    with pytest.raises(ValueError, match=r"weights == .*must be finite and non-negative"):
        largest_remainder([1, -1], 3)


def _counts_strategy() -> st.SearchStrategy:
    kw = st.dictionaries(st.text("abcdefgh", min_size=1, max_size=4), st.integers(1, 10_000), min_size=1, max_size=12)
    return st.dictionaries(st.sampled_from(CLASSES), kw, min_size=1, max_size=10)


@settings(max_examples=60, deadline=None)
@given(table=_counts_strategy(), size=st.integers(0, 5000), strategy=st.sampled_from(["v6", "proportional", "v4"]))
def test_allocation_sums_to_target(table: dict, size: int, strategy: str) -> None:
    kc = KeywordCounts.from_dict(table, classes=tuple(c for c in CLASSES if c in table))
    a = allocate(kc, size, strategy)  # type: ignore[arg-type]
    alloc = a.targets.flat()
    assert a.total == size
    assert all(v >= 0 for v in alloc.values())
    assert set(alloc) <= set(kc.top_k(25).flat())
    if strategy == "v6":
        per = np.array(list(a.targets.class_totals().values()))
        assert per.max() - per.min() <= 1  # exact class balance (leftovers one each)
    if strategy == "proportional":
        cells = kc.flat()
        tot = sum(cells.values())
        for key, n in cells.items():
            assert abs(alloc.get(key, 0) - size * n / tot) < 1  # within one of the exact share
    # deterministic
    assert allocate(kc, size, strategy).targets == a.targets  # type: ignore[arg-type]


def test_v4_ratio_and_size() -> None:
    kc = KeywordCounts.from_dict({"cat": {"a": 61, "b": 30, "c": 1}}, classes=("cat",))
    a = allocate(kc, strategy="v4", ratio=30)
    assert dict(a.targets["cat"]) == {"a": 3, "b": 1, "c": 1}  # ceil(61/30), ceil(30/30), ceil(1/30)
    assert a.params["ratio"] == 30.0
    with pytest.raises(ValueError, match=r"ratio == 30; must be None when size is given"):
        allocate(kc, 4, "v4", ratio=30)
    with pytest.raises(ValueError, match=r"size == None; must be given \(or ratio=\) for the v4 strategy"):
        allocate(kc, strategy="v4")


def test_allocate_bad_input() -> None:
    kc = KeywordCounts.from_dict({"cat": {"a": 2}}, classes=("cat", "dog"))
    with pytest.raises(ValueError, match=r"strategy == 'v5'; must be one of: 'v6', 'v4', 'proportional'"):
        allocate(kc, 10, "v5")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"keyword counts of class 'dog' == 'empty'; must be at least one keyword"):
        allocate(kc, 10, "v6")
    assert allocate(kc, 10, "v6", classes=["cat"]).total == 10
    with pytest.raises(ValueError, match=r"class name == 'cow'; must be one of: 'cat', 'dog'"):
        allocate(kc, 10, "v6", classes=["cow"])
    with pytest.raises(ValueError, match=r"size == -1; must be >= 0"):
        allocate(kc, -1, "proportional")
    with pytest.raises(TypeError, match=r"size == 2.5; must be an integer"):
        allocate(kc, 2.5, "proportional")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"counts == .*must be a KeywordCounts"):
        allocate({"cat": {"a": 1}}, 10)  # type: ignore[arg-type]


# --------------------------------------------------------------------------- matching


def test_match_keywords_lemmas_synonyms_and_unmatched() -> None:
    original = KeywordCounts.from_dict(
        {"cat": {"tabby_cat": 10, "tabby": 8, "domestic_cat": 5, "tomcat": 2}, "ship": {"boat": 4, "wagon": 1}},
        classes=("cat", "ship", "truck"),
    )
    pool = KeywordCounts.from_dict(
        {"cat": {"tabby, tabby cat": 50, "Egyptian cat": 40, "lion": 30}, "truck": {"police van, wagon": 20}},
        classes=("cat", "ship", "truck"),
    )
    m = match_keywords(original, pool, synonyms={"Egyptian cat": ["domestic cat"]})
    groups = {(g.class_name, g.name): g for g in m.matched}
    assert groups[("cat", "tabby_cat+tabby")].pool == ("tabby, tabby cat",)
    assert groups[("cat", "tabby_cat+tabby")].original_count == 18
    assert groups[("cat", "domestic_cat")].pool == ("Egyptian cat",)
    # 'wagon' is a ship keyword here and a lemma of a truck synset: never matched across classes
    assert m.unmatched_original == {"cat": {"tomcat": 2}, "ship": {"boat": 4, "wagon": 1}}
    assert m.unmatched_pool == {"cat": {"lion": 30}, "truck": {"police van, wagon": 20}}
    assert "unmatched pool keywords" in m.summary()
    assert json.loads(json.dumps(m.to_dict()))["unmatched_pool"]["cat"] == {"lion": 30}


def test_match_unknown_pool_class() -> None:
    original = KeywordCounts.from_dict({"cat": {"a": 1}}, classes=("cat",))
    pool = KeywordCounts.from_dict({"kat": {"a": 1}}, classes=("kat",))
    with pytest.raises(ValueError, match=r"pool class name == 'kat'; must be one of: 'cat'"):
        match_keywords(original, pool)


def test_shipped_synonym_map() -> None:
    syn = load_synonyms("tinyimagenet-wordnet-to-cifar10_1")
    assert syn["egyptian_cat"][0] == "domestic_cat"
    assert syn["gondola"] == ["boat"]
    with pytest.raises(FileNotFoundError, match=r"synonyms == 'nope.json'; must be a JSON file or one of the shipped maps"):
        load_synonyms("nope.json")


@pytest.mark.shared
def test_real_pool_matches_cifar10_1(candidate_pool, shared) -> None:
    v6 = load_cifar10_1_counts(shared / "data/cifar10_1/keyword_metadata.json", "v6")
    m = match_keywords(v6, keyword_counts(candidate_pool))
    # lemma-level matches only: 7 synsets carry a CIFAR-10.1 v6 keyword as a lemma
    assert len(m.matched) == 7
    assert {g.name for g in m.matched if g.class_name == "cat"} == {"tabby_cat+tabby"}
    # the pool has no airplane or horse images: every original keyword there is unmatched
    assert sum(m.unmatched_original["airplane"].values()) == 200
    assert sum(m.unmatched_original["horse"].values()) == 200
    m2 = match_keywords(v6, keyword_counts(candidate_pool), synonyms="tinyimagenet-wordnet-to-cifar10_1")
    assert len(m2.matched) == 13
    assert set(m2.unmatched_pool) == {"automobile", "cat", "deer"}  # sports car (not in v6), cougar, lion, bison


def test_keyword_counts_json_roundtrip(tmp_path) -> None:
    kc = keyword_counts(make_imageset(30))
    p = tmp_path / "kc.json"
    p.write_text(json.dumps(kc.to_dict()))
    back = load_keyword_counts(p)
    assert back.counts == kc.counts and back.classes == kc.classes
    assert math.isclose(back.total, 30)


# --------------------------------------------------------------------------- CLI


def test_cli_keywords(tmp_path, capsys) -> None:
    from replicate.cli import main

    s = make_imageset(30)
    path = s.save(tmp_path / "toy")
    assert main(["keywords", str(path), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["total"] == 30 and data["counts"]["cat"] == dict(keyword_counts(s)["cat"])
    assert main(["keywords", str(path)]) == 0
    assert "KeywordCounts from imageset:toy:keyword" in capsys.readouterr().out
    assert main(["keywords", str(path), "--column", "nope"]) == 2
    assert "column == 'nope'; must be a metadata column" in capsys.readouterr().err


@pytest.mark.shared
def test_cli_keywords_cifar10_1(shared, capsys) -> None:
    from replicate.cli import main

    assert main(["keywords", str(shared / "data/cifar10_1/keyword_metadata.json"), "--version", "v4", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["total"] == 57148
