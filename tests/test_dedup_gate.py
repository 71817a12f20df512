"""The copy-detection descriptor as a verification gate of the near-duplicate detector
(``descriptor_min``, the ``"clean"`` preset): flags are the default rules AND the pair's
copydesc32 cosine >= the threshold."""

from __future__ import annotations

import hashlib
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
from conftest import make_imageset
from test_dedup import jpeg, shifted

import replicate.models.descriptor as descriptor
from replicate.dedup import DedupConfig, candidate_pairs, decide, find_near_duplicates, prepare
from replicate.dedup.rules import DESCRIPTOR_GATE_MIN, _flag_rules
from replicate.imageset import ImageSet
from replicate.models import WeightsError

# without the (slow) edge and coarse-window searches: the gate's plumbing is the same
FAST = DedupConfig(edge_max=None, aligned_k=0)
KEY = ["query_id", "reference_set", "reference_id"]


@pytest.fixture
def sets():
    """Planted copies of reference images: exact (0), JPEG (1), brightness (2), 2-pixel shift
    (3); query 5 duplicates query 4 exactly (within the set)."""
    ref = make_imageset(60, seed=1, name="ref")
    q = make_imageset(30, seed=2, name="new")
    imgs = q.images.copy()
    imgs[0] = ref.images[5]
    imgs[1] = jpeg(ref.images[7], 75)
    imgs[2] = np.clip(ref.images[9].astype(int) + 20, 0, 255).astype(np.uint8)
    imgs[3] = shifted(ref.images[11], 2, 1)
    imgs[5] = imgs[4]
    return ImageSet(imgs, q.labels, q.class_names, name="new"), ref


def _flagged_pairs(res) -> set[tuple[str, str, str]]:
    p = res.pairs[res.pairs.flagged]
    return set(zip(p.query_id, p.reference_set, p.reference_id))


def _bytes_embed(images: np.ndarray, *args, **kwargs) -> np.ndarray:
    """A stand-in descriptor: a random unit vector per distinct image (seeded by its bytes):
    exact copies have cosine 1, any two other images about 0 (128 dimensions)."""
    out = []
    for img in np.asarray(images):
        seed = int.from_bytes(hashlib.sha256(np.ascontiguousarray(img).tobytes()).digest()[:8], "little")
        v = np.random.default_rng(seed).normal(size=descriptor.DIM)
        out.append(v / np.linalg.norm(v))
    return np.asarray(out, dtype=np.float32).reshape(len(out), descriptor.DIM)


def test_gate_flags_a_subset_of_the_rules_and_keeps_the_planted_copies(sets):
    query, ref = sets
    plain = find_near_duplicates(query, {"ref": ref}, config=FAST)
    gated = find_near_duplicates(query, {"ref": ref}, config=replace(FAST, descriptor_min=DESCRIPTOR_GATE_MIN))
    # the same candidates and distances: the gate only adds its column and removes flags
    same = [c for c in plain.pairs.columns if c not in ("flagged", "flagged_by")]
    pd.testing.assert_frame_equal(gated.pairs[same], plain.pairs[same])
    assert _flagged_pairs(gated) <= _flagged_pairs(plain)
    assert set(gated.flagged_ids) <= set(plain.flagged_ids)
    stopped = plain.pairs.flagged & ~gated.pairs.flagged
    assert (gated.pairs.descriptor_cos[stopped] < DESCRIPTOR_GATE_MIN).all()
    assert (gated.pairs.flagged_by[~gated.pairs.flagged] == "").all()
    kept = gated.pairs.flagged
    pd.testing.assert_series_equal(gated.pairs.flagged_by[kept], plain.pairs.flagged_by[kept])
    for q, r in ((0, "ref/000005"), (1, "ref/000007"), (2, "ref/000009"), (3, "ref/000011")):
        assert (query.ids[q], "ref", r) in _flagged_pairs(gated), q
    assert (query.ids[4], "new", query.ids[5]) in _flagged_pairs(gated)  # within the set
    exact = gated.pairs[(gated.pairs.query_id == query.ids[0]) & (gated.pairs.reference_id == "ref/000005")]
    assert exact.descriptor_cos.iloc[0] == pytest.approx(1.0, abs=1e-5)
    assert "and copydesc32 cosine >= 0.4" in gated.summary()


