"""Training and evaluation from Python: a trained head beats random hyperplanes, heads save,
load and pickle, and train, evaluate, split and codes agree with `milan train` and `milan eval`."""

from __future__ import annotations

import json
import pickle

import numpy as np
import pytest

import milan
from helpers import run_cli


def clustered_features(rng, classes=6, per_class=40, dim=32, spread=1.6):
    """Gaussian clusters whose centres lie close together relative to their spread, so that
    random hyperplanes mix them up and a trained head has something to learn."""
    centres = rng.normal(size=(classes, dim)).astype(np.float32)
    labels = np.repeat(np.arange(classes), per_class)
    features = centres[labels] + spread * rng.normal(size=(len(labels), dim)).astype(np.float32)
    # Rows in a mixed order, as a data set is rarely sorted by class.
    order = rng.permutation(len(labels))
    return features[order].astype(np.float32), labels[order].astype(np.int64)


@pytest.fixture(scope="module")
def data():
    return clustered_features(np.random.default_rng(7))


@pytest.fixture(scope="module")
def trained(data):
    features, labels = data
    train_rows, _ = milan.split(labels)
    return milan.train(features[train_rows], labels[train_rows], bits=16, iters=300, seed=1, threads=1)


def test_a_trained_head_beats_random_hyperplanes(data, trained):
    features, labels = data
    report = milan.evaluate(trained, features, labels)
    assert report["k"] == 20 and report["bits"] == 16
    assert report["queries"] == 96 and report["train_items"] == 144
    assert report["head"]["kind"] == "milan-plus"
    assert report["split"] == {"kind": "per-class", "train_fraction": 0.6, "seed": None}
    assert len(report["precision_at_k"]) == 100 and len(report["pr_curve"]) == 17
    lsh = report["baselines"]["lsh"]
    assert report["map_at_k"] > lsh + 0.1, report
    # An LSH head of our own, through the same mean, scores like the report's baseline.
    train_rows, _ = milan.split(labels)
    random_head = milan.Head.lsh(16, 32, seed=0, mean=features[train_rows].mean(axis=0))
    random_map = milan.evaluate(random_head, features, labels)["map_at_k"]
    assert abs(random_map - lsh) < 0.05 and report["map_at_k"] > random_map + 0.1


def test_the_split_is_per_class_and_follows_keys_and_seed(data):
    _, labels = data
    train, test = milan.split(labels, train_fraction=0.6)
    assert train.dtype == test.dtype == np.int64
    assert len(np.intersect1d(train, test)) == 0 and len(train) + len(test) == len(labels)
    for cls in range(6):
        rows = np.flatnonzero(labels == cls)
        # Without keys nor seed, each class's first 24 rows (of 40) train.
        np.testing.assert_array_equal(np.intersect1d(train, rows), rows[:24])
    shuffled, _ = milan.split(labels, seed=3)
    assert not np.array_equal(shuffled, train)
    assert np.array_equal(shuffled, milan.split(labels, seed=3)[0])
    keys = [f"{9999 - i:04}.png" for i in range(len(labels))]  # reversed row order
    by_key, _ = milan.split(labels, keys=keys)
    for cls in range(6):
        rows = np.flatnonzero(labels == cls)
        np.testing.assert_array_equal(np.intersect1d(by_key, rows), rows[-24:])
    # String labels work as classes.
    names = np.array(["abcdef"[c] for c in labels])
    np.testing.assert_array_equal(milan.split(names)[0], train)


def test_heads_save_load_and_pickle_unchanged(tmp_path, data, trained):
    features, _ = data
    codes = trained.codes(features)
    assert codes.dtype == np.uint8 and codes.shape == (len(features), 2)
    trained.save(tmp_path / "h.head")
    loaded = milan.Head.load(tmp_path / "h.head")
    again = pickle.loads(pickle.dumps(trained))
    for head in [loaded, again, milan.Head.from_bytes(trained.to_bytes())]:
        assert head.fingerprint == trained.fingerprint
        assert (head.bits, head.dim, head.kind) == (16, 32, "milan-plus")
        np.testing.assert_array_equal(head.codes(features), codes)
    assert trained.provenance["config"]["iters"] == 300
    assert trained.provenance["data"]["items"] == 144


