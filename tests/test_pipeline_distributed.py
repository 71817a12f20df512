"""The pipeline's build on a streamed pool with ``[run] executor = "dask"`` on a real local
cluster (a scheduler and two worker processes), through the API and ``replicate build
--executor dask --address``: the same dedup and the same sample as the local executor,
the same stage cache keys (a local run after a dask run reuses its stages)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import replicate
from replicate import ImageSet, pipeline
from replicate.cli import main
from replicate.sources import write_shards
from tests.test_pipeline_sources import BUNDLE, CONFIG, DEMO, _cut

pytest.importorskip("distributed", reason="the dask extra is not installed")
pytestmark = pytest.mark.filterwarnings("ignore::ResourceWarning", "ignore::pytest.PytestUnraisableExceptionWarning")


@pytest.fixture(scope="module")
def cluster():
    from replicate.distributed import connect

    with connect(n_workers=2) as ex:
        yield ex


@pytest.fixture(scope="module")
def shards(tmp_path_factory) -> Path:
    """~210 real pool images (with 10 planted CIFAR-10 test copies) as PNG tar shards."""
    d = tmp_path_factory.mktemp("dist")
    _cut(DEMO / "cifar10_test_sample.npz", d / "test.npz", 10)
    _cut(DEMO / "cifar10_train_sample.npz", d / "train.npz", 10)
    _cut(BUNDLE / "candidates/tinyimagenet-cifar10-sample/images.npz", d / "pool-src.npz", 20, "cifar10_label")
    pool, test = replicate.load(d / "pool-src.npz", name="pool"), replicate.load(d / "test.npz")
    planted = np.arange(0, len(test), 10)
    meta = {k: np.concatenate([v, np.repeat(v[:1], len(planted))]) for k, v in pool.metadata.items()}
    full = ImageSet(np.concatenate([pool.images, test.images[planted]]),
                    np.concatenate([pool.labels, test.labels[planted]]), pool.class_names,
                    [*pool.ids.tolist(), *[f"planted/{i}" for i in planted]], meta, name="pool")
    write_shards(full, d / "shards", shard_size=40, format="png")
    (d / "run.toml").write_text(CONFIG.format(pool="shards", pool_keys="stream = true\nchunk_size = 32"))
    return d


@pytest.fixture(scope="module")
def local(shards: Path):
    return pipeline.build_testset(shards / "run.toml", out=shards / "local", quiet=True)


def test_dask_build_equals_local_and_shares_its_cache(shards: Path, tmp_path: Path, cluster, local) -> None:
    cfg = shards / "run.toml"
    dist = pipeline.build_testset(cfg, out=tmp_path / "dist", quiet=True, executor="dask",
                                  address=cluster.client.scheduler.address)
    assert [s.key for s in local.stages] == [s.key for s in dist.stages]
    assert [s.cached for s in dist.stages] == [False, False]
    assert local.summary["dedup"] == dist.summary["dedup"] and dist.summary["dedup"]["flagged"] >= 10
    for name in ("dedup/flagged.csv", "dedup/pairs.csv"):
        a, b = (next(s.path for s in r.stages if s.name == "dedup") / name for r in (local, dist))
        if a.exists():
            assert a.read_bytes() == b.read_bytes()
    a, b = ImageSet.load(local.testset_path), ImageSet.load(dist.testset_path)
    assert a.ids.tolist() == b.ids.tolist() and len(a) >= 10
    np.testing.assert_array_equal(a.images, b.images)
    # the same output directory, now on this machine: no --overwrite needed, both stages cached
    again = pipeline.build_testset(cfg, out=tmp_path / "dist", quiet=True, executor="local")
    assert [s.cached for s in again.stages] == [True, True]
    assert [s.key for s in again.stages] == [s.key for s in dist.stages]


def test_cli_executor_flag(shards: Path, tmp_path: Path, cluster, local, capsys) -> None:
    out = tmp_path / "cli"
    rc = main(["build", str(shards / "run.toml"), "--out", str(out), "--quiet", "--json",
               "--executor", "dask", "--address", cluster.client.scheduler.address])
    assert rc == 0
    data = json.loads(capsys.readouterr().out)
    assert data["summary"]["new_testset"]["n"] >= 10
    assert ImageSet.load(out / "new-testset").ids.tolist() == ImageSet.load(local.testset_path).ids.tolist()
    with pytest.raises(SystemExit):
        main(["build", str(shards / "run.toml"), "--executor", "ray"])
    assert "invalid choice: 'ray'" in capsys.readouterr().err
    assert main(["build", str(shards / "run.toml"), "--out", str(tmp_path / "x"), "--address", "tcp://x:1"]) == 2
    assert "config [run] address == 'tcp://x:1'; must be used with executor = 'dask'" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()
