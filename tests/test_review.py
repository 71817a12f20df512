"""Review: the append-only log, state rebuilt from it, every API endpoint, exports, CLI."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import make_imageset

from replicate.review import (
    Agreement,
    ReviewQueue,
    ReviewStore,
    agreement,
    blacklist,
    create_app,
    decisions,
    exclusions,
    open_review,
    start_server,
    verdicts,
    verified_labels,
    write_blacklist,
)
from replicate.review.state import ReviewState

TOKEN = "test-token"
H = {"X-Review-Token": TOKEN}


@pytest.fixture
def toy_pairs(toy):
    ref = make_imageset(12, seed=3, name="ref")
    pairs = pd.DataFrame(
        {
            "query_id": toy.ids[[0, 1, 2]],
            "reference_set": ["ref", "ref", toy.name],
            "reference_id": [ref.ids[0], ref.ids[5], toy.ids[7]],
            "hamming": [2.0, 9.0, 4.0],
            "l2": [0.1, 0.5, np.nan],
            "note": ["a", "b", "c"],  # not numeric: not a distance column
        }
    )
    return pairs, {"ref": ref}


@pytest.fixture
def session(toy, toy_pairs, tmp_path):
    pairs, refs = toy_pairs
    return open_review(toy, tmp_path / "review.sqlite", pairs=pairs, references=refs)


@pytest.fixture
def client(session):
    app = create_app(session, token=TOKEN, reviewer="alice")
    return app.test_client()


def post(client, path, body, headers=H, **kw):
    return client.post(path, json=body, headers=headers, **kw)


# --------------------------------------------------------------------------- the log


def test_log_is_append_only(tmp_path):
    store = ReviewStore(tmp_path / "r.sqlite")
    e = store.append(
        reviewer="a", stage="select", kind="label", item="x", verdict="accept", label=1, class_name="c"
    )
    assert e.seq == 1
    con = sqlite3.connect(store.path)
    with pytest.raises(sqlite3.DatabaseError, match="append-only"):
        con.execute("UPDATE events SET verdict='reject' WHERE seq=1")
    with pytest.raises(sqlite3.DatabaseError, match="append-only"):
        con.execute("DELETE FROM events")
    con.close()
    assert con is not None and store.count() == 1
    assert sqlite3.connect(store.path).execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_undo_is_an_event_and_state_rebuilds(tmp_path):
    store = ReviewStore(tmp_path / "r.sqlite")
    kw = dict(stage="select", kind="label", item="x")
    store.append(reviewer="a", verdict="accept", label=0, class_name="c0", **kw)
    store.append(reviewer="a", verdict="relabel", label=1, class_name="c1", **kw)
    store.append(reviewer="b", verdict="reject", **kw)
    u = store.undo(reviewer="a", stage="select", kind="label", item="x")
    assert u is not None and u.undoes == 2 and u.verdict == "undo"
    state = ReviewState(store.events())
    key = ("label", "x", "", "")
    assert state.reviewer_verdict(key, "select", "a").verdict == "accept"
    assert state.verdict(key, "select").verdict == "reject"  # latest standing decision of any reviewer
    store.undo(reviewer="b", stage="select", kind="label")
    store.undo(reviewer="a", stage="select", kind="label", item="x")
    assert store.undo(reviewer="a", stage="select", kind="label", item="x") is None
    assert ReviewState(store.events()).verdict(key, "select") is None
    assert store.count() == 6  # nothing removed


def test_concurrent_undos_retract_distinct_events(tmp_path):
    store = ReviewStore(tmp_path / "r.sqlite")
    for i in range(12):
        store.append(reviewer="a", stage="select", kind="label", item=f"x{i}", verdict="reject")
    results: list = []
    barrier = threading.Barrier(12)

    def undo_one() -> None:
        barrier.wait()
        results.append(store.undo(reviewer="a", stage="select", kind="label"))

    pool = [threading.Thread(target=undo_one) for _ in range(12)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    assert sorted(e.undoes for e in results) == list(range(1, 13))  # never the same event twice
    assert list(ReviewState(store.events()).standing()) == []


def test_any_past_state_rebuilds(session, toy):
    d = session.decide
    d(reviewer="a", stage="select", kind="label", item=toy.ids[0], verdict="accept")
    d(reviewer="a", stage="select", kind="label", item=toy.ids[0], verdict="relabel", label="ship")
    session.undo(reviewer="a", stage="select", kind="label")
    db = session.store.path
    assert verdicts(db, until=0).empty
    assert verdicts(db, until=1)["select_verdict"].tolist() == ["accept"]
    assert verdicts(db, until=2)["select_class"].tolist() == ["ship"]
    assert verdicts(db)["select_verdict"].tolist() == ["accept"]  # after the undo
    with pytest.raises(ValueError, match="until == -1; must be >= 0"):
        verdicts(db, until=-1)


def test_store_bad_paths(tmp_path):
    with pytest.raises(FileNotFoundError, match="must be an existing review log"):
        ReviewStore(tmp_path / "missing.sqlite", create=False)
    with pytest.raises(IsADirectoryError, match="not a directory"):
        ReviewStore(tmp_path)
    with pytest.raises(FileNotFoundError, match="must be an existing review log"):
        decisions(tmp_path / "missing.sqlite")


def test_reopen_resumes_and_checks_classes(toy, tmp_path):
    db = tmp_path / "r.sqlite"
    s1 = open_review(toy, db)
    s1.decide(reviewer="a", stage="select", kind="label", item=toy.ids[0], verdict="accept")
    s1.decide(reviewer="a", stage="select", kind="label", item=toy.ids[1], verdict="reject")
    s2 = open_review(toy, db)
    page = s2.label_page("select", per_page=10)
    assert [it["status"] for it in page["items"][:3]] == ["accept", "reject", "pending"]
    assert page["first_pending"] == 2 and page["page"] == 0
    # a second session sees the first one's later decisions (two processes, one log)
    s1.decide(reviewer="a", stage="select", kind="label", item=toy.ids[2], verdict="unusable")
    assert s2.progress("select")["label"]["decided"] == 3
    other = make_imageset(10, classes=3)
    with pytest.raises(ValueError, match="must be the class names of the review log"):
        open_review(other, db)


# --------------------------------------------------------------------------- the queue


def test_queue_validates_pairs(toy, toy_pairs):
    pairs, refs = toy_pairs
    q = ReviewQueue(toy, pairs, refs)
    assert q.n_pairs == 3 and q.distance_columns == ("hamming", "l2")
    with pytest.raises(TypeError, match="candidates == 'ndarray'; must be an ImageSet"):
        ReviewQueue(np.zeros((2, 4, 4, 3), np.uint8))
    with pytest.raises(ValueError, match=r"missing \['reference_id'\]"):
        ReviewQueue(toy, pairs.drop(columns="reference_id"), refs)
    with pytest.raises(TypeError, match="must be a pandas DataFrame"):
        ReviewQueue(toy, pairs.to_dict(), refs)
    bad = pairs.copy()
    bad.loc[0, "query_id"] = "nope"
    with pytest.raises(KeyError, match="ids not among the candidates"):
        ReviewQueue(toy, bad, refs)
    with pytest.raises(
        KeyError, match=r"reference_set == \['ref'\]; must be one of the sets given.*--reference"
    ):
        ReviewQueue(toy, pairs)
    bad = pairs.copy()
    bad.loc[1, "reference_id"] = "ref/999"
    with pytest.raises(KeyError, match="ids not in reference set"):
        ReviewQueue(toy, bad, refs)
    with pytest.raises(ValueError, match="repeated pairs"):
        ReviewQueue(toy, pd.concat([pairs, pairs.iloc[:1]]), refs)
    with pytest.raises(TypeError, match=r"references\['ref'\] == 'str'; must be an ImageSet"):
        ReviewQueue(toy, pairs, {"ref": "path"})


# --------------------------------------------------------------------------- reading endpoints


def test_index_and_static_need_token_and_local_host(client):
    assert client.get("/").status_code == 403
    assert b"session token" in client.get("/").data
    r = client.get(f"/?token={TOKEN}")
    assert r.status_code == 200 and b"review.js" in r.data
    assert "frame-ancestors 'none'" in r.headers["Content-Security-Policy"]
    with client.get("/static/review.js") as r:
        assert r.status_code == 200 and b"X-Review-Token" in r.data
    assert client.get("/favicon.ico").status_code == 204
    r = client.get(f"/?token={TOKEN}", headers={"Host": "evil.example:8000"})
    assert r.status_code == 403 and "Host == 'evil.example'" in r.json["error"]
    assert client.get("/api/config").status_code == 403
    assert client.get("/api/config?token=wrong").status_code == 403


def test_config(client, toy):
    cfg = client.get("/api/config", headers=H).json
    assert cfg["n_candidates"] == 40 and cfg["n_pairs"] == 3
    assert cfg["class_names"] == list(toy.class_names)
    assert cfg["keywords"]["cat_kw0"] >= 1 and sum(cfg["keywords"].values()) == 40
    assert cfg["reviewer"] == "alice" and cfg["stage"] == "select"
    assert cfg["distance_columns"] == ["hamming", "l2"]


def test_labels_page_filters_and_paging(client, toy):
    r = client.get("/api/labels?per_page=7&page=1", headers=H).json
    assert r["total"] == 40 and r["pages"] == 6 and r["page"] == 1
    assert [it["id"] for it in r["items"]] == list(toy.ids[7:14])
    assert r["items"][0]["src"].startswith("data:image/png;base64,")
    r = client.get("/api/labels?class=cat&images=0", headers=H).json
    assert r["total"] == 4 and all(it["class_name"] == "cat" for it in r["items"])
    assert "src" not in r["items"][0]
    r = client.get("/api/labels?keyword=cat_kw0", headers=H).json
    assert r["total"] >= 1 and all(it["keyword"] == "cat_kw0" for it in r["items"])
    post(client, "/api/decide", {"item": toy.ids[0], "verdict": "accept"})
    r = client.get("/api/labels?status=accept", headers=H).json
    assert [it["id"] for it in r["items"]] == [toy.ids[0]]
    assert r["items"][0]["decision"]["reviewer"] == "alice"
    r = client.get("/api/labels?status=pending&per_page=5", headers=H).json
    assert r["total"] == 39 and r["items"][0]["id"] == toy.ids[1]


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("per_page=0", r"per_page == 0; must be in \[1, 500\]"),
        ("per_page=x", "per_page == 'x'; must be an integer"),
        ("page=-1", r"page == -1; must be in \[0, inf\]"),
        ("class=kat", "class == 'kat'; must be one of: .* Did you mean 'cat'"),
        ("keyword=nope", "keyword == 'nope'; must be one of"),
        ("status=done", "status == 'done'; must be one of: 'pending', 'accept'"),
        ("stage=check", "stage == 'check'; must be one of: 'select', 'verify'"),
        ("images=maybe", "images == 'maybe'; must be 1 or 0"),
        ("scale=9", r"scale == 9; must be in \[1, 8\]"),
    ],
)
def test_labels_bad_queries(client, query, message):
    r = client.get(f"/api/labels?{query}", headers=H)
    assert r.status_code == 400
    assert pytest.importorskip("re").search(message, r.json["error"]), r.json["error"]


def test_pairs_page(client, toy):
    r = client.get("/api/pairs", headers=H).json
    assert r["total"] == 3 and r["distance_columns"] == ["hamming", "l2"]
    first = r["items"][0]
    assert first["query_id"] == toy.ids[0] and first["distances"] == {"hamming": 2.0, "l2": 0.1}
    assert r["items"][2]["distances"]["l2"] is None  # NaN travels as null
    assert first["query_src"].startswith("data:image/png") and first["reference_src"].startswith(
        "data:image/png"
    )
    assert client.get("/api/pairs?status=maybe", headers=H).status_code == 400
    assert client.get("/api/pairs?stage=verify", headers=H).json["total"] == 0


def test_image_by_id_never_by_path(client, toy, toy_pairs):
    r = client.get(f"/api/image?id={toy.ids[3]}&scale=4", headers=H)
    assert r.status_code == 200 and r.mimetype == "image/png"
    from PIL import Image

    img = np.asarray(Image.open(__import__("io").BytesIO(r.data)))
    assert img.shape == (128, 128, 3)
    np.testing.assert_array_equal(img[::4, ::4], toy.images[3])  # nearest-neighbour upscale
    ref = toy_pairs[1]["ref"]
    r = client.get(f"/api/image?set=ref&id={ref.ids[5]}", headers=H)
    np.testing.assert_array_equal(np.asarray(Image.open(__import__("io").BytesIO(r.data))), ref.images[5])
    for bad in ("../../../../etc/passwd", "/etc/passwd", "toy/../../pyproject.toml"):
        r = client.get("/api/image", query_string={"id": bad}, headers=H)
        assert r.status_code == 404 and "must be the id of an image" in r.json["error"]
    r = client.get("/api/image", query_string={"set": "../etc", "id": toy.ids[0]}, headers=H)
    assert r.status_code == 404 and "set == '../etc'" in r.json["error"]
    assert client.get("/api/image", headers=H).status_code == 400
    assert client.get("/api/../pyproject.toml", headers=H).status_code in (403, 404)
    with client.get("/static/../app.py") as r:
        assert r.status_code == 404


def test_unknown_endpoint_and_method(client):
    r = client.get("/api/nothing", headers=H)
    assert r.status_code == 404 and "no such endpoint" in r.json["error"]
    r = client.get("/api/decide", headers=H)
    assert r.status_code == 405


# --------------------------------------------------------------------------- writing endpoints


def test_decide_label_verdicts(client, toy):
    r = post(client, "/api/decide", {"item": toy.ids[0], "verdict": "accept", "reason": "clear"})
    assert r.status_code == 201
    ev = r.json["event"]
    assert (
        ev["reviewer"] == "alice" and ev["stage"] == "select" and ev["label"] == 0 and ev["reason"] == "clear"
    )
    assert r.json["progress"]["label"]["decided"] == 1
    r = post(
        client, "/api/decide", {"item": toy.ids[1], "verdict": "relabel", "label": "truck", "reviewer": "bob"}
    )
    assert r.status_code == 201 and r.json["event"]["label"] == 9 and r.json["event"]["reviewer"] == "bob"
    r = post(client, "/api/decide", {"item": toy.ids[2], "verdict": "relabel", "label": 4})
    assert r.json["event"]["class_name"] == "deer"
    for i, v in ((3, "reject"), (4, "duplicate"), (5, "unusable")):
        assert post(client, "/api/decide", {"item": toy.ids[i], "verdict": v}).json["event"]["label"] is None


@pytest.mark.parametrize(
    ("body", "status", "message"),
    [
        ({"verdict": "accept"}, 400, r"missing \['item'\]"),
        (
            {"item": "toy/000000", "verdict": "acept"},
            400,
            "verdict == 'acept'; must be one of: .*Did you mean 'accept'",
        ),
        ({"item": "toy/000000", "verdict": "accept", "colour": 1}, 400, r"fields == \['colour'\]"),
        ({"item": "nope", "verdict": "accept"}, 404, "item == 'nope'; must be the id of a candidate"),
        ({"item": 3, "verdict": "accept"}, 400, "item == 3; must be a string"),
        ({"item": "toy/000000", "verdict": "relabel"}, 400, "label == None; must be a class name or index"),
        (
            {"item": "toy/000000", "verdict": "relabel", "label": "airplane"},
            400,
            "a class other than the shown one",
        ),
        (
            {"item": "toy/000000", "verdict": "relabel", "label": "kat"},
            400,
            "class == 'kat'.*Did you mean 'cat'",
        ),
        ({"item": "toy/000000", "verdict": "relabel", "label": 10}, 400, "label == 10; must be <= 9"),
        ({"item": "toy/000000", "verdict": "relabel", "label": True}, 400, "must be a class name or index"),
        ({"item": "toy/000000", "verdict": "accept", "label": 3}, 400, "only 'relabel' takes a label"),
        (
            {"item": "toy/000000", "verdict": "accept", "reviewer": ""},
            400,
            "reviewer == ''; must be a non-empty name",
        ),
        ({"item": "toy/000000", "verdict": "accept", "reviewer": "x" * 65}, 400, "at most 64 printable"),
        ({"item": "toy/000000", "verdict": "accept", "reason": "x" * 501}, 400, r"len\(reason\) == 501"),
        (
            {"item": "toy/000000", "verdict": "accept", "stage": "verify"},
            409,
            "must be an item the select stage kept",
        ),
        (
            {"item": "toy/000000", "verdict": "accept", "kind": "image"},
            400,
            "kind == 'image'; must be one of",
        ),
        ({"item": "toy/000000", "verdict": "distinct", "kind": "pair"}, 404, "must be a flagged pair"),
        ({"item": "toy/000000", "verdict": "accept", "ref_set": "ref"}, 400, "empty for a label decision"),
    ],
)
def test_decide_bad_requests(client, session, body, status, message):
    import re

    r = post(client, "/api/decide", body)
    assert r.status_code == status, r.json
    assert session.store.count() == 0  # a refused decision writes nothing
    assert re.search(message, r.json["error"]), r.json["error"]


def test_decide_needs_token_json_and_small_body(client, session, toy):
    body = {"item": toy.ids[0], "verdict": "accept"}
    assert post(client, "/api/decide", body, headers={}).status_code == 403
    assert post(client, "/api/decide", body, headers={"X-Review-Token": "nope"}).status_code == 403
    r = client.post(f"/api/decide?token={TOKEN}", json=body)  # the URL token is not enough to write
    assert r.status_code == 403 and "X-Review-Token" in r.json["error"]
    r = client.post(
        "/api/decide", data="item=x", headers={**H, "Content-Type": "application/x-www-form-urlencoded"}
    )
    assert r.status_code == 400 and "must be 'application/json'" in r.json["error"]
    r = client.post("/api/decide", data="{not json", headers={**H, "Content-Type": "application/json"})
    assert r.status_code == 400 and "must be a JSON object" in r.json["error"]
    r = client.post("/api/decide", data="[1, 2]", headers={**H, "Content-Type": "application/json"})
    assert r.status_code == 400 and "must be a JSON object" in r.json["error"]
    r = client.post(
        "/api/decide",
        data=json.dumps({**body, "reason": "x" * 20000}),
        headers={**H, "Content-Type": "application/json"},
    )
    assert r.status_code == 413 and "larger than" in r.json["error"]
    assert session.store.count() == 0  # nothing refused was written


def test_two_stage_workflow_and_undo(client, toy):
    post(client, "/api/decide", {"item": toy.ids[0], "verdict": "accept"})
    post(client, "/api/decide", {"item": toy.ids[1], "verdict": "relabel", "label": "ship"})
    post(client, "/api/decide", {"item": toy.ids[2], "verdict": "reject"})
    r = client.get("/api/labels?stage=verify", headers=H).json
    assert [it["id"] for it in r["items"]] == list(toy.ids[:2])  # only what the select stage kept
    assert r["items"][1]["class_name"] == "ship" and r["items"][1]["select"]["verdict"] == "relabel"
    bob = {"stage": "verify", "reviewer": "bob"}
    r = post(client, "/api/decide", {"item": toy.ids[1], "verdict": "accept", **bob})
    assert r.json["event"]["class_name"] == "ship"  # accepting confirms the class shown
    post(client, "/api/decide", {"item": toy.ids[0], "verdict": "relabel", "label": "bird", **bob})
    r = post(client, "/api/undo", {"item": toy.ids[0], **bob})
    assert r.status_code == 201 and r.json["event"]["verdict"] == "undo"
    assert client.get("/api/progress?stage=verify", headers=H).json["label"]["decided"] == 1
    r = post(client, "/api/undo", {**bob})  # the latest standing decision of bob
    assert r.json["event"]["item"] == toy.ids[1]
    r = post(client, "/api/undo", {**bob})
    assert r.status_code == 409 and "nothing to undo for reviewer 'bob'" in r.json["error"]
    assert post(client, "/api/undo", {"stage": "final"}).status_code == 400
    assert post(client, "/api/undo", {"item": 5}).status_code == 400
    assert post(client, "/api/undo", {"verdict": "accept"}).status_code == 400  # not an undo field
    assert post(client, "/api/undo", {}, headers={}).status_code == 403


def test_pair_decisions(client, toy, toy_pairs):
    pairs = toy_pairs[0]
    key = {"kind": "pair", "item": toy.ids[0], "ref_set": "ref", "ref_id": str(pairs.reference_id[0])}
    assert post(client, "/api/decide", {**key, "verdict": "duplicate"}).status_code == 201
    assert post(client, "/api/decide", {**key, "verdict": "accept"}).status_code == 400
    assert post(client, "/api/decide", {**key, "verdict": "distinct", "label": 1}).status_code == 400
    r = client.get("/api/pairs?status=duplicate", headers=H).json
    assert r["total"] == 1 and r["items"][0]["decision"]["verdict"] == "duplicate"
    r = client.get("/api/pairs?stage=verify", headers=H).json
    assert r["total"] == 1 and r["items"][0]["select"]["verdict"] == "duplicate"
    key2 = {**key, "ref_id": str(pairs.reference_id[1]), "item": toy.ids[1], "stage": "verify"}
    assert post(client, "/api/decide", {**key2, "verdict": "distinct"}).status_code == 409
    assert post(client, "/api/undo", {"kind": "pair"}).json["event"]["ref_set"] == "ref"
    assert client.get("/api/progress", headers=H).json["pair"]["decided"] == 0


def test_decisions_agreement_and_exports_endpoints(client, toy):
    post(client, "/api/decide", {"item": toy.ids[0], "verdict": "accept"})
    post(client, "/api/decide", {"item": toy.ids[1], "verdict": "duplicate"})
    r = client.get("/api/decisions?since=1", headers=H).json
    assert [e["seq"] for e in r["events"]] == [2]
    assert client.get("/api/decisions?since=a", headers=H).status_code == 400
    r = client.get("/api/agreement", headers=H).json
    assert r["n_items"] == 0 and r["kappa"] is None and "no item" in r["summary"]
    assert client.get("/api/agreement?by=rater", headers=H).status_code == 400
    r = client.get("/api/export/blacklist", headers=H)
    assert r.status_code == 200 and r.data.decode() == f"{toy.ids[1]}\n"
    r = client.get("/api/export/verdicts", headers=H)
    df = pd.read_csv(__import__("io").StringIO(r.data.decode()))
    assert list(df["id"]) == list(toy.ids[:2]) and list(df["final_verdict"]) == ["accept", "duplicate"]
    assert client.get("/api/export/verdicts?kind=x", headers=H).status_code == 400


# --------------------------------------------------------------------------- a real server


def _request(url, body=None, token=TOKEN):
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method="POST" if body is not None else "GET")
    req.add_header("Content-Type", "application/json")
    req.add_header("X-Review-Token", token)
    with urllib.request.urlopen(req, timeout=30) as resp:
        return resp.status, json.loads(resp.read())


def test_concurrent_reviewers_lose_nothing(toy, tmp_path):
    db = tmp_path / "r.sqlite"
    session = open_review(toy, db)
    threads, per_thread = 6, 20
    errors: list[BaseException] = []
    with start_server(session, token=TOKEN) as server:
        assert server.host == "127.0.0.1"
        barrier = threading.Barrier(threads)

        def reviewer(k: int) -> None:
            try:
                barrier.wait()
                for j in range(per_thread):
                    item = toy.ids[(k * 7 + j) % len(toy)]
                    verdict = ("accept", "reject", "unusable")[j % 3]
                    status, _ = _request(
                        f"{server.base}/api/decide",
                        {"item": item, "verdict": verdict, "reviewer": f"r{k}", "reason": str(j)},
                    )
                    assert status == 201
            except BaseException as exc:  # noqa: BLE001 - reported below
                errors.append(exc)

        pool = [threading.Thread(target=reviewer, args=(k,)) for k in range(threads)]
        for t in pool:
            t.start()
        for t in pool:
            t.join()
        assert errors == []
        status, prog = _request(f"{server.base}/api/progress")
        assert status == 200
    log = decisions(db)
    assert len(log) == threads * per_thread and log["seq"].is_unique
    counts = log.groupby("reviewer")["reason"].apply(lambda s: sorted(map(int, s)))
    assert all(v == list(range(per_thread)) for v in counts)  # every decision of every reviewer kept
    assert prog["label"]["decided"] == len(set(log["item"]))


def test_other_address_warns_and_loopback_default(toy, tmp_path, monkeypatch):
    import replicate.review.app as app_mod

    session = open_review(toy, tmp_path / "r.sqlite")

    class Fake:  # never bind a public address in a test
        def __init__(self, app, host, port):
            self.app, self.host, self.port = app, host, port

        def start(self):
            return self

    monkeypatch.setattr(app_mod, "ReviewServer", Fake)
    with pytest.warns(UserWarning, match="reachable from other machines"):
        fake = start_server(session, host="0.0.0.0")
    c = fake.app.test_client()
    assert (
        c.get(
            f"/api/config?token={fake.app.config['REVIEW_TOKEN']}", headers={"Host": "0.0.0.0:80"}
        ).status_code
        == 200
    )
    with pytest.raises(ValueError, match="host == ''; must be an address"):
        start_server(session, host="")
    import inspect

    assert inspect.signature(app_mod.start_server).parameters["host"].default == "127.0.0.1"


def test_killed_server_keeps_every_saved_decision(toy, tmp_path):
    path = toy.save(tmp_path / "toy")
    db = tmp_path / "r.sqlite"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "replicate",
            "review",
            str(path),
            "--db",
            str(db),
            "--reviewer",
            "ann",
            "--no-browser",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        url = None
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            if line.startswith("open: "):
                url = line.split("open: ", 1)[1].strip()
                break
            if not line and proc.poll() is not None:
                break
        assert url and url.startswith("http://127.0.0.1:"), (
            proc.stderr.read() if proc.poll() is not None else url
        )
        base, token = url.split("/?token=")
        for i in range(5):
            assert _request(f"{base}/api/decide", {"item": toy.ids[i], "verdict": "accept"}, token)[0] == 201
        with pytest.raises(urllib.error.HTTPError) as info:
            _request(f"{base}/api/decide", {"item": toy.ids[0], "verdict": "accept"}, "wrong")
        assert info.value.code == 403
        info.value.close()
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
        proc.stdout.close()
        proc.stderr.close()
    log = decisions(db)
    assert list(log["item"]) == list(toy.ids[:5]) and set(log["reviewer"]) == {"ann"}
    resumed = open_review(toy, db).label_page("select", per_page=10)
    assert resumed["first_pending"] == 5


# --------------------------------------------------------------------------- library exports


def _review(session, toy):
    d = session.decide
    d(reviewer="a", stage="select", kind="label", item=toy.ids[0], verdict="accept")
    d(reviewer="a", stage="select", kind="label", item=toy.ids[1], verdict="relabel", label="cat")
    d(reviewer="a", stage="select", kind="label", item=toy.ids[2], verdict="accept")
    d(reviewer="a", stage="select", kind="label", item=toy.ids[3], verdict="reject")
    d(reviewer="a", stage="select", kind="label", item=toy.ids[4], verdict="unusable")
    d(reviewer="b", stage="verify", kind="label", item=toy.ids[0], verdict="accept")
    d(reviewer="b", stage="verify", kind="label", item=toy.ids[1], verdict="relabel", label="dog")
    d(
        reviewer="b",
        stage="verify",
        kind="label",
        item=toy.ids[2],
        verdict="duplicate",
        reason="same as train",
    )


def test_verdicts_verified_labels_and_blacklist(session, toy, tmp_path):
    _review(session, toy)
    key = {"kind": "pair", "item": toy.ids[0], "ref_set": "ref", "ref_id": "ref/000000"}
    session.decide(reviewer="a", stage="select", verdict="duplicate", **key)
    session.decide(
        reviewer="a",
        stage="select",
        kind="pair",
        item=toy.ids[1],
        ref_set="ref",
        ref_id="ref/000005",
        verdict="distinct",
    )
    db = session.store.path
    v = verdicts(db).set_index("id")
    assert v.loc[toy.ids[1], "select_class"] == "cat" and v.loc[toy.ids[1], "final_class"] == "dog"
    assert (
        v.loc[toy.ids[2], "final_verdict"] == "duplicate"
        and v.loc[toy.ids[2], "verify_reason"] == "same as train"
    )
    assert v.loc[toy.ids[3], "final_stage"] == "select"
    kept = verified_labels(db, toy)
    assert list(kept.ids) == list(toy.ids[:2])
    assert list(kept.labels) == [0, toy.class_names.index("dog")]
    assert list(kept.metadata["proposed_label"]) == [0, 1]
    assert kept.info["review"]["stage"] == "verify" and kept.info["review"]["kept"] == 2
    np.testing.assert_array_equal(kept.images, toy.images[:2])
    assert list(verified_labels(db, toy, stage="select").labels) == [0, 3, 2]
    bl = blacklist(db)
    assert bl == sorted([toy.ids[0], toy.ids[2], toy.ids[3], toy.ids[4]])  # pair duplicate adds ids[0]
    assert blacklist(db, verdicts=["unusable"], pairs=False) == [toy.ids[4]]
    assert exclusions(db) == {
        "review_reject": [toy.ids[3]],
        "review_duplicate": [toy.ids[2]],
        "review_unusable": [toy.ids[4]],
        "review_pair_duplicate": [toy.ids[0]],
    }
    out = write_blacklist(db, tmp_path / "out" / "blacklist.txt")
    assert out.read_text().splitlines() == bl
    pv = verdicts(db, "pair")
    assert list(pv["final_verdict"]) == ["duplicate", "distinct"]
    log = decisions(db)
    assert list(log.columns[:3]) == ["seq", "time", "reviewer"] and log["standing"].all()
    with pytest.raises(ValueError, match="verdicts\\[\\] == 'bad'"):
        blacklist(db, verdicts=["bad"])
    with pytest.raises(TypeError, match="must be an ImageSet"):
        verified_labels(db, "toy")
    with pytest.raises(ValueError, match="kind == 'image'"):
        verdicts(db, "image")


def _log_table(db, table):
    """Write decisions whose select/verify cross-table is ``table`` (2 classes)."""
    store = ReviewStore(db)
    classes = ("airplane", "automobile")
    n = 0
    for i in range(2):
        for j in range(2):
            for _ in range(table[i][j]):
                item = f"x{n}"
                store.append(
                    reviewer="a",
                    stage="select",
                    kind="label",
                    item=item,
                    verdict="accept",
                    label=i,
                    class_name=classes[i],
                )
                vj = "accept" if i == j else "relabel"
                store.append(
                    reviewer="b",
                    stage="verify",
                    kind="label",
                    item=item,
                    verdict=vj,
                    label=j,
                    class_name=classes[j],
                )
                n += 1


def test_agreement_cohens_kappa(tmp_path):
    db = tmp_path / "r.sqlite"
    _log_table(db, [[10, 2], [3, 15]])
    res = agreement(db)
    # hand computation: p_o = 25/30, p_e = (12*13 + 18*17)/900 = 462/900, kappa = (p_o - p_e)/(1 - p_e)
    po, pe = 25 / 30, 462 / 900
    assert isinstance(res, Agreement)
    assert res.kappa == pytest.approx((po - pe) / (1 - pe), rel=1e-12)
    assert res.n_items == 30 and res.n_agree == 25 and res.table == ((10, 2), (3, 15))
    assert res.ci_low < res.kappa < res.ci_high
    assert res.ci_high - res.kappa == pytest.approx(1.959963984540054 * res.std_kappa, rel=1e-9)
    wide = agreement(db, alpha=0.01)
    assert wide.ci_high - wide.kappa == pytest.approx(2.5758293035489 * res.std_kappa, rel=1e-9)
    by_rev = agreement(db, "a", "b", by="reviewer")
    assert by_rev.kappa == pytest.approx(res.kappa)
    d = res.to_dict()
    assert json.loads(json.dumps(d))["n_items"] == 30 and "statsmodels" in d["method"]
    assert "25/30 items agree" in res.summary() and "kappa = 0.658" in res.summary()
    with pytest.raises(ValueError, match="rater_a == 'first'; must be one of: 'select', 'verify'"):
        agreement(db, "first")
    with pytest.raises(ValueError, match="rater_b == 'select'; must be a rater other than rater_a"):
        agreement(db, "select", "select")
    with pytest.raises(ValueError, match="alpha == 1.5; must be in \\(0, 1\\)"):
        agreement(db, alpha=1.5)


def test_agreement_undefined_when_one_category(tmp_path):
    db = tmp_path / "r.sqlite"
    _log_table(db, [[5, 0], [0, 0]])
    res = agreement(db)
    assert res.n_items == 5 and np.isnan(res.kappa) and "undefined" in res.note
    assert res.to_dict()["kappa"] is None


# --------------------------------------------------------------------------- CLI


def test_cli_export(session, toy, tmp_path, capsys):
    from replicate.cli import main

    _review(session, toy)
    toy.save(tmp_path / "toy")
    db = str(session.store.path)
    code = main(
        [
            "review-export",
            db,
            "--blacklist",
            str(tmp_path / "bl.txt"),
            "--verdicts",
            str(tmp_path / "v.csv"),
            "--labels",
            str(tmp_path / "kept"),
            "--candidates",
            str(tmp_path / "toy"),
            "--json",
        ]
    )
    assert code == 0
    out = json.loads(capsys.readouterr().out)
    assert out["verified"] == 2 and out["label_items"] == 5 and out["blacklist"] == 3
    assert (tmp_path / "bl.txt").read_text().splitlines() == blacklist(db)
    assert len(pd.read_csv(tmp_path / "v.csv")) == 5
    from replicate.io import load

    assert list(load(tmp_path / "kept").labels) == [0, toy.class_names.index("dog")]
    assert main(["review-export", db]) == 0
    assert "Agreement (label review" in capsys.readouterr().out
    assert main(["review-export", db, "--labels", str(tmp_path / "k2")]) == 2
    assert "--candidates == None" in capsys.readouterr().err
    assert main(["review", str(tmp_path / "toy"), "--reference", "nameonly", "--no-browser"]) == 2
    assert "--reference == 'nameonly'; must be NAME=PATH" in capsys.readouterr().err
    assert main(["review-export", str(tmp_path / "none.sqlite")]) == 2
    assert Path(tmp_path / "none.sqlite").exists() is False


def test_queue_takes_a_dedup_result(toy, toy_pairs, client):
    pairs, refs = toy_pairs

    class Result:  # the shape of replicate.dedup.DedupResult: a pairs table with flags
        def __init__(self, table):
            self.pairs = table

    table = pairs.drop(columns="note").assign(
        l2_rank=[1, 2, 1], flagged=[True, False, True], flagged_by=["phash", "", "aligned,l2"]
    )
    q = ReviewQueue(toy, Result(table), refs)
    assert q.n_pairs == 2 and q.distance_columns == ("hamming", "l2", "l2_rank")
    assert q.note_columns == ("flagged_by",) and list(q.notes["flagged_by"]) == ["phash", "aligned,l2"]
    assert ReviewQueue(toy, Result(table), refs, pair_rows="all").n_pairs == 3
    with pytest.raises(ValueError, match="pair_rows == 'some'; must be one of: 'flagged', 'all'"):
        ReviewQueue(toy, table, refs, pair_rows="some")
    # the page keeps the table's column order and shows the notes
    r = client.get("/api/pairs", headers=H).json
    assert list(r["items"][0]["distances"]) == ["hamming", "l2"] and r["items"][0]["notes"] == {"note": "a"}



def test_agreement_when_one_rater_used_one_category(tmp_path):
    # table [[1, 0], [1, 0]]: rater b always "accept"; kappa is 0 and statsmodels' null z
    # test divides 0 by 0 (it warned, and warnings are errors in the tests)
    db = tmp_path / "r.sqlite"
    _log_table(db, [[1, 0], [1, 0]])
    res = agreement(db)
    assert res.n_items == 2 and res.kappa == 0.0
    assert "single category" in res.note