def test_train_evaluate_and_codes_agree_with_the_command_line(tmp_path, data):
    features, labels = data
    keys = [f"img{i:04}.png" for i in range(len(labels))]
    folder = tmp_path / "data"
    folder.mkdir()
    np.save(folder / "features.npy", features)
    np.save(folder / "labels.npy", labels)
    (folder / "classes.txt").write_text("".join(f"c{c}\n" for c in range(6)))
    (folder / "paths.txt").write_text("".join(f"{key}\n" for key in keys))

    run_cli("train", "--data", folder, "--bits", 16, "--iters", 120, "--seed", 4, "--threads", 1,
            "--quiet", "--out", tmp_path / "cli.head")
    cli_head = milan.Head.load(tmp_path / "cli.head")
    train_rows, test_rows = milan.split(labels, keys=keys)
    py_head = milan.train(features[train_rows], labels[train_rows], bits=16, iters=120, seed=4, threads=1)
    # The same steps on the same rows: the same network, so the same codes.
    np.testing.assert_array_equal(py_head.codes(features), cli_head.codes(features))

    cli = json.loads(run_cli("eval", "--data", folder, "--head", tmp_path / "cli.head", "--json",
                             "--export", tmp_path / "export").stdout)
    report = milan.evaluate(cli_head, features, labels, keys=keys)
    for field in ["map_at_k", "baselines", "precision_at_k", "pr_curve", "queries", "train_items"]:
        assert report[field] == cli[field], field
    # The exported test codes are the head's codes of the test rows, in packbits order.
    exported = np.load(tmp_path / "export" / "codes.npy")
    np.testing.assert_array_equal(cli_head.codes(features[test_rows]), exported)


def test_validation_keeps_the_best_head_and_progress_sees_it(data):
    features, labels = data
    train_rows, test_rows = milan.split(labels)
    seen = []
    head = milan.train(
        features[train_rows], labels[train_rows], bits=16, iters=60, seed=2, threads=1,
        validation=(features[test_rows], labels[test_rows]), validate_every=20, keep_best=True,
        progress=seen.append,
    )
    validations = [p for p in seen if p["validation_map"] is not None]
    assert [p["step"] for p in validations] == [20, 40, 60]
    assert [p["step"] for p in seen if p["validation_map"] is None] == [10, 30, 50]
    best_step, best_map = max(((p["step"], p["validation_map"]) for p in validations), key=lambda x: x[1])
    assert head.provenance["chosen_step"] == validations[-1]["best"][0]
    assert abs(validations[-1]["best"][1] - best_map) < 1e-12


def test_an_exception_in_progress_stops_training(data):
    features, labels = data

    def stop(progress):
        raise KeyError("stop here")

    with pytest.raises(KeyError, match="stop here"):
        milan.train(features, labels, bits=16, iters=1000, progress=stop)


