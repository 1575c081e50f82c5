"""Images from Python with the tiny test model: codes bit for bit those of `milan index add`,
skipped files named, other models refused, ONNX Runtime found or refused by name."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys

import numpy as np
import pytest

import milan
from helpers import ROOT, TINY_MODEL, TINY_NHWC_MODEL, run_cli, write_image_set, write_png


@pytest.fixture(scope="module")
def extractor():
    return milan.Extractor(TINY_MODEL)


@pytest.fixture
def images(tmp_path, rng):
    return write_image_set(tmp_path / "images", rng, per_class=10)


def stored(index):
    """Key -> packed code of every live item."""
    ids = index.ids()
    return dict(zip(index.keys(ids), map(bytes, index.codes(ids))))


def test_extractor_reads_the_model_contract_and_gives_float32_features(extractor, images):
    assert (extractor.dim, extractor.input_size, extractor.layout) == (16, 32, "nchw")
    assert (extractor.pixel_range, extractor.output, extractor.input) == ("imagenet", "features", "input")
    assert extractor.device == "cpu"
    assert extractor.model == TINY_MODEL and len(extractor.fingerprint) == 64
    features = extractor.features(images)
    assert features.dtype == np.float32 and features.shape == (len(images), 16)
    assert np.all(np.isfinite(features)) and np.ptp(features, axis=0).max() > 0
    # Row i is image i, whatever the batching.
    one_by_one = np.concatenate([extractor.features([path], batch_size=1) for path in images[::-1]])
    np.testing.assert_allclose(one_by_one[::-1], features, rtol=1e-5, atol=1e-6)
    assert extractor.features([]).shape == (0, 16)


def test_codes_from_python_are_bit_for_bit_those_of_milan_index_add(tmp_path, rng, extractor, images):
    # Noise images beside the two classes, and a head centred on the features: many codes.
    noise = tmp_path / "images" / "noise"
    noise.mkdir()
    for i in range(8):
        write_png(noise / f"noise{i}.png", rng.integers(0, 256, size=(24 + i, 36, 3), dtype=np.uint8))
    images = images + sorted(noise.iterdir())
    head = milan.Head.lsh(32, extractor.dim, seed=5, mean=extractor.features(images).mean(axis=0))
    head.save(tmp_path / "lsh.head")

    # The command line's index, from the same head file and images.
    cli_dir = tmp_path / "cli.milan"
    run_cli("index", "create", cli_dir, "--model", TINY_MODEL, "--head", tmp_path / "lsh.head")
    cli_report = json.loads(run_cli("index", "add", cli_dir, *images, "--json", "--label-from-dir").stdout)

    with milan.Index.create(tmp_path / "py.milan", extractor=extractor, head=head) as index:
        assert index.bits == 32 and index.head.fingerprint == head.fingerprint
        assert index.model["fingerprint"] == extractor.fingerprint
        report = index.add_images(images, label_from_dir=True, batch_size=3, commit_every=7)
        # The report is the command's --json report, field for field.
        assert set(report) == set(cli_report)
        assert report["added"] == cli_report["added"] == len(images)
        assert report["failed"] == [] and report["ids"] == [0, len(images) - 1]
        py_codes = stored(index)
        assert index.labels(index.ids()) == ["red"] * 10 + ["blue"] * 10 + ["noise"] * 8

    with milan.Index.open(cli_dir, read_only=True) as cli_index:
        cli_codes = stored(cli_index)
    # Same keys (absolute paths), same codes, bit for bit; not all alike.
    assert py_codes == cli_codes
    assert sorted(py_codes) == sorted(str(path) for path in images)
    assert len(set(py_codes.values())) > 5
    # ... and they are the head's codes of the extractor's features.
    coded = head.codes(extractor.features(images))
    assert [bytes(row) for row in coded] == [py_codes[str(path)] for path in images]

    # Each side sees the other's images as already indexed (the same content hashes).
    with milan.Index.open(cli_dir) as cli_index:
        again = cli_index.add_images(images)
        assert (again["added"], again["already_indexed"]) == (0, len(images))
    rerun = json.loads(run_cli("index", "add", tmp_path / "py.milan", *images, "--json").stdout)
    assert (rerun["added"], rerun["already_indexed"]) == (0, len(images))


def test_search_images_finds_each_image_first_at_distance_zero(tmp_path, extractor, images):
    head = milan.Head.lsh(32, extractor.dim, seed=3, extractor=extractor)
    with milan.Index.create(tmp_path / "idx", extractor=extractor, head=head) as index:
        index.add_images(images)
        ids, distances = index.search_images(images[:5], k=4)
        assert ids.shape == distances.shape == (5, 4)
        assert ids.dtype == np.int64 and distances.dtype == np.int32
        assert np.all(distances[:, 0] == 0)
        keys = index.keys(ids[:, 0])
        # A duplicate-free set: the first hit at distance 0 is the image itself or an image
        # with the same code; its code equals the query's.
        query_codes = head.codes(extractor.features(images[:5]))
        np.testing.assert_array_equal(index.codes(ids[:, 0]), query_codes)
        assert all(key.endswith(".png") for key in keys)
        # The same answer as searching the codes.
        same_ids, same_distances = index.search(query_codes, k=4)
        np.testing.assert_array_equal(ids, same_ids)
        np.testing.assert_array_equal(distances, same_distances)


def test_unreadable_files_are_reported_by_name_and_reason(tmp_path, extractor, images):
    garbage = tmp_path / "garbage.png"
    garbage.write_bytes(b"this is no image at all" * 10)
    truncated = tmp_path / "truncated.png"
    whole = images[0].read_bytes()
    truncated.write_bytes(whole[: len(whole) // 2])
    folder = tmp_path / "images"
    missing = tmp_path / "missing.png"
    head = milan.Head.lsh(16, extractor.dim)
    with milan.Index.create(tmp_path / "idx", extractor=extractor, head=head) as index:
        report = index.add_images([garbage, *images[:4], truncated, folder, missing])
        assert report["added"] == 4
        failed = {entry["path"]: entry["reason"] for entry in report["failed"]}
        assert set(failed) == {str(p) for p in [garbage, truncated, folder, missing]}
        assert failed[str(folder)] == "not_a_file"
        assert failed[str(missing)] == "unreadable"
        assert sum(report["failed_by_reason"].values()) == 4
        assert all(entry["detail"] for entry in report["failed"])
        # Features and queries refuse the first bad file, by name.
        for call in [lambda: extractor.features([images[0], garbage]), lambda: index.search_images([garbage])]:
            with pytest.raises(milan.ImageError) as caught:
                call()
            assert isinstance(caught.value, ValueError) and str(garbage) in str(caught.value)
        assert len(index) == 4


def test_another_model_or_head_is_refused_and_adds_nothing(tmp_path, extractor, images):
    head = milan.Head.lsh(16, extractor.dim, extractor=extractor)
    other = milan.Extractor(TINY_NHWC_MODEL)
    assert other.dim == extractor.dim and other.fingerprint != extractor.fingerprint
    with milan.Index.create(tmp_path / "idx", extractor=extractor, head=head) as index:
        for call in [
            lambda: index.add_images(images, extractor=other),
            lambda: index.search_images(images, extractor=other),
        ]:
            with pytest.raises(milan.MismatchError) as caught:
                call()
            assert isinstance(caught.value, ValueError)
            assert "fingerprint" in str(caught.value) and "use the same model" in str(caught.value)
        assert len(index) == 0
    # A head bound to one model does not go with another; nor a head of another dimension.
    with pytest.raises(milan.MismatchError, match="made for another extractor"):
        milan.Index.create(tmp_path / "other", extractor=other, head=head)
    with pytest.raises(milan.MismatchError, match="takes 8-dimensional features"):
        milan.Index.create(tmp_path / "dim", extractor=extractor, head=milan.Head.lsh(16, 8))
    with pytest.raises(milan.InvalidArgumentError, match="both extractor= and head="):
        milan.Index.create(tmp_path / "half", extractor=extractor)
    # A codes-only index takes no images.
    with milan.Index.create(tmp_path / "codes", bits=16) as index:
        with pytest.raises(milan.MismatchError, match="stores codes only"):
            index.add_images(images)


def test_an_image_index_opens_its_own_model(tmp_path, extractor, images):
    head = milan.Head.lsh(16, extractor.dim)
    milan.Index.create(tmp_path / "idx", extractor=extractor, head=head).close()
    with milan.Index.open(tmp_path / "idx") as index:
        assert index.add_images(images[:3])["added"] == 3
        ids, _ = index.search_images(images[:1], k=1)
        assert ids[0, 0] in index.ids()
    with milan.Index.open(tmp_path / "idx", read_only=True) as index:
        with pytest.raises(milan.ReadOnlyError):
            index.add_images(images[3:])


def test_progress_is_called_and_its_exception_stops_the_run(tmp_path, extractor, images):
    head = milan.Head.lsh(16, extractor.dim)
    seen = []
    with milan.Index.create(tmp_path / "idx", extractor=extractor, head=head) as index:
        index.add_images(images[:8], batch_size=4, progress=lambda done, total: seen.append((done, total)))
        assert seen == [(4, 8), (8, 8)]

        def stop(done, total):
            raise RuntimeError("enough")

        with pytest.raises(RuntimeError, match="enough"):
            index.add_images(images[8:], batch_size=2, commit_every=1, progress=stop)
        # The batch in hand was committed, the rest not run.
        assert len(index) == 10


@pytest.mark.parametrize(
    "call, error, words",
    [
        (lambda e: e.features("one.png"), milan.InvalidTypeError, ["single str", "[path]"]),
        (lambda e: e.features([1, 2]), milan.InvalidTypeError, ["sequence of paths"]),
        (lambda e: e.features([], batch_size=0), milan.InvalidArgumentError, ["batch_size", "got 0"]),
    ],
)
def test_wrong_arguments_to_features_are_clear_errors(extractor, call, error, words):
    with pytest.raises(error) as caught:
        call(extractor)
    for word in words:
        assert word in str(caught.value)


def test_wrong_extractor_settings_are_refused(tmp_path):
    with pytest.raises(milan.InvalidArgumentError, match="unknown layout"):
        milan.Extractor(TINY_MODEL, layout="chw")
    with pytest.raises(milan.InvalidArgumentError, match="unknown device"):
        milan.Extractor(TINY_MODEL, device="tpu")
    with pytest.raises(milan.ModelError, match="no output named"):
        milan.Extractor(TINY_MODEL, output="logits")
    not_a_model = tmp_path / "model.onnx"
    not_a_model.write_bytes(b"not an onnx model")
    with pytest.raises(milan.ModelError) as caught:
        milan.Extractor(not_a_model)
    assert str(not_a_model) in str(caught.value)
    with pytest.raises(milan.StorageError):
        milan.Extractor(tmp_path / "missing.onnx")
    with pytest.raises(milan.ModelError, match="ort_library is not a file"):
        milan.Extractor(TINY_MODEL, ort_library=tmp_path / "libonnxruntime.so")


def test_onnx_runtime_not_found_names_every_place_looked_in(tmp_path):
    # A fresh process whose only candidates are missing: the environment variable, and a
    # package outside any cargo target folder (a copy of the installed one).
    package = os.path.dirname(milan.__file__)
    copy = tmp_path / "site" / "milan"
    shutil.copytree(package, copy)
    code = (
        "import milan, sys\n"
        "try:\n"
        f"    milan.Extractor({str(TINY_MODEL)!r})\n"
        "except milan.ModelError as err:\n"
        "    print(err)\n"
        "    sys.exit(3)\n"
    )
    env = {**os.environ, "PYTHONPATH": str(tmp_path / "site"), "MILAN_ORT_LIB": str(tmp_path / "nowhere.so")}
    env.pop("ORT_DYLIB_PATH", None)
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, cwd=tmp_path)
    if "onnxruntime Python package" in done.stdout:
        pytest.skip("the onnxruntime Python package is installed here: it would be found")
    assert done.returncode == 3, done.stdout + done.stderr
    assert "ONNX Runtime 1.31 was not found" in done.stdout
    assert "nowhere.so (MILAN_ORT_LIB)" in done.stdout
    assert "pip install onnxruntime==1.31.1" in done.stdout
    assert str(copy) in done.stdout



def test_onnx_runtime_is_found_in_the_onnxruntime_python_package(tmp_path):
    # A package installed outside any cargo target folder, beside an `onnxruntime` package
    # whose capi folder holds the library (as its wheel does): found there, and it loads.
    site = tmp_path / "site"
    shutil.copytree(os.path.dirname(milan.__file__), site / "milan")
    capi = site / "onnxruntime" / "capi"
    capi.mkdir(parents=True)
    (site / "onnxruntime" / "__init__.py").write_text("raise ImportError('never imported')\n")
    real = ROOT / ".onnxruntime" / "cpu" / "libonnxruntime.so"
    if not real.is_file():
        pytest.skip("no ONNX Runtime in .onnxruntime/cpu (make setup)")
    (capi / "libonnxruntime.so.1.31.1").symlink_to(real.resolve())
    code = (
        "import milan, milan._runtime as r\n"
        "print(r.find_library())\n"
        f"print(milan.Extractor({str(TINY_MODEL)!r}).dim)\n"
    )
    env = {k: v for k, v in os.environ.items() if k not in ("MILAN_ORT_LIB", "ORT_DYLIB_PATH")}
    env["PYTHONPATH"] = str(site)
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == [str(capi / "libonnxruntime.so.1.31.1"), "16"]


def test_ctrl_c_stops_add_images_keeping_what_was_committed(tmp_path, rng):
    files = write_image_set(tmp_path / "images", rng, per_class=100)
    listing = tmp_path / "files.txt"
    listing.write_text("\n".join(map(str, files)))
    code = (
        "import sys, milan\n"
        f"files = open({str(listing)!r}).read().split(chr(10))\n"
        f"extractor = milan.Extractor({str(TINY_MODEL)!r})\n"
        "head = milan.Head.lsh(16, extractor.dim)\n"
        f"index = milan.Index.create({str(tmp_path / 'idx')!r}, extractor=extractor, head=head)\n"
        "def progress(done, total):\n"
        "    if done == 2:\n"
        "        print('adding', flush=True)\n"
        "    else:\n"
        "        import time; time.sleep(0.05)\n"
        "try:\n"
        "    index.add_images(files, batch_size=1, commit_every=1, progress=progress)\n"
        "except KeyboardInterrupt:\n"
        "    print(len(index), flush=True)\n"
        "    sys.exit(7)\n"
    )
    child = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline().strip() == "adding"
        child.send_signal(signal.SIGINT)
        assert child.wait(timeout=120) == 7
        added = int(child.stdout.read().strip())
    finally:
        if child.poll() is None:
            child.kill()
    assert 2 <= added < len(files)
    with milan.Index.open(tmp_path / "idx", read_only=True) as index:
        assert len(index) == added and index.check()["ok"]
