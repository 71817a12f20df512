"""Tests for replicate.report: the data model, every format, figures, sections, bad input."""

from __future__ import annotations

import csv
import io
import json
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from conftest import make_imageset

from replicate import stats
from replicate.imageset import CIFAR10_CLASSES
from replicate.manifest import make_manifest
from replicate.report import FORMATS, SCHEMA_VERSION, Report, build_report, render, write_report

# --------------------------------------------------------------------------- helpers


@pytest.fixture(scope="module", autouse=True)
def _no_forced_gc():
    """statsmodels 0.15's multipletests calls gc.collect() on every call (0.2-0.7 s each in a
    process that imported torch); compare() adjusts p-values once per model for per-class
    drops. A full collection changes no number, so the tests skip it to stay fast."""
    import gc

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(gc, "collect", lambda *a, **k: 0)
        yield


class Page(HTMLParser):
    """Collects what the tests check in an HTML report."""

    def __init__(self) -> None:
        super().__init__()
        self.imgs: list[dict[str, str | None]] = []
        self.section_ids: list[str] = []
        self.tables: dict[str, int] = {}
        self.cells: dict[str, list[dict[str, str]]] = {}
        self.external: list[str] = []
        self.absent: list[str] = []
        self._table: str | None = None
        self._in_tbody = False
        self._row: dict[str, str] | None = None
        self._absent = False
        self.scripts = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        for key in ("src", "href"):
            v = a.get(key) or ""
            if v.startswith(("http:", "https:", "//")):
                self.external.append(v)
        if tag == "img":
            self.imgs.append(a)
        elif tag == "section" and a.get("id"):
            self.section_ids.append(a["id"] or "")
        elif tag == "table" and "models" in (a.get("class") or ""):
            self._table = a.get("id")
            self.tables[self._table or ""] = 0
            self.cells[self._table or ""] = []
        elif tag == "tbody":
            self._in_tbody = True
        elif tag == "tr" and self._table and self._in_tbody:
            self.tables[self._table] += 1
            self._row = {"model": a.get("data-model") or ""}
            self.cells[self._table].append(self._row)
        elif tag == "td" and self._row is not None and a.get("data-field"):
            self._row[a["data-field"] or ""] = a.get("data-value") or ""
        elif tag == "span" and self._row is not None and "ci" in (a.get("class") or "") and a.get("data-low"):
            self._row.setdefault("ci", "")
            self._row["ci"] += f"{a['data-low']},{a['data-high']};"
        elif tag == "p" and "absent" in (a.get("class") or ""):
            self._absent = True
        elif tag == "script":
            self.scripts += 1
            if a.get("src"):
                self.external.append(a["src"] or "")

    def handle_endtag(self, tag: str) -> None:
        if tag == "table":
            self._table = None
        elif tag == "tbody":
            self._in_tbody = False
        elif tag == "tr":
            self._row = None
        elif tag == "p":
            self._absent = False

    def handle_data(self, data: str) -> None:
        if self._absent and data.strip():
            self.absent.append(data.strip())


def parse(html: str) -> Page:
    page = Page()
    page.feed(html)
    page.close()
    return page


def counts_comparison(original: str = "orig-test", new: str = "new-test", n_orig: int = 10_000,
                      n_new: int = 2_000, k: int = 6, seed: int = 0, **kw) -> stats.Comparison:
    """A comparison of k models from counts alone (fast: no per-image bootstrap)."""
    rng = np.random.default_rng(seed)
    acc = np.sort(rng.uniform(0.7, 0.96, size=k))
    orig = {f"model_{i}": (int(a * n_orig), n_orig) for i, a in enumerate(acc)}
    newc = {f"model_{i}": (int((a - 0.08 + rng.normal(0, 0.01)) * n_new), n_new) for i, a in enumerate(acc)}
    return stats.compare(orig, newc, original_name=original, new_name=new, bootstrap="none", n_bootstrap=20, **kw)


@pytest.fixture(scope="module")
def small() -> stats.Comparison:
    return counts_comparison()


@pytest.fixture(scope="module")
def small_report(small: stats.Comparison) -> Report:
    return build_report(small, title="Small & <test>", created="2026-01-01T00:00:00Z")