def test_descriptor_cos_is_the_dot_product_of_the_embeddings_for_every_candidate(sets):
    query, ref = sets
    res = find_near_duplicates(query, {"ref": ref}, config=replace(FAST, descriptor_min=0.5))
    fq, fr = descriptor.embed(query.images), descriptor.embed(ref.images)
    p = res.pairs
    vec = {**dict(zip(query.ids, fq.astype(np.float64))), **dict(zip(ref.ids, fr.astype(np.float64)))}
    expected = [vec[a] @ vec[b] for a, b in zip(p.query_id, p.reference_id)]
    assert (p.reference_set == "new").any()  # pairs within the set: both ends query images
    np.testing.assert_allclose(p.descriptor_cos.to_numpy(), expected, atol=1e-5)
    assert len(p) > 2 * len(query)  # kNN candidates of every query, not only the nearest by descriptor
    assert p.descriptor_cos.notna().all()


def test_a_rule_flagged_pair_below_the_threshold_is_not_flagged(sets, monkeypatch):
    monkeypatch.setattr(descriptor, "embed", _bytes_embed)
    query, ref = sets
    plain = find_near_duplicates(query, {"ref": ref}, config=FAST)
    gated = find_near_duplicates(query, {"ref": ref}, config=replace(FAST, descriptor_min=0.4))
    jpeg_pair = (query.ids[1], "ref", "ref/000007")
    assert jpeg_pair in _flagged_pairs(plain) and jpeg_pair not in _flagged_pairs(gated)
    assert query.ids[1] in set(plain.flagged_ids) - set(gated.flagged_ids)
    # exact copies (cosine 1 under the stand-in) stay; every other image pair is stopped
    assert _flagged_pairs(gated) == {(query.ids[0], "ref", "ref/000005"), (query.ids[4], "new", query.ids[5])}


def test_the_threshold_is_inclusive(sets, monkeypatch):
    monkeypatch.setattr(descriptor, "embed", _bytes_embed)
    query, ref = sets
    cfg = replace(FAST, within_query=False, descriptor_min=0.4)
    pairs = candidate_pairs(prepare(query, cfg), [prepare(ref, cfg, "ref")], cfg)
    row = (pairs.query_pos == 1) & (pairs.reference_pos == 7)
    for cos, flagged in ((0.4, True), (np.nextafter(0.4, 0.0), False), (np.nan, False)):
        pairs.loc[row, "descriptor_cos"] = cos
        assert _flag_rules(pairs, cfg)[0][row.to_numpy()].tolist() == [flagged], cos


def test_gate_off_leaves_the_detector_as_before(sets):
    query, ref = sets
    default = find_near_duplicates(query, {"ref": ref}, config=FAST)
    off = find_near_duplicates(query, {"ref": ref}, config=replace(FAST, descriptor_min=None))
    pd.testing.assert_frame_equal(default.pairs, off.pairs)
    assert "descriptor_cos" not in default.pairs and "descriptor_min" not in default.config.to_dict()
    assert " and " not in default.summary().splitlines()[1]
    assert prepare(ref, FAST).descriptors is None  # the descriptor is not even computed
    assert DedupConfig.from_dict(DedupConfig(descriptor_min=0.5).to_dict()) == DedupConfig(descriptor_min=0.5)


def test_chunked_prepared_path_equals_the_one_call_with_the_gate(sets):
    query, ref = sets
    cfg = replace(FAST, descriptor_min=DESCRIPTOR_GATE_MIN)
    one = find_near_duplicates(query, {"ref": ref}, config=cfg)
    chunked = find_near_duplicates(query, {"ref": ref}, config=cfg, chunk_size=7)
    cols = KEY + ["l2", "aligned", "descriptor_cos", "flagged", "flagged_by"]  # (ranks within the set are per chunk)
    pd.testing.assert_frame_equal(one.pairs[cols], chunked.pairs[cols])
    assert one.flagged.equals(chunked.flagged)
    cfg_x = replace(cfg, within_query=False)
    refs = [prepare(ref, cfg_x, "ref")]
    parts = [candidate_pairs(prepare(query.select(np.arange(s, min(s + 11, len(query)))), cfg_x), refs, cfg_x, offset=s)
             for s in range(0, len(query), 11)]
    a = decide(pd.concat(parts, ignore_index=True), query, {"ref": ref}, cfg_x)
    b = find_near_duplicates(query, {"ref": ref}, config=cfg_x)
    pd.testing.assert_frame_equal(a.pairs, b.pairs)


