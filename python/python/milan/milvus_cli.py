"""The command line of :mod:`milan.milvus`: ``python -m milan.milvus export`` and ``search``.

``search`` prints what ``milan query`` prints, byte for byte: with ``--json`` one compact JSON
line per query, ``{"query": i, "results": [{"id", "distance", "key"}]}``, and otherwise its text
lines, keys with control characters escaped as milan escapes them. Exit status: 0 success, 1 an
error (named on standard error), 2 a usage error.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import unicodedata
from pathlib import Path
from typing import List, Optional, Sequence, TextIO, Tuple

import numpy as np
import numpy.typing as npt

from ._errors import InvalidArgumentError, MilanError
from .milvus import DEFAULT_BATCH_SIZE, INDEX_TYPES, Collection, export

__all__ = ["main", "print_results"]


def _for_terminal(text: str) -> str:
    """Control characters escaped as milan's command line escapes them (Rust's
    escape_default)."""
    if not any(unicodedata.category(c) == "Cc" for c in text):
        return text
    named = {"\t": "\\t", "\r": "\\r", "\n": "\\n"}
    return "".join(
        named.get(c, f"\\u{{{ord(c):x}}}") if unicodedata.category(c) == "Cc" else c for c in text
    )


def print_results(
    collection: Collection,
    answers: List[List[Tuple[int, int]]],
    as_json: bool,
    out: TextIO,
) -> None:
    """Prints answers ((id, distance) per query) as ``milan query`` does: JSON lines
    ``{"query": i, "results": [{"id", "distance", "key"}]}`` or its text."""
    all_ids = sorted({id for hits in answers for id, _ in hits})
    keys = dict(zip(all_ids, collection.keys(all_ids))) if all_ids else {}
    for query, hits in enumerate(answers):
        if as_json:
            line = {
                "query": query,
                "results": [
                    {"id": id, "distance": distance, "key": keys[id]} for id, distance in hits
                ],
            }
            # Compact and UTF-8, as serde_json writes it.
            out.write(json.dumps(line, ensure_ascii=False, separators=(",", ":")) + "\n")
        else:
            out.write(f"query {query}: {len(hits)} results\n")
            for rank, (id, distance) in enumerate(hits):
                out.write(
                    f"{rank + 1:>5}  id {id:>10}  distance {distance:>4}  "
                    f"{_for_terminal(keys[id] or '')}\n"
                )


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m milan.milvus",
        description="Export a milan index into a Milvus collection, and search it as milan does.",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    export_cmd = commands.add_parser(
        "export",
        help="copy an index into a new Milvus collection",
        description="Copies every live code of the index DIR (id, code, key, label) into a new "
        "Milvus collection, then indexes and loads it. The token of a server that needs one is "
        "read from MILVUS_TOKEN.",
    )
    export_cmd.add_argument("dir", type=Path, help="the milan index directory")
    export_cmd.add_argument(
        "--uri", required=True, help="a server (http://host:19530) or a Milvus Lite file (name.db)"
    )
    export_cmd.add_argument("--collection", required=True, help="the new collection's name")
    export_cmd.add_argument(
        "--index",
        choices=INDEX_TYPES,
        default="bin_flat",
        help="bin_flat (exact; the default) or bin_ivf_flat (approximate; servers only)",
    )
    export_cmd.add_argument(
        "--nlist", type=int, help="bin_ivf_flat's clusters (default about 4 * sqrt(n))"
    )
    export_cmd.add_argument(
        "--batch-size", type=int, default=DEFAULT_BATCH_SIZE, help="rows per insert"
    )
    export_cmd.add_argument(
        "--replace", action="store_true", help="drop an existing collection of that name first"
    )
    search_cmd = commands.add_parser(
        "search",
        help="search a collection as milan query does",
        description="Searches an exported collection and prints what `milan query` prints: with "
        '--json one line per query, {"query": i, "results": [{"id", "distance", "key"}]}. '
        "--radius R means distance <= R, as in milan.",
    )
    search_cmd.add_argument(
        "--uri", required=True, help="a server (http://host:19530) or a Milvus Lite file (name.db)"
    )
    search_cmd.add_argument("--collection", required=True, help="the collection's name")
    search_cmd.add_argument(
        "--codes", required=True, type=Path, help="query codes: a numpy uint8 array [n, bits / 8]"
    )
    mode = search_cmd.add_mutually_exclusive_group(required=True)
    mode.add_argument("--top-k", type=int, help="the k nearest codes (1 to 16384)")
    mode.add_argument("--radius", type=int, help="every code within this Hamming distance")
    search_cmd.add_argument(
        "--json", action="store_true", help="one JSON object per line per query"
    )
    search_cmd.add_argument(
        "--ties",
        choices=("milan", "any"),
        default="milan",
        help="top-k ties at the k-th distance: milan's lowest ids (default) or Milvus's pick",
    )
    search_cmd.add_argument("--nprobe", type=int, help="bin_ivf_flat's clusters searched per query")
    return parser


def _load_codes(path: Path) -> npt.NDArray[np.uint8]:
    try:
        codes = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as err:
        raise InvalidArgumentError(f"cannot read codes file {str(path)!r}: {err}") from err
    if not isinstance(codes, np.ndarray) or codes.dtype != np.uint8 or codes.ndim != 2:
        raise InvalidArgumentError(
            f"codes file {str(path)!r} must hold a numpy uint8 array [n, bits / 8]; got "
            f"{getattr(codes, 'dtype', type(codes).__name__)} of shape "
            f"{getattr(codes, 'shape', '?')}"
        )
    return codes


def main(argv: Optional[Sequence[str]] = None) -> int:
    """The command line; returns the exit status (0 success, 1 error, 2 usage error)."""
    args = _parser().parse_args(argv)
    token = os.environ.get("MILVUS_TOKEN", "")
    try:
        if args.command == "export":
            started = time.perf_counter()
            report = export(
                args.dir,
                args.uri,
                args.collection,
                index_type=args.index,
                nlist=args.nlist,
                batch_size=args.batch_size,
                replace=args.replace,
                token=token,
            )
            print(
                f"exported {report.count} {report.bits}-bit codes from {str(args.dir)!r} into "
                f"collection {report.collection!r} at {report.uri!r} ({report.index_type}) in "
                f"{time.perf_counter() - started:.1f} s",
                file=sys.stderr,
            )
            return 0
        with Collection.open(
            args.uri, args.collection, token=token, nprobe=args.nprobe
        ) as collection:
            queries = _load_codes(args.codes)
            answers: List[List[Tuple[int, int]]] = []
            if args.top_k is not None:
                ids, distances = collection.search(queries, args.top_k, ties=args.ties)
                for row_ids, row_distances in zip(ids, distances):
                    answers.append(
                        [(int(i), int(d)) for i, d in zip(row_ids, row_distances) if i >= 0]
                    )
            else:
                lims, ids, distances = collection.range_search(queries, args.radius)
                for i in range(len(queries)):
                    part = slice(int(lims[i]), int(lims[i + 1]))
                    answers.append([(int(a), int(d)) for a, d in zip(ids[part], distances[part])])
            print_results(collection, answers, args.json, sys.stdout)
            sys.stdout.flush()
        return 0
    except MilanError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    except BrokenPipeError:
        # The reader of the output went away (`| head`): stop quietly, as a pipe stage should;
        # stdout is pointed at nothing so that Python's exit does not fail flushing it.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