def cifar10_1_records(shared: Path, version: str, per_class: bool) -> tuple[list[dict], list[dict]]:
    """EvalResult-like dicts of the 30 published CIFAR-10.1 models on CIFAR-10 test and v4/v6."""
    d = np.load(shared / "data/cifar10_1/labels_and_model_predictions.npz")
    y0 = np.load(shared / "data/cifar10/test.npz")["labels"]

    def records(pred: np.ndarray, y: np.ndarray) -> list[dict]:
        out = []
        for name, p in zip(d["model_names"], pred, strict=True):
            ok = p == y
            r = {"model": str(name), "n": int(y.size), "n_correct": int(ok.sum())}
            if per_class:
                r.update(class_names=CIFAR10_CLASSES, class_n=tuple(np.bincount(y, minlength=10).tolist()),
                         class_correct=tuple(np.bincount(y[ok], minlength=10).tolist()))
            out.append(r)
        return out

    return records(d["pred_original"], y0), records(d[f"pred_{version}"], d[f"labels_{version}"])


@pytest.fixture(scope="module")
def cifar10_1(shared: Path) -> list[stats.Comparison]:
    """The CIFAR-10.1 reanalysis: original vs v4 and v6 (per-class drops for v6)."""
    out = []
    for version in ("v4", "v6"):
        o, n = cifar10_1_records(shared, version, per_class=version == "v6")
        out.append(stats.compare(o, n, original_name="cifar10-test", new_name=f"cifar10.1-{version}",
                                 bootstrap="none", n_bootstrap=50))
    return out


# --------------------------------------------------------------------------- formats


def test_render_every_format_returns_text(small_report: Report) -> None:
    for fmt in FORMATS:
        text = render(small_report, fmt)
        assert isinstance(text, str) and len(text) > 200, fmt


def test_html_structure_figures_alt_and_rows(small_report: Report, small: stats.Comparison) -> None:
    html = render(small_report, "html")
    page = parse(html)
    assert html.startswith("<!DOCTYPE html>")
    for sid in ("headline", "test-sets", "sampling", "dedup", "shift", "images", "provenance"):
        assert sid in page.section_ids
    # every figure embedded once, as a data URI, with alt text
    assert len(page.imgs) == len(small_report.figures) >= 1
    for img in page.imgs:
        assert (img.get("src") or "").startswith("data:image/")
        assert len(img.get("alt") or "") > 30
    assert page.external == []  # self-contained: no network access needed
    # one model table with one row per model
    assert list(page.tables.values()) == [len(small.names)]
    # title escaped
    assert "Small &amp; &lt;test&gt;" in html


def test_absent_sections_say_so(small_report: Report) -> None:
    page = parse(render(small_report, "html"))
    text = " ".join(page.absent)
    assert "No near-duplicate results were given" in text
    assert "No sampling results were given" in text
    assert "No dataset-shift test was given" in text
    assert "No manifests were given" in text
    assert set(small_report.absent) >= {"dedup", "sampling", "shift", "provenance", "images"}
    md = render(small_report, "md")
    assert "No near-duplicate results were given" in md


def test_json_schema_and_numbers_equal_stats(small_report: Report, small: stats.Comparison) -> None:
    data = json.loads(render(small_report, "json"))
    assert data["schema"] == "replicate.report" and data["schema_version"] == SCHEMA_VERSION
    (comp,) = data["comparisons"]
    assert comp["original"]["name"] == "orig-test" and comp["new"]["n"] == 2000
    rows = {r["model"]: r for r in small.rows()}
    assert [m["model"] for m in comp["models"]] == list(small.names)
    for m in comp["models"]:
        r = rows[m["model"]]
        assert m["acc_orig"] == r["acc_orig"] and m["acc_new"] == r["acc_new"]
        assert (m["acc_orig_lower"], m["acc_orig_upper"]) == (r["acc_orig_lower"], r["acc_orig_upper"])
        assert (m["gap"], m["gap_lower"], m["gap_upper"]) == (r["gap"], r["gap_lower"], r["gap_upper"])
        assert m["p_adjusted"] == r["p_adjusted"]
        assert m["effective_robustness"] == r["effective_robustness"]
        assert (m["rank_orig"], m["rank_new"]) == (r["rank_orig"], r["rank_new"])
        assert (m["correct_orig"], m["n_orig"]) == (r["correct_orig"], r["n_orig"])
    assert comp["fit"]["slope"] == small.fit.slope and comp["fit"]["intercept"] == small.fit.intercept
    assert comp["fit"]["slope_ci"][0] == small.fit.slope_ci[0]
    assert comp["diagnosis"].startswith(f"Diagnosis: {small.diagnosis.verdict}.")
    assert comp["rank_stability"]["kendall_tau"] == small.ranks.kendall_tau
    assert comp["drop"]["median"] == float(np.median(small.gap.gap))