def test_streamed_pool_equals_the_in_memory_path_with_the_gate(tmp_path):
    from test_streaming import _assert_same_dedup, _pool_with_copies

    from replicate.sources import open_source, write_shards
    from replicate.streaming import scan_pool

    pool, ref = _pool_with_copies()
    cfg = replace(FAST, descriptor_min=DESCRIPTOR_GATE_MIN)
    write_shards(pool, tmp_path / "tar", shard_size=25)
    src = open_source(tmp_path / "tar", chunk_size=16, name="pool")
    scan = scan_pool(src, {"ref": ref}, hashes=["phash"], config=cfg)
    mem = find_near_duplicates(pool, {"ref": ref}, config=cfg, chunk_size=16)
    _assert_same_dedup(scan.dedup, mem)
    assert "descriptor_cos" in scan.dedup.pairs
    assert {"pool/000003", "pool/000007"} <= set(scan.dedup.flagged_ids)
    inside = scan.dedup.pairs[scan.dedup.pairs.reference_set == "pool"]
    assert inside.flagged.any() and inside.descriptor_cos.notna().all()  # the search within the pool too


def test_clean_preset_is_the_defaults_and_the_gate():
    assert DESCRIPTOR_GATE_MIN == pytest.approx(0.40)
    assert DedupConfig.preset("clean") == DedupConfig(descriptor_min=DESCRIPTOR_GATE_MIN)
    assert DedupConfig.preset("clean", descriptor_min=0.6).descriptor_min == 0.6


@pytest.mark.parametrize("value,error,message", [
    (1.5, ValueError, r"descriptor_min == 1\.5; must be a cosine in \[0, 1\] \(or None to switch the descriptor "
                      r"gate off\)"),
    (-0.1, ValueError, r"descriptor_min == -0\.1; must be a cosine in \[0, 1\]"),
    (float("nan"), ValueError, r"descriptor_min == nan; must be a cosine in \[0, 1\]"),
    ("0.4", TypeError, r"descriptor_min == '0\.4'; must be a cosine in \[0, 1\] or None"),
    (True, TypeError, r"descriptor_min == True; must be a cosine in \[0, 1\] or None"),
])
def test_bad_threshold_fails_naming_it(value, error, message):
    with pytest.raises(error, match=message):
        find_near_duplicates(make_imageset(5), None, descriptor_min=value)
    with pytest.raises(error, match=message):
        find_near_duplicates(make_imageset(5), None, config="clean", descriptor_min=value)


def test_a_table_without_the_cosine_cannot_be_gated(sets):
    query, ref = sets
    plain = find_near_duplicates(query, {"ref": ref}, config=replace(FAST, within_query=False))
    pairs = candidate_pairs(prepare(query, plain.config), [prepare(ref, plain.config, "ref")], plain.config)
    with pytest.raises(ValueError, match=r"config\.descriptor_min == 0\.4; must be None for a candidate table "
                                         r"without a 'descriptor_cos' column"):
        decide(pairs, query, {"ref": ref}, replace(plain.config, descriptor_min=0.4))


