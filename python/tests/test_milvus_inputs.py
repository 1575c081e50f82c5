"""milan.milvus without a Milvus: importing it needs no pymilvus, using it without pymilvus says
what to install, and its query reading refuses what milan.Index refuses."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

import milan
import milan.milvus as mv
import milan.milvus_cli as cli


def test_without_pymilvus_calls_say_what_to_install(monkeypatch, tmp_path):
    # A None entry makes `import pymilvus` raise ImportError, as if it were not installed.
    monkeypatch.setitem(sys.modules, "pymilvus", None)
    with milan.Index.create(tmp_path / "index.milan", bits=64) as index:
        index.add(np.zeros((3, 8), np.uint8))
        with pytest.raises(mv.MilvusMissingError, match=r"install pymilvus>=2.5,<2.7") as caught:
            mv.export(index, str(tmp_path / "m.db"), "codes")
    assert isinstance(caught.value, ImportError) and isinstance(caught.value, milan.MilanError)
    with pytest.raises(mv.MilvusMissingError):
        mv.Collection.open(str(tmp_path / "m.db"), "codes")


def test_import_and_help_need_no_pymilvus():
    code = "import sys; sys.modules['pymilvus'] = None; import milan.milvus; print('ok')"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "ok"
    done = subprocess.run(
        [sys.executable, "-m", "milan.milvus", "search", "--help"], capture_output=True, text=True
    )
    assert done.returncode == 0 and "--radius" in done.stdout and "distance <= R" in done.stdout


@pytest.mark.parametrize("bits", [64, 128])
def test_queries_read_as_milan_reads_them(bits):
    width = bits // 8
    rows = np.arange(3 * width, dtype=np.uint8).reshape(3, width)
    np.testing.assert_array_equal(mv.read_queries(rows, bits), rows)
    np.testing.assert_array_equal(mv.read_queries(rows[1], bits), rows[1:2])
    np.testing.assert_array_equal(mv.read_queries(np.asfortranarray(rows), bits), rows)
    with pytest.raises(milan.InvalidArgumentError, match=rf"\({width + 1},\)"):
        mv.read_queries(np.zeros(width + 1, np.uint8), bits)
    with pytest.raises(milan.InvalidTypeError, match="numpy.packbits"):
        mv.read_queries(np.zeros((2, bits), bool), bits)
    with pytest.raises(milan.InvalidTypeError, match="got str"):
        mv.read_queries("00ff", bits)


def test_uint64_queries_are_most_significant_bit_first():
    values = np.array([0x0102030405060708, 0xFF00000000000001], dtype=np.uint64)
    np.testing.assert_array_equal(
        mv.read_queries(values, 64),
        [[1, 2, 3, 4, 5, 6, 7, 8], [0xFF, 0, 0, 0, 0, 0, 0, 1]],
    )
    np.testing.assert_array_equal(mv.read_queries(values[0], 64), [[1, 2, 3, 4, 5, 6, 7, 8]])
    with pytest.raises(milan.InvalidTypeError, match="only for 64-bit codes"):
        mv.read_queries(values, 128)
    with pytest.raises(milan.InvalidArgumentError, match=r"shape \(1, 2\)"):
        mv.read_queries(values.reshape(1, 2), 64)


def test_keys_escape_for_terminals_as_milan_does():
    assert cli._for_terminal("a.png") == "a.png"
    assert cli._for_terminal("two\nlines\t\r") == "two\\nlines\\t\\r"
    assert cli._for_terminal("ünï\x1b[2J\x7f") == "ünï\\u{1b}[2J\\u{7f}"