def test_every_number_in_the_html_table_is_in_the_json(small_report: Report) -> None:
    page = parse(render(small_report, "html"))
    data = json.loads(render(small_report, "json"))
    (table,) = page.cells.values()
    by_model = {m["model"]: m for m in data["comparisons"][0]["models"]}
    for row in table:
        m = by_model[row["model"]]
        for field in ("acc_orig", "acc_new", "gap", "p_adjusted", "effective_robustness", "rank_orig", "rank_new"):
            assert float(row[field]) == pytest.approx(m[field], rel=1e-15), field
        bounds = [tuple(map(float, x.split(","))) for x in row["ci"].strip(";").split(";")]
        assert bounds[0] == (m["acc_orig_lower"], m["acc_orig_upper"])
        assert bounds[2] == (m["gap_lower"], m["gap_upper"])


def test_csv_is_the_model_table(small_report: Report, small: stats.Comparison) -> None:
    rows = list(csv.DictReader(io.StringIO(render(small_report, "csv"))))
    assert len(rows) == len(small.names)
    assert rows[0]["comparison"] == "orig-test vs new-test (top-1)"
    assert rows[0]["original_set"] == "orig-test" and rows[0]["new_set"] == "new-test"
    assert float(rows[0]["acc_orig"]) == small.rows()[0]["acc_orig"]  # repr round-trips floats exactly


def test_latex_is_a_booktabs_table(small: stats.Comparison) -> None:
    report = build_report(small, labels=["Orig_set & 100% new"])
    tex = render(report, "tex")
    assert tex.count(r"\toprule") == 1 and r"\midrule" in tex and r"\bottomrule" in tex
    assert r"Orig\_set \& 100\% new" in tex  # special characters escaped
    body = tex.split(r"\midrule")[1].split(r"\bottomrule")[0]
    assert body.count(r"\\") == len(small.names)
    assert r"model\_0" in body


def test_markdown_table_rows(small_report: Report, small: stats.Comparison) -> None:
    md = render(small_report, "md")
    rows = [line for line in md.splitlines() if line.startswith("| model\\_")]
    assert len(rows) == len(small.names)
    assert "_Figure:" in md  # figures named (they are embedded in the HTML form)
    md2 = render(small_report, "md", figure_dir="figures")
    assert "](figures/" in md2


def test_top5_and_several_new_sets_and_many_classes() -> None:
    """Several comparisons at once, each with its top-5 twin, and 1,000 classes of per-class drops."""
    rng = np.random.default_rng(1)
    classes = tuple(f"class{i}" for i in range(1000))

    def recs(n_per_class: int, shift: float, per_class: bool = True) -> list[dict]:
        out = []
        for i in range(7):
            acc = 0.6 + 0.04 * i - shift
            cc = rng.binomial(n_per_class, acc, size=1000)
            n = n_per_class * 1000
            out.append({"model": f"net{i}", "n": n, "n_correct": int(cc.sum()),
                        "n_top5_correct": int(min(n, cc.sum() + 0.2 * n))})
            if per_class:
                out[-1].update(class_names=classes, class_n=(n_per_class,) * 1000, class_correct=tuple(cc.tolist()))
        return out

    orig = recs(50, 0.0)
    comps = [stats.compare(orig, recs(10, s, per_class=k == "a"), original_name="val", new_name=f"v2-{k}",
                           bootstrap="none", n_bootstrap=20) for k, s in (("a", 0.1), ("b", 0.12))]
    report = build_report(comps, max_class_entries=2_000)
    assert [c.metric for c in report.comparisons] == ["top-1", "top-5", "top-1", "top-5"]
    assert len({c.key for c in report.comparisons}) == 4
    pc = report.comparisons[0].per_class
    assert pc is not None and pc["reference_model"] == "net6"  # highest original accuracy
    assert list(pc["models"]) == ["net6"] and len(pc["omitted_models"]) == 6  # 7 x 1000 > 2000 entries
    assert len(pc["models"]["net6"]["classes"]) == 1000
    page = parse(render(report, "html"))
    assert list(page.tables.values()) == [7, 7, 7, 7]
    names = [f.name for f in report.figures]
    assert sum(n.endswith("-classes") for n in names) == 1  # per-class drops: set a, top-1 only
    assert sum(n.startswith("overview-") for n in names) == 2  # top-1 and top-5 overviews
    assert all(len(img.get("alt") or "") > 30 for img in page.imgs)