@pytest.fixture
def no_cached_model(monkeypatch, tmp_path):
    monkeypatch.setattr(descriptor, "_CACHE", {})
    monkeypatch.setenv("REPLICATE_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("REPLICATE_OFFLINE", "1")
    monkeypatch.delenv("REPLICATE_WEIGHTS", raising=False)


def test_missing_weights_fail_naming_the_gate(sets, monkeypatch, tmp_path, no_cached_model):
    import replicate.models._weights as w

    monkeypatch.setattr(w, "PACKAGE_WEIGHTS", tmp_path / "empty")
    query, ref = sets
    with pytest.raises(WeightsError, match=r"descriptor_min == 0\.4 \(the copy-detection gate\) needs the copydesc32 "
                                           r"weights: no weights found for model 'copydesc32'.*copydesc32-"
                                           r"[0-9a-f]+\.npz.*descriptor_min=None") as e:
        find_near_duplicates(query, {"ref": ref}, config="clean")
    assert isinstance(e.value, FileNotFoundError)
    find_near_duplicates(query, {"ref": ref}, config=FAST)  # the gate off needs no weights


def test_weights_with_another_sha256_fail_naming_the_gate(sets, monkeypatch, no_cached_model):
    monkeypatch.setattr(descriptor, "DESCRIPTOR_CARD", replace(descriptor.DESCRIPTOR_CARD, sha256="0" * 64))
    query, ref = sets
    with pytest.raises(WeightsError, match=r"the copy-detection gate\) needs the copydesc32 weights: .*has sha256 "
                                           r"[0-9a-f]{64}; must be 0{64}"):
        find_near_duplicates(query, {"ref": ref}, config=replace(FAST, descriptor_min=0.5))


def test_pipeline_config_passes_the_gate_and_the_preset_through():
    from replicate.pipeline.config import DEFAULTS, config_from_dict

    assert "preset" not in DEFAULTS["dedup"] and "descriptor_min" not in DEFAULTS["dedup"]
    by_field = config_from_dict({"dedup": {"descriptor_min": 0.5}})
    assert by_field.dedup.resolved() == DedupConfig(descriptor_min=0.5)
    by_name = config_from_dict({"dedup": {"preset": "clean", "edge_max": 1.0}})
    assert by_name.dedup.resolved() == DedupConfig(descriptor_min=DESCRIPTOR_GATE_MIN, edge_max=1.0)
    assert by_name.to_dict()["dedup"]["preset"] == "clean"
    assert config_from_dict(by_name.to_dict()).dedup.resolved() == by_name.dedup.resolved()
    assert by_name.dedup.resolved().to_dict()["descriptor_min"] == DESCRIPTOR_GATE_MIN  # in the stage key
    with pytest.raises(ValueError, match=r"config \[dedup\] descriptor_min == 2; must be a cosine in \[0, 1\]"):
        config_from_dict({"dedup": {"descriptor_min": 2}})
    with pytest.raises(TypeError, match=r"config \[dedup\] descriptor_min == 'x'; must be a cosine"):
        config_from_dict({"dedup": {"descriptor_min": "x"}})
    with pytest.raises(ValueError, match=r"config \[dedup\] preset == 'cleen'; must be one of: 'recall', 'balanced', "
                                         r"'clean', 'fast'. Did you mean 'clean'\?"):
        config_from_dict({"dedup": {"preset": "cleen"}})
    with pytest.raises(TypeError, match=r"config \[dedup\] preset == 3; must be the name of a preset"):
        config_from_dict({"dedup": {"preset": 3}})
    with pytest.raises(ValueError, match=r"config \[dedup\] descriptor_min == 1\.5"):
        config_from_dict({"dedup": {"preset": "clean", "descriptor_min": 1.5}})


def test_cli_names_the_preset_and_the_gate(tmp_path, sets, capsys, monkeypatch):
    import json

    from replicate.cli import main

    monkeypatch.setattr(descriptor, "embed", _bytes_embed)
    query, ref = sets
    qp, rp = query.save(tmp_path / "new"), ref.save(tmp_path / "ref")
    base = ["dedup", str(qp), "--reference", f"ref={rp}", "--edge-max", "off", "--aligned-k", "0", "--json"]
    assert main([*base, "--out", str(tmp_path / "plain")]) == 0
    plain = json.loads(capsys.readouterr().out)
    assert main([*base, "--out", str(tmp_path / "clean"), "--preset", "clean"]) == 0
    clean = json.loads(capsys.readouterr().out)
    assert clean["config"]["descriptor_min"] == DESCRIPTOR_GATE_MIN and "descriptor_min" not in plain["config"]
    assert {f["query_id"] for f in clean["flagged"]} < {f["query_id"] for f in plain["flagged"]}
    assert "descriptor_cos" in (tmp_path / "clean" / "pairs.csv").read_text().splitlines()[0]
    assert main([*base, "--out", str(tmp_path / "off"), "--preset", "clean", "--descriptor-min", "off"]) == 0
    assert json.loads(capsys.readouterr().out)["counts"] == plain["counts"]
    assert main([*base, "--out", str(tmp_path / "bad"), "--descriptor-min", "high"]) == 2
    assert "--descriptor-min == 'high'; must be a cosine in [0, 1] or 'off'" in capsys.readouterr().err
    assert main([*base, "--out", str(tmp_path / "bad"), "--descriptor-min", "1.2"]) == 2
    assert "descriptor_min == 1.2; must be a cosine in [0, 1]" in capsys.readouterr().err