@pytest.mark.parametrize(
    "call, error, words",
    [
        (lambda f, l: milan.train(f.astype(np.int32), l, bits=16), milan.InvalidTypeError, ["int32", "float32"]),
        (lambda f, l: milan.train(f[0], l, bits=16), milan.InvalidArgumentError, ["shape (32,)", "features[None, :]"]),
        (lambda f, l: milan.train(f, l[:-1], bits=16), milan.InvalidArgumentError, ["239 labels for 240 rows"]),
        (lambda f, l: milan.train(f, l, bits=12), milan.InvalidArgumentError, ["12 bits", "multiple of 8"]),
        (lambda f, l: milan.train(f, l, bits=16, recipe="fast"), milan.InvalidArgumentError, ["fast", "milan-plus", "milan-paper"]),
        (lambda f, l: milan.train(f, np.zeros(len(l), int), bits=16), milan.InvalidArgumentError, ["at least 2 classes"]),
        (lambda f, l: milan.train(f, l, bits=16, keep_best=True), milan.InvalidArgumentError, ["keep_best", "validation"]),
        (lambda f, l: milan.train(f, l.astype(float), bits=16), milan.InvalidTypeError, ["labels", "float64"]),
        (lambda f, l: milan.train(np.where(f > 2, np.nan, f), l, bits=16), milan.InvalidArgumentError, ["NaN"]),
        (lambda f, l: milan.Head.lsh(16, 8).codes(f), milan.InvalidArgumentError, ["32 dimensions", "8 are expected"]),
        (lambda f, l: milan.Head.lsh(16, 32).codes([[0.0] * 32]), milan.InvalidTypeError, ["list", "float32"]),
        (lambda f, l: milan.evaluate(milan.Head.lsh(16, 8), f, l), milan.InvalidArgumentError, ["8 are expected"]),
        (lambda f, l: milan.evaluate(milan.Head.lsh(16, 32), f, l, train_fraction=1.0), milan.InvalidArgumentError, ["test split has 0 items"]),
        (lambda f, l: milan.evaluate(milan.Head.lsh(16, 32), f, l, split=([0, 1], [2, 999])), milan.InvalidArgumentError, ["row 999 is out of range"]),
        (lambda f, l: milan.split(l, train_fraction=1.5), milan.InvalidArgumentError, ["train_fraction", "1.5"]),
        (lambda f, l: milan.Head.lsh(12, 32), milan.InvalidArgumentError, ["multiple of 8", "12"]),
    ],
)
def test_wrong_data_and_settings_are_clear_errors(data, call, error, words):
    features, labels = data
    with pytest.raises(error) as caught:
        call(features, labels)
    for word in words:
        assert word in str(caught.value), str(caught.value)


def test_unusable_head_files_are_named(tmp_path):
    bad = tmp_path / "bad.head"
    bad.write_bytes(b"not a head")
    with pytest.raises(milan.HeadError) as caught:
        milan.Head.load(bad)
    assert str(bad) in str(caught.value) and isinstance(caught.value, ValueError)
    with pytest.raises(milan.StorageError) as caught:
        milan.Head.load(tmp_path / "missing.head")
    assert "missing.head" in str(caught.value) and isinstance(caught.value, OSError)
    with pytest.raises(milan.HeadError, match="the head bytes"):
        milan.Head.from_bytes(b"xyz")


def test_every_new_name_is_documented():
    import inspect

    for cls in [milan.Extractor, milan.Head]:
        for name, _ in inspect.getmembers(cls):
            if not name.startswith("_"):
                assert (getattr(cls, name).__doc__ or "").strip(), f"{cls.__name__}.{name}"
        assert cls.__doc__.strip()
    for function in [milan.train, milan.evaluate, milan.split]:
        assert "milan " in function.__doc__, function.__name__


def test_ctrl_c_stops_training_with_keyboard_interrupt(tmp_path):
    # A real SIGINT to a process training with the GIL released: it stops at its next check.
    import signal
    import subprocess
    import sys

    code = (
        "import sys, numpy as np, milan\n"
        "rng = np.random.default_rng(0)\n"
        "features = rng.normal(size=(300, 16)).astype(np.float32)\n"
        "labels = np.repeat(np.arange(3), 100)\n"
        "def progress(p):\n"
        "    if p['step'] == 10:\n"
        "        print('training', flush=True)\n"
        "try:\n"
        "    milan.train(features, labels, bits=16, iters=10_000_000, threads=1, progress=progress)\n"
        "except KeyboardInterrupt:\n"
        "    print('interrupted', flush=True)\n"
        "    sys.exit(7)\n"
    )
    child = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline().strip() == "training"
        child.send_signal(signal.SIGINT)
        assert child.wait(timeout=120) == 7
        assert child.stdout.read().strip() == "interrupted"
    finally:
        if child.poll() is None:
            child.kill()