def test_image_set_with_a_comparison_name_but_other_images(small: stats.Comparison) -> None:
    with pytest.raises(ValueError, match=r"test_sets\['new-test'\] == '40 images'; must be the test set of comparisons\[0\]"):
        build_report(small, test_sets=[make_imageset(name="new-test")])


def test_image_grid_and_provenance(small: stats.Comparison) -> None:
    toy = make_imageset(n=60, classes=30, name="toy-new")
    manifest = make_manifest("sample", fingerprint=toy.fingerprint, config={"seed": 7})
    report = build_report(small, test_sets=[toy], manifests=[manifest], max_grid_classes=12, images_per_class=3)
    assert "images" not in report.absent and "provenance" not in report.absent
    grid = report.figure("grid-toy-new")
    assert "12 rows" in grid.alt
    html = render(report, "html")
    assert toy.fingerprint in html  # in the test-set table and the manifest
    assert manifest["command"][0] in html
    assert "<dt>seed</dt><dd>7</dd>" in html
    data = json.loads(render(report, "json"))
    assert data["provenance"][0]["fingerprint"] == toy.fingerprint
    assert {"name": "toy-new", "n": 60, "fingerprint": toy.fingerprint} in data["test_sets"]


def test_result_sections_from_dicts(small: stats.Comparison) -> None:
    shift = {"name_a": "orig-test", "name_b": "new-test", "accuracy": 0.71, "accuracy_ci": [0.69, 0.73],
             "n_correct": 2840, "n_total": 4000, "auc": 0.78, "auc_ci": [0.76, 0.8], "p_value": 0.005,
             "permutations": 200, "features": "resnet20", "classifier": "logistic", "distinguishable": True}
    sampling = {"n_selected": 4, "target_total": 5, "seed": 3, "method": "stratified", "shortfalls": [{}],
                "pool": {"name": "pool", "n": 9},
                "strata": [{"class": "cat", "keyword": "tabby", "target": 3, "achieved": 2},
                           {"class": "cat", "keyword": "kitten", "target": 2, "achieved": 2}]}
    report = build_report(small, shift=shift, sampling=sampling)
    assert report.shift[0].label == "orig-test vs new-test"
    assert "AUC 0.78 [0.76, 0.8]" in report.shift[0].highlights[0]
    assert report.sampling[0].figures == ("sampling0-keywords",)
    assert "4 of 5 targeted images" in report.sampling[0].highlights[0]
    html = render(report, "html")
    assert "Held-out accuracy 71.0% [69.0, 73.0]" in html
    assert "No dataset-shift test was given" not in html


# --------------------------------------------------------------------------- files and CLI


def test_write_report_and_cli(tmp_path: Path, small: stats.Comparison) -> None:
    report = build_report(small)
    paths = write_report(report, tmp_path / "out", ["html", "md", "json", "csv", "tex"])
    assert sorted(p.name for p in paths.values()) == ["report.csv", "report.html", "report.json", "report.md", "report.tex"]
    assert (tmp_path / "out/figures" / report.figures[0].filename).read_bytes() == report.figures[0].data

    from replicate.cli import main

    src = tmp_path / "cmp.json"
    src.write_text(json.dumps(small.to_dict()))
    man = tmp_path / "manifest.json"
    man.write_text(json.dumps(make_manifest("compare", fingerprint="abc123")))
    assert main(["report", str(src), str(man), "--out", str(tmp_path / "cli"), "--format", "html,json"]) == 0
    data = json.loads((tmp_path / "cli/report.json").read_text())
    assert data["comparisons"][0]["models"][0]["acc_orig"] == small.rows()[0]["acc_orig"]
    assert data["provenance"][0]["fingerprint"] == "abc123"


