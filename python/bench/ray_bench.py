"""Sharded ingest on a local Ray against one process: the same images, model and head.

    python python/bench/ray_bench.py --images 2000 --num-cpus 2 [--model M.onnx] [--work DIR]

Writes ``--images`` PNG pictures (64 x 64, two striped classes with noise) once under ``--work``,
then times, each from a cold start of its own:

- one process: ``milan.Index.add_images`` (the ``milan index add`` pipeline, the same crate
  function) with ``--num-cpus`` ONNX Runtime threads;
- Ray: ``ray.init`` alone, then ``milan.ray.ingest`` on that warm cluster (actors started and
  the model opened in each, shards coded and written), then ``milan index import-shards``;
  and a second ingest into a new folder on the same cluster, whose start-up is paid.

Prints one JSON object; docs/benchmarks.md ("Sharded ingest") quotes it.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "python" / "tests"))

import milan  # noqa: E402
import milan.ray as mray  # noqa: E402
from helpers import class_image, milan_cli, write_png  # noqa: E402


def make_images(folder: Path, count: int) -> None:
    stamp = folder / ".complete"
    if stamp.exists() and int(stamp.read_text()) == count:
        return
    shutil.rmtree(folder, ignore_errors=True)
    rng = np.random.default_rng(7)
    for i in range(count):
        cls = i % 2
        sub = folder / ("red" if cls == 0 else "blue")
        sub.mkdir(parents=True, exist_ok=True)
        write_png(sub / f"{i:05}.png", class_image(rng, cls, size=64))
    stamp.write_text(str(count))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=2000)
    parser.add_argument("--num-cpus", type=int, default=2)
    parser.add_argument("--model", default=str(ROOT / "tests" / "data" / "tiny_extractor.onnx"))
    parser.add_argument("--shard-size", type=int, default=250)
    parser.add_argument("--work", default=str(ROOT / "target" / "bench" / "ray"))
    args = parser.parse_args()
    work = Path(args.work)
    images = work / "images"
    make_images(images, args.images)
    files = mray.list_images(images)
    extractor = milan.Extractor(args.model, device="cpu", threads=args.num_cpus)
    head = milan.Head.lsh(64, extractor.dim, seed=1, extractor=extractor)
    head_path = work / "lsh64.head"
    head.save(head_path)
    figures = {"images": len(files), "model": Path(args.model).name, "num_cpus": args.num_cpus}

    # One process.
    single = work / "single.milan"
    shutil.rmtree(single, ignore_errors=True)
    started = time.perf_counter()
    with milan.Index.create(single, extractor=extractor, head=head) as index:
        report = index.add_images(files)
    figures["single_process_s"] = round(time.perf_counter() - started, 2)
    assert report["added"] == len(files), report

    # Ray: start-up, first ingest, import, second ingest on the warm cluster.
    import ray

    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    started = time.perf_counter()
    ray.init(
        num_cpus=args.num_cpus, include_dashboard=False, log_to_driver=False,
        _temp_dir=tempfile.mkdtemp(prefix="mr-", dir="/tmp"),
    )
    figures["ray_init_s"] = round(time.perf_counter() - started, 2)
    try:
        timings = []
        for run in (1, 2):
            out = work / f"shards{run}"
            shutil.rmtree(out, ignore_errors=True)
            started = time.perf_counter()
            summary = mray.ingest(
                images, args.model, head_path, out, num_cpus=args.num_cpus, shard_size=args.shard_size
            )
            timings.append(round(time.perf_counter() - started, 2))
            assert summary["coded"] == len(files), summary
        figures["ray_ingest_first_s"], figures["ray_ingest_second_s"] = timings
    finally:
        ray.shutdown()
    merged = work / "sharded.milan"
    shutil.rmtree(merged, ignore_errors=True)
    cli = str(milan_cli())
    subprocess.run([cli, "index", "create", str(merged), "--model", args.model, "--head", str(head_path)],
                   check=True, capture_output=True)
    started = time.perf_counter()
    subprocess.run([cli, "index", "import-shards", str(merged), str(work / "shards1"), "--quiet"],
                   check=True, capture_output=True)
    figures["import_shards_s"] = round(time.perf_counter() - started, 2)
    figures["cli"] = "release" if "/release/" in cli else "debug"

    # The same codes both ways.
    with milan.Index.open(single, read_only=True) as a, milan.Index.open(merged, read_only=True) as b:
        codes_a = dict(zip(a.keys(a.ids()), map(bytes, a.codes(a.ids()))))
        codes_b = dict(zip(b.keys(b.ids()), map(bytes, b.codes(b.ids()))))
    figures["same_codes"] = codes_a == codes_b
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
