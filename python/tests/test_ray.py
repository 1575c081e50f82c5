"""Sharded ingest on a real local Ray (2 CPUs) with the tiny test model: codes bit for bit those
of `milan index add`, unreadable images named, a worker killed mid-shard retried without a
half-written or doubled shard, a killed driver resumed from the manifest.

Needs ray[data]==2.60.0 (`make python-ray-env`). Without it these tests skip and say so; with
MILAN_REQUIRE_RAY=1 (set by `make python-test` after a good install) a missing Ray fails them.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

import milan
from helpers import ROOT, TINY_MODEL, run_cli, write_image_set, write_png

try:
    import ray  # noqa: F401
    import ray.data  # noqa: F401

    _problem = None
except ImportError as err:  # pragma: no cover - depends on the environment
    _problem = f"Ray Data cannot be imported ({err})"
if _problem is not None:
    if os.environ.get("MILAN_REQUIRE_RAY") == "1":
        raise RuntimeError(f"MILAN_REQUIRE_RAY=1 but {_problem}")
    pytest.skip(
        f"{_problem}: the Ray tests did not run; `make python-ray-env` installs ray[data]==2.60.0",
        allow_module_level=True,
    )

from milan.ray import list_images  # noqa: E402


def ingest_command(images, head, out, *extra):
    return [
        sys.executable, "-m", "milan.ray", "ingest", "--images", str(images), "--model", str(TINY_MODEL),
        "--head", str(head), "--out", str(out), "--num-cpus", "2", "--json", *map(str, extra),
    ]


def run_ingest(images, head, out, *extra, env=None, expect=0):
    done = subprocess.run(
        ingest_command(images, head, out, *extra), capture_output=True, text=True, cwd=ROOT,
        env={**os.environ, "RAY_AUTH_MODE": "disabled", **(env or {})}, timeout=600,
    )
    assert done.returncode == expect, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def stored(path):
    """Key -> (packed code, label) of every live item."""
    with milan.Index.open(path, read_only=True) as index:
        ids = index.ids()
        return dict(zip(index.keys(ids), zip(map(bytes, index.codes(ids)), index.labels(ids))))


@pytest.fixture(scope="module")
def extractor():
    return milan.Extractor(TINY_MODEL)


@pytest.fixture
def image_set(tmp_path, rng, extractor):
    """Two class folders and noise pictures (one a copy of another: the same content), and a
    32-bit LSH head centred on their features, so that codes differ."""
    files = write_image_set(tmp_path / "images", rng, per_class=10)
    noise = tmp_path / "images" / "noise"
    noise.mkdir()
    for i in range(10):
        write_png(noise / f"noise{i}.png", rng.integers(0, 256, size=(24 + i, 36, 3), dtype=np.uint8))
    (noise / "copy.png").write_bytes((noise / "noise3.png").read_bytes())
    files = list_images(tmp_path / "images")
    head = milan.Head.lsh(32, extractor.dim, seed=5, mean=extractor.features(files).mean(axis=0))
    head.save(tmp_path / "lsh.head")
    return tmp_path / "images", tmp_path / "lsh.head"


def test_sharded_codes_are_those_of_milan_index_add_and_unreadable_images_are_named(tmp_path, image_set):
    images, head = image_set
    (images / "noise" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnot an image")
    shards = tmp_path / "shards"
    summary = run_ingest(images, head, shards, "--shard-size", "7", "--label-from-dir", expect=3)
    assert summary["shards"] == 5 and summary["written"] == 5 and summary["images"] == 32
    assert summary["coded"] == 31
    assert [f["path"] for f in summary["failed"]] == [str(images / "noise" / "broken.png")]
    assert summary["failed_by_reason"] == {"corrupt": 1}
    manifest = json.loads((shards / "manifest.json").read_text())
    assert manifest["done"] == [0, 1, 2, 3, 4]
    assert manifest["head"]["fingerprint"] == milan.Head.load(head).fingerprint
    assert not list(shards.glob(".shard-*"))

    # The shards imported, against one `milan index add` of the same folder.
    run_cli("index", "create", tmp_path / "sharded", "--model", TINY_MODEL, "--head", head)
    report = json.loads(run_cli("index", "import-shards", tmp_path / "sharded", shards, "--json", expect=3).stdout)
    assert (report["added"], report["duplicates"]) == (30, 1)
    assert report["failed"][0]["path"] == str(images / "noise" / "broken.png")
    run_cli("index", "create", tmp_path / "single", "--model", TINY_MODEL, "--head", head)
    single = json.loads(
        run_cli("index", "add", tmp_path / "single", images, "-r", "--label-from-dir", "--json", expect=3).stdout
    )
    assert single["added"] == 30 and single["duplicates"] == 1
    sharded_items, single_items = stored(tmp_path / "sharded"), stored(tmp_path / "single")
    assert sharded_items == single_items
    assert len({code for code, _ in single_items.values()}) > 10

    # Keys and content hashes came through: `index add` and `index sync` find nothing to do.
    again = json.loads(run_cli("index", "add", tmp_path / "sharded", images, "-r", "--json", expect=3).stdout)
    assert (again["added"], again["already_indexed"]) == (0, 31)  # the copy too
    plan = json.loads(run_cli("index", "sync", tmp_path / "sharded", images, "--dry-run", "--json").stdout)
    assert (plan["unchanged"], plan["moved"], plan["deleted"], plan["recoded"]) == (30, 0, 0, 0), plan
    assert plan["plan"]["adds"] == [str(images / "noise" / "broken.png")]  # to be tried again


def test_a_worker_killed_mid_shard_is_retried_without_a_half_or_double_shard(tmp_path, image_set):
    images, head = image_set
    shards = tmp_path / "shards"
    trigger = tmp_path / "die-once"
    trigger.write_text("")
    summary = run_ingest(images, head, shards, "--shard-size", "4", env={"MILAN_RAY_FAIL_ONCE": str(trigger)})
    assert not trigger.exists(), "no worker died"
    assert summary["written"] == summary["shards"] == 8 and summary["coded"] == 31
    assert not list(shards.glob(".shard-*")), "a half-written shard was left"
    rows = []
    for n in range(8):
        shard = json.loads((shards / f"shard-{n:06d}" / "shard.json").read_text())
        rows.extend((shards / f"shard-{n:06d}" / "keys.txt").read_text().splitlines())
        assert shard["rows"] == len(np.load(shards / f"shard-{n:06d}" / "codes.npy"))
    assert rows == list_images(images)
    run_cli("index", "create", tmp_path / "idx", "--model", TINY_MODEL, "--head", head)
    report = json.loads(run_cli("index", "import-shards", tmp_path / "idx", shards, "--json").stdout)
    assert report["added"] == 30 and report["len"] == 30  # the copy once


def test_a_killed_driver_resumes_from_the_manifest(tmp_path, image_set, rng):
    images, head = image_set
    more = images / "more"
    more.mkdir()
    for i in range(160):
        write_png(more / f"m{i:03}.png", rng.integers(0, 256, size=(20, 20, 3), dtype=np.uint8))
    shards = tmp_path / "shards"
    driver = subprocess.Popen(
        ingest_command(images, head, shards, "--shard-size", "2"), cwd=ROOT, start_new_session=True,
        env={**os.environ, "RAY_AUTH_MODE": "disabled"}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 300
        while not list(shards.glob("shard-*")) and time.monotonic() < deadline:
            assert driver.poll() is None, "the ingest ended before writing a shard"
            time.sleep(0.01)
    finally:
        # The driver and the Ray it started, all at once, as a lost machine.
        os.killpg(driver.pid, signal.SIGKILL)
        driver.wait()
    before = {p.name for p in shards.glob("shard-*")}
    assert 0 < len(before) < 96, before
    summary = run_ingest(images, head, shards, "--shard-size", "2")
    assert summary["written_before"] >= len(before)
    assert summary["written"] + summary["written_before"] == summary["shards"] == 96
    assert summary["coded"] == 191
    assert not list(shards.glob(".shard-*"))
    run_cli("index", "create", tmp_path / "idx", "--model", TINY_MODEL, "--head", head)
    report = json.loads(run_cli("index", "import-shards", tmp_path / "idx", shards, "--json").stdout)
    assert report["len"] == 190  # a copy of a noise picture is indexed once
    # Every image once, with the codes the head gives its features.
    items = stored(tmp_path / "idx")
    # noise3.png has the content of copy.png, which comes first.
    files = [f for f in list_images(images) if not f.endswith("noise3.png")]
    assert sorted(items) == sorted(files)
    codes = milan.Head.load(head).codes(milan.Extractor(TINY_MODEL).features(files))
    assert [items[f][0] for f in files] == [bytes(c) for c in codes]


def test_another_ingest_in_the_same_folder_is_refused(tmp_path, image_set):
    images, head = image_set
    shards = tmp_path / "shards"
    shards.mkdir()
    (shards / "stray.txt").write_text("")
    done = subprocess.run(ingest_command(images, head, shards), capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 1 and "not empty" in done.stderr, done.stderr

    # A plan for other images (none: no shard, so no Ray either), then these images: refused.
    (shards / "stray.txt").unlink()
    empty = tmp_path / "empty"
    empty.mkdir()
    assert run_ingest(empty, head, shards)["shards"] == 0
    done = subprocess.run(ingest_command(images, head, shards), capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 1 and "another ingest" in done.stderr and "source list" in done.stderr, done.stderr
    assert sorted(p.name for p in shards.iterdir()) == ["manifest.json", "sources.txt"]


def test_the_command_line_names_what_is_wrong(tmp_path, image_set):
    images, head = image_set
    done = subprocess.run(
        ingest_command(tmp_path / "nowhere", head, tmp_path / "shards"), capture_output=True, text=True, cwd=ROOT
    )
    assert done.returncode == 1 and "nowhere: cannot read" in done.stderr, done.stderr
    done = subprocess.run(
        ingest_command(images, head, tmp_path / "shards", "--shard-size", "0"), capture_output=True, text=True, cwd=ROOT
    )
    assert done.returncode == 2 and "--shard-size must be 1 or more" in done.stderr, done.stderr
    other = milan.Head.lsh(16, 8, seed=1)
    other.save(tmp_path / "other.head")
    done = subprocess.run(
        ingest_command(images, tmp_path / "other.head", tmp_path / "shards"), capture_output=True, text=True, cwd=ROOT
    )
    assert done.returncode == 1 and "8-dimensional" in done.stderr, done.stderr