# --------------------------------------------------------------------------- bad input


def test_unknown_format(small_report: Report) -> None:
    with pytest.raises(ValueError, match=r"format == 'htm'; must be one of: 'html', .* Did you mean 'html'"):
        render(small_report, "htm")
    with pytest.raises(ValueError, match="format == 'pdf'; must be one of"):
        write_report(small_report, "/tmp/never-written", ["pdf"])


def test_unwritable_output_directory(tmp_path: Path, small_report: Report) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    with pytest.raises(PermissionError, match=r"--out == '.*a-file/sub'; must be a directory that can be written"):
        write_report(small_report, blocker / "sub", ["html"])
    with pytest.raises(FileExistsError, match=r"--out == '.*a-file'; must be a directory\. It is a file"):
        write_report(small_report, blocker, ["html"])


def test_cli_bad_input_exit_code(tmp_path: Path, small: stats.Comparison, capsys: pytest.CaptureFixture[str]) -> None:
    from replicate.cli import main

    src = tmp_path / "cmp.json"
    src.write_text(json.dumps(small.to_dict()))
    assert main(["report", str(src), "--out", str(tmp_path / "o"), "--format", "html,docx"]) == 2
    assert "--format == 'docx'; must be one of" in capsys.readouterr().err
    bad = tmp_path / "other.json"
    bad.write_text(json.dumps({"hello": 1}))
    assert main(["report", str(bad), "--out", str(tmp_path / "o")]) == 2
    assert "must be a comparison" in capsys.readouterr().err


def test_mixed_datasets_in_one_table(small: stats.Comparison) -> None:
    d = small.to_dict()
    d["models"][2] = {**d["models"][2], "n_orig": 50_000, "correct_orig": 40_000}
    with pytest.raises(ValueError, match="mixes results from different test sets"):
        build_report(d)


def test_unnamed_or_ambiguous_comparisons(small: stats.Comparison) -> None:
    other = counts_comparison(original="orig-test", new="new-test", n_new=3_000, seed=2)
    with pytest.raises(ValueError, match=r"hold different test sets \(fingerprints or sizes differ\)"):
        build_report([small, other])
    # labelled apart, the same two comparisons are fine and each says which sets it holds
    report = build_report([small, other], labels=["new set, round 1", "new set, round 2"])
    assert [c.label for c in report.comparisons] == ["new set, round 1", "new set, round 2"]
    unnamed = {**small.to_dict(), "new_name": ""}
    with pytest.raises(ValueError, match="new test set name == ''; must be a name when a report holds several"):
        build_report([small, unnamed])
    with pytest.raises(ValueError, match=r"labels == \['a'\]; must be one label per comparison \(2\)"):
        build_report([small, other], labels=["a"])
    with pytest.raises(ValueError, match=r"labels == \['x'\]; must be distinct"):
        build_report([small, other], labels=["x", "x"])


def test_malformed_inputs(small: stats.Comparison) -> None:
    with pytest.raises(ValueError, match=r"comparisons\[0\] == .*must be a comparison with per-model rows"):
        build_report({"original_name": "a"})
    d = small.to_dict()
    del d["models"][0]["acc_new"]
    with pytest.raises(ValueError, match=r"comparisons\[0\]\.models\[0\] == .*missing: acc_new"):
        build_report(d)
    with pytest.raises(TypeError, match="comparisons\\[0\\] == 3; must be a result object with to_dict"):
        build_report(3)
    with pytest.raises(ValueError, match="figure_format == 'jpg'; must be one of: 'png', 'svg'"):
        build_report(small, figure_format="jpg")
    with pytest.raises(TypeError, match="report == 'x'; must be a Report"):
        render("x", "html")


# --------------------------------------------------------------------------- real data


@pytest.mark.shared
def test_cifar10_1_reanalysis_numbers_equal_stats(cifar10_1: list[stats.Comparison]) -> None:
    report = build_report(cifar10_1, title="CIFAR-10.1 reanalysis")
    data = json.loads(render(report, "json"))
    try:
        import jsonschema

        from replicate.report import json_schema

        jsonschema.validate(data, json_schema())
    except ImportError:  # the schema itself is tested where jsonschema is installed
        pass
    assert [c["new"]["name"] for c in data["comparisons"]] == ["cifar10.1-v4", "cifar10.1-v6"]
    assert [c["new"]["n"] for c in data["comparisons"]] == [2021, 2000]
    for comp, cmp in zip(data["comparisons"], cifar10_1, strict=True):
        assert len(comp["models"]) == 30
        for m, r in zip(comp["models"], cmp.rows(), strict=True):
            assert (m["model"], m["acc_orig"], m["acc_new"], m["gap"], m["p_adjusted"]) == (
                r["model"], r["acc_orig"], r["acc_new"], r["gap"], r["p_adjusted"])
            assert (m["gap_lower"], m["gap_upper"], m["effective_robustness"]) == (
                r["gap_lower"], r["gap_upper"], r["effective_robustness"])
        assert comp["fit"]["slope"] == cmp.fit.slope
    # published CIFAR-10.1 value: shake_shake_26_2x64d_SSI_cutout16 scores 97.11% on CIFAR-10 test
    row = next(m for m in data["comparisons"][0]["models"] if m["model"] == "shake_shake_26_2x64d_SSI_cutout16")
    assert row["correct_orig"] == 9711
    page = parse(render(report, "html"))
    assert list(page.tables.values()) == [30, 30]
    assert len(page.imgs) == len(report.figures) == 4  # 2 scatters, v6 per-class drops, overview
    assert report.comparisons[1].per_class["reference_model"] == "shake_shake_26_2x64d_SSI_cutout16"
    assert "per_class" not in report.absent


@pytest.mark.shared
@pytest.mark.slow
def test_imagenetv2_reanalysis_renders(shared: Path) -> None:
    """67 models, three new sets, top-1 and top-5 (counts from the published predictions)."""
    d = np.load(shared / "data/imagenetv2/predictions.npz")

    def records(ds: str) -> list[dict]:
        y = d[f"labels__{ds}"]
        top1 = d[f"top1__{ds}"] == y
        top5 = d[f"top5_correct__{ds}"]
        return [{"model": str(m), "n": int(y.size), "n_correct": int(a), "n_top5_correct": int(b)}
                for m, a, b in zip(d[f"models__{ds}"], top1.sum(1), top5.sum(1), strict=True)]

    orig = records("imagenet-validation-original")
    sets = {"imagenetv2-b-33": "MatchedFrequency", "imagenetv2-a-44": "Threshold0.7", "imagenetv2-c-12": "TopImages"}
    comps = [stats.compare(orig, records(ds), original_name="imagenet-val", new_name=name, bootstrap="none",
                           n_bootstrap=20) for ds, name in sets.items()]
    report = build_report(comps, title="ImageNetV2 reanalysis")
    assert len(report.comparisons) == 6
    page = parse(render(report, "html"))
    assert sorted(page.tables.values()) == sorted(len(c.rows) for c in report.comparisons)
    assert max(page.tables.values()) == 67
    data = json.loads(render(report, "json"))
    # published ImageNetV2 value: resnet50 76.13% on validation, 63.33% top-1 on MatchedFrequency
    mf = next(c for c in data["comparisons"] if c["new"]["name"] == "MatchedFrequency" and c["metric"] == "top-1")
    r50 = next(m for m in mf["models"] if m["model"] == "resnet50")
    assert (r50["correct_orig"], r50["correct_new"]) == (38065, 6333)


def test_cli_from_a_prediction_file(tmp_path: Path) -> None:
    """A prediction file in the CIFAR-10.1 release layout, compared and reported in one command."""
    from replicate.cli import main

    rng = np.random.default_rng(5)
    y0 = rng.integers(0, 10, size=10_000)
    y1 = rng.integers(0, 10, size=300)
    names = np.array([f"net{i}" for i in range(7)])
    acc = np.linspace(0.7, 0.95, 7)

    def preds(y: np.ndarray, shift: float) -> np.ndarray:
        keep = rng.random((7, y.size)) < (acc - shift)[:, None]
        return np.where(keep, y, (y + 1) % 10).astype(np.int8)

    path = tmp_path / "preds.npz"
    np.savez(path, model_names=names, pred_original=preds(y0, 0), pred_v9=preds(y1, 0.08), labels_v9=y1)
    labels = tmp_path / "y0.npy"
    np.save(labels, y0)
    out = tmp_path / "rep"
    code = main(["report", str(path), "--new", "v9", "--bootstrap", "none", "--n-bootstrap", "20",
                 "--out", str(out), "--format", "json"])
    assert code == 0, "report command failed"
    data = json.loads((out / "report.json").read_text())
    (comp,) = data["comparisons"]
    assert len(comp["models"]) == 7 and comp["new"]["n"] == 300
    assert comp["new"]["fingerprint"]  # the evaluation results' dataset fingerprint
    assert data["provenance"][-1]["kind"] == "report"
    assert str(path) in data["provenance"][-1]["files"]


def test_dedup_section_with_gallery(small: stats.Comparison) -> None:
    import pandas as pd

    from replicate.dedup import DedupConfig, DedupResult

    orig = make_imageset(n=20, name="orig-train", seed=1)
    new = make_imageset(n=20, name="new-pool", seed=2)
    pairs = pd.DataFrame({
        "query_id": [new.ids[0], new.ids[3], new.ids[5]], "reference_set": ["orig-train"] * 3,
        "reference_id": [orig.ids[2], orig.ids[4], orig.ids[9]], "l2": [0.0, 3.5, 80.0],
        "aligned": [0.0, 0.02, 0.9], "flagged": [True, True, False], "flagged_by": ["l2,aligned", "aligned", ""],
    })
    flagged = pd.DataFrame({"query_id": [new.ids[0], new.ids[3]], "reason": ["reference"] * 2, "group": [0, 1],
                            "matches": [f"orig-train:{orig.ids[2]}", f"orig-train:{orig.ids[4]}"]})
    groups = pd.DataFrame(columns=["group", "set", "id", "is_query", "kept"])
    result = DedupResult(pairs=pairs, groups=groups, flagged=flagged, kept_ids=np.asarray(new.ids[[1, 2, 4]]),
                         config=DedupConfig(), query_name="new-pool", n_query=20,
                         reference_sizes={"orig-train": 20}, blacklist={})
    report = build_report(small, dedup=result, test_sets=[orig, new])
    (sec,) = report.dedup
    assert sec.label == "near-duplicates of new-pool in orig-train"
    assert sec.highlights[0].startswith("2 of 20 images flagged (2 near an original image")
    fig = report.figure("dedup0-pairs")
    assert "Gallery of 2 image pairs" in fig.alt and fig.data[:4] == b"\x89PNG"
    html = render(report, "html")
    assert "No near-duplicate results were given" not in html and fig.data_uri() in html
    # without the pixels the section still shows the numbers, and says nothing is drawn
    bare = build_report(small, dedup=result)
    assert bare.dedup[0].figures == () and bare.dedup[0].numbers["counts.flagged"] == 2
    assert "No gallery: the flagged pairs are drawn when" in render(bare, "html")
    none_flagged = DedupResult(pairs=pairs.assign(flagged=False), groups=groups, flagged=flagged.iloc[:0],
                               kept_ids=np.asarray(new.ids), config=DedupConfig(), query_name="new-pool",
                               n_query=20, reference_sizes={"orig-train": 20}, blacklist={})
    quiet = build_report(small, dedup=none_flagged, test_sets=[orig, new])
    assert quiet.dedup[0].note == "No pairs were flagged, so there is no gallery."
    assert "No pairs were flagged" in render(quiet, "md")


def test_sampling_result_alone() -> None:
    """A report from a SamplingResult only: keyword figure, a grid of the drawn set, no model table."""
    from replicate.keywords import keyword_counts
    from replicate.sampling import sample

    result = sample(make_imageset(n=200, name="pool", seed=3), keyword_counts(make_imageset(n=40)), seed=1,
                    name="new-sample")
    report = build_report(sampling=result)
    (sec,) = report.sampling
    assert sec.figures == ("sampling0-keywords",)
    assert sec.highlights[0].startswith(f"{result.n_selected} of {result.target_total} targeted images drawn")
    assert report.params["image_grids"] == ["grid-new-sample"]  # the drawn set's pixels, from the result
    assert "comparisons" in report.absent
    page = parse(render(report, "html"))
    assert page.tables == {} and len(page.imgs) == 2
    assert "No comparison results were given" in " ".join(page.absent)


def test_svg_figures_and_reproducible_output(small: stats.Comparison) -> None:
    a = build_report(small, figure_format="svg", created="2026-01-01T00:00:00Z")
    b = build_report(small, figure_format="svg", created="2026-01-01T00:00:00Z")
    assert a.figures[0].format == "svg" and a.figures[0].data.lstrip().startswith(b"<?xml")
    assert "data:image/svg+xml;base64," in render(a, "html")
    for fmt in FORMATS:  # same results and creation time: byte-identical output (a rerun changes nothing)
        assert render(a, fmt) == render(b, fmt), fmt
    png1 = build_report(small, created="x").figures[0].data
    png2 = build_report(small, created="x").figures[0].data
    assert png1 == png2


def test_flagged_models_are_listed(small: stats.Comparison) -> None:
    d = small.to_dict()
    d["models"][1] = {**d["models"][1], "flags": ["implausible gap: the prediction file is probably mismatched"]}
    report = build_report(d)
    assert report.comparisons[0].rows[1].flags == ("implausible gap: the prediction file is probably mismatched",)
    html = render(report, "html")
    assert '<li data-model="model_1"><strong>model_1</strong>: implausible gap' in html
    assert "- **model\\_1**: implausible gap" in render(report, "md")


def test_headline_names_sizes_and_fingerprints(small: stats.Comparison) -> None:
    report = build_report(small, fingerprints={"orig-test": "ab" * 32})
    (c,) = report.comparisons
    assert c.original.fingerprint == "ab" * 32 and c.new.fingerprint is None
    html = render(report, "html")
    assert "6 models on orig-test (n = 10,000, fingerprint abababababab) and new-test (n = 2,000), top-1" in html
    assert "ab" * 32 in html  # in full in the test-set table


def test_json_matches_its_schema(small: stats.Comparison) -> None:
    jsonschema = pytest.importorskip("jsonschema")
    from replicate.report import json_schema

    schema = json_schema()
    assert schema["properties"]["schema_version"]["const"] == SCHEMA_VERSION
    toy = make_imageset(n=40, name="toy-new")
    shift = {"name_a": "orig-test", "name_b": "new-test", "accuracy": 0.7, "auc": 0.8, "p_value": 0.01}
    report = build_report(small, test_sets=[toy], shift=shift, manifests=[make_manifest("x")])
    data = json.loads(render(report, "json"))
    jsonschema.validate(data, schema)
    data["comparisons"][0]["models"][0]["gap"] = "8.1"  # a rounded string where a number belongs
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(data, schema)


def test_overview_table_for_several_comparisons(small: stats.Comparison) -> None:
    other = counts_comparison(original="orig-test", new="newer-test", n_new=3_000, seed=2)
    report = build_report([small, other])
    html = render(report, "html")
    assert html.count('<tr data-comparison="') == 2
    assert f'<td class="name">{small.diagnosis.verdict}</td>' in html
    md = render(report, "md")
    assert "| comparison | models | median drop |" in md
    linked = render(report, "md", figure_dir="figures")
    for f in report.figures:  # every figure, the overview scatter included, is linked from the Markdown
        assert f"](figures/{f.filename})" in linked, f.name
    assert json.loads(render(report, "json"))["comparisons"][1]["verdict"] == other.diagnosis.verdict


def test_latex_is_plain_ascii_for_edge_values(small: stats.Comparison) -> None:
    d = small.to_dict()
    d["models"][0] = {**d["models"][0], "p_adjusted": 0.0, "effective_robustness": None}
    tex = render(build_report(d), "tex")
    row = next(line for line in tex.splitlines() if line.startswith(r"model\_0 &"))
    assert r"& $<$ 1e-300 & -- \\" in row
    assert tex.isascii()
