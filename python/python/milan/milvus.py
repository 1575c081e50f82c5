"""milan.milvus: a milan index exported into Milvus, and searched there with milan's layouts.

milan answers on one node, from memory, far faster than a vector database on the same node
(docs/benchmarks.md, "Milvus"). When the codes outgrow one node, Milvus (a distributed vector
database) can hold them across many; this module moves an index there and answers queries with
the same inputs and the same outputs as :class:`milan.Index`, so that an application can switch
stores without changing its code::

    import milan, milan.milvus

    report = milan.milvus.export("photos.milan", uri="http://milvus:19530", collection="photos")
    with milan.milvus.Collection.open("http://milvus:19530", "photos") as store:
        ids, distances = store.search(queries, k=20)          # as milan.Index.search
        lims, near, near_distances = store.range_search(queries, radius=4)
        keys = store.keys(ids[0][ids[0] >= 0])

The collection (see :func:`export`): ``id`` INT64 primary key (milan's ids, not generated),
``code`` BINARY_VECTOR of the code length (the bytes in ``numpy.packbits`` order, as milan stores
them), ``key`` and ``label`` VARCHAR (up to 65,535 bytes of UTF-8), and ``has_key`` and
``has_label`` BOOL. Milvus Lite refuses nullable fields, so a missing key is an empty ``key``
with ``has_key`` false: an empty key and no key stay distinct.

Answers are milan's, exactly, on a BIN_FLAT index (the default): top-k rows ordered by distance,
then id, with ties at the k-th distance resolved to the lowest ids as milan does (one more Milvus
search per distinct k-th distance; ``ties="any"`` skips it and keeps the ids Milvus picked among
the ties); range answers with milan's meaning of a radius, ``distance <= radius`` (Milvus's
``radius`` is strict, ``distance < radius``: this module passes ``radius + 1``). Milvus caps one
search at 16,384 results per query: ``k`` above it is refused, and a range answer that reaches
the cap is completed by searching halves of the id range in turn, so it is never cut short.
BIN_IVF_FLAT (``index_type="bin_ivf_flat"``) is approximate, and Milvus Lite refuses it.

``pymilvus`` is imported only when a function here needs it; without it, calls raise
:class:`MilvusMissingError` saying what to install. Tested against Milvus Lite 2.5.1 with
pymilvus 2.5.18.

The command line (``python -m milan.milvus --help``)::

    python -m milan.milvus export DIR --uri URI --collection NAME [--index bin_flat|bin_ivf_flat]
    python -m milan.milvus search --uri URI --collection NAME --codes Q.npy \\
        (--top-k K | --radius R) --json

``search --json`` prints the same JSON lines as ``milan query --json``.

Export reads from a milan index now (:func:`index_batches`); :func:`export_batches` takes any
iterable of :class:`Batch`, so that shards written by a distributed ingest can feed the same
collection later, as long as their ids do not collide.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import (
    Any,
    Callable,
    Dict,
    Iterable,
    Iterator,
    List,
    Optional,
    Sequence,
    Tuple,
    Type,
    Union,
)

import numpy as np
import numpy.typing as npt

from ._errors import InvalidArgumentError, InvalidTypeError, MilanError, UnknownIdError
from ._milan import Index

__all__ = [
    "Batch",
    "Collection",
    "ExportReport",
    "MilvusError",
    "MilvusMissingError",
    "RESULT_CAP",
    "export",
    "export_batches",
    "index_batches",
    "read_queries",
]

# Milvus's largest `limit` (topk) for one search; a range search returns at most this many
# results per query too.
RESULT_CAP = 16384
# The limit of a range search's first try; answers that fill it are asked again at the cap.
FIRST_LIMIT = 1024
# Milvus's largest VARCHAR, in bytes.
MAX_VARCHAR_BYTES = 65535
# Rows per insert: about 2 MB of messages for 64-bit codes and short keys, far below the
# 64 MiB a Milvus request may carry.
DEFAULT_BATCH_SIZE = 10_000
# Results asked for by one search call (queries times limit), so that one answer stays a few
# megabytes.
RESULTS_PER_CALL = 1 << 18
# A Milvus server's largest nq (queries in one search); Milvus Lite takes more.
MAX_QUERIES_PER_CALL = 16384
# Ids per `query` call when reading keys back (the filter expression lists them).
IDS_PER_QUERY = 4096

INDEX_TYPES = ("bin_flat", "bin_ivf_flat")
PYMILVUS_REQUIREMENT = "pymilvus>=2.5,<2.7 (and milvus-lite==2.5.1 for local files)"
_COLLECTION_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,254}$")
# What the collection's description starts with; the JSON after it says what it holds.
_DESCRIPTION_PREFIX = "milan codes "

Ids = Union[Sequence[int], npt.NDArray[np.integer[Any]]]
Codes = Union[npt.NDArray[np.uint8], npt.NDArray[np.uint64], np.uint64]


class MilvusError(MilanError):
    """A Milvus call failed, or a collection is not one that :func:`export` made; the message
    names the URI, the collection and Milvus's reason."""


class MilvusMissingError(MilanError, ImportError):
    """``pymilvus`` (or, for a local file, ``milvus-lite``) is not installed."""


def _pymilvus() -> Any:
    """The pymilvus module, imported on first use."""
    try:
        import pymilvus
    except ImportError as err:
        raise MilvusMissingError(
            f"milan.milvus needs pymilvus, which is not installed ({err}); "
            f"install {PYMILVUS_REQUIREMENT}"
        ) from err
    return pymilvus


def _is_local(uri: str) -> bool:
    """Whether `uri` names a Milvus Lite file rather than a server."""
    return "://" not in uri


def _connect(uri: str, token: str) -> Any:
    pymilvus = _pymilvus()
    if _is_local(uri):
        if not uri.endswith(".db"):
            raise InvalidArgumentError(
                f"uri {uri!r} is neither a server address (http://host:19530) nor a Milvus Lite "
                "file: a local file's name must end in .db"
            )
        parent = Path(uri).absolute().parent
        if not parent.is_dir():
            raise InvalidArgumentError(f"uri {uri!r}: the folder {str(parent)!r} does not exist")
        try:
            with warnings.catch_warnings():
                # Milvus Lite 2.5.1 imports pkg_resources, which warns that it is deprecated.
                warnings.filterwarnings("ignore", message="pkg_resources is deprecated")
                import milvus_lite  # noqa: F401  (pymilvus starts it; imported here first)
        except ImportError as err:
            raise MilvusMissingError(
                f"uri {uri!r} is a local file, which needs Milvus Lite: install milvus-lite==2.5.1 "
                f"({err})"
            ) from err
    try:
        return pymilvus.MilvusClient(uri=uri, token=token)
    except Exception as err:  # pymilvus raises MilvusException or plain errors from gRPC
        raise MilvusError(f"cannot connect to Milvus at {uri!r}: {_reason(err)}") from err


def _release(uri: str) -> None:
    """Stops the Milvus Lite server process this process started for `uri`, if any."""
    if not _is_local(uri):
        return
    try:
        from milvus_lite.server_manager import server_manager_instance
    except ImportError:
        return
    path = str(Path(uri).absolute().resolve())
    # The manager warns when asked about a file it does not serve: ask only about its own.
    if path in getattr(server_manager_instance, "_servers", {}):
        server_manager_instance.release_server(path)


def _reason(err: BaseException) -> str:
    message = getattr(err, "message", None)
    return str(message if message else err).strip().rstrip(":").strip()


def _check_collection_name(name: str) -> None:
    if not isinstance(name, str) or not _COLLECTION_NAME.match(name):
        raise InvalidArgumentError(
            f"collection name {name!r} is not one Milvus accepts: letters, digits and "
            "underscores, starting with a letter or underscore, at most 255 characters"
        )


# ---- exporting ------------------------------------------------------------------------------


@dataclass
class Batch:
    """Rows to export: ``ids`` (``int64``, unique across the whole export), ``codes``
    (``uint8`` of shape ``(len(ids), bits // 8)``), and a key and a label (or ``None``) per id."""

    ids: npt.NDArray[np.int64]
    codes: npt.NDArray[np.uint8]
    keys: List[Optional[str]]
    labels: List[Optional[str]]


@dataclass
class ExportReport:
    """What :func:`export` did."""

    uri: str
    collection: str
    bits: int
    count: int
    index_type: str
    seconds: float


def index_batches(index: Index, batch_size: int = DEFAULT_BATCH_SIZE) -> Iterator[Batch]:
    """The live codes of a :class:`milan.Index`, with keys and labels, in batches of ids."""
    ids = index.ids()
    for start in range(0, len(ids), batch_size):
        chunk = ids[start : start + batch_size]
        yield Batch(chunk, index.codes(chunk), index.keys(chunk), index.labels(chunk))


def export(
    source: Union[str, "os.PathLike[str]", Index],
    uri: str,
    collection: str,
    *,
    index_type: str = "bin_flat",
    nlist: Optional[int] = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
    replace: bool = False,
    token: str = "",
    progress: Optional[Callable[[int, int], None]] = None,
) -> ExportReport:
    """Copies every live code of a milan index (a path, or an open :class:`milan.Index`), with
    its id, key and label, into a new Milvus collection, and indexes and loads it.

    ``uri``: a server (``http://host:19530``) or a Milvus Lite file (``name.db``).
    ``index_type``: ``"bin_flat"`` (exact; the default) or ``"bin_ivf_flat"`` (approximate, with
    ``nlist`` clusters, by default about 4 * sqrt(n); Milvus Lite refuses it). An existing
    collection of that name is refused unless ``replace`` (which drops it first).
    ``progress(done, total)`` is called after each batch.
    """
    if isinstance(source, Index):
        return _export_index(
            source, uri, collection, index_type, nlist, batch_size, replace, token, progress
        )
    index = Index.open(source, read_only=True)
    try:
        return _export_index(
            index, uri, collection, index_type, nlist, batch_size, replace, token, progress
        )
    finally:
        index.close()


def _export_index(
    index: Index,
    uri: str,
    collection: str,
    index_type: str,
    nlist: Optional[int],
    batch_size: int,
    replace: bool,
    token: str,
    progress: Optional[Callable[[int, int], None]],
) -> ExportReport:
    _check_batch_size(batch_size)
    info = index.info()
    return export_batches(
        index_batches(index, batch_size),
        bits=index.bits,
        count=info["len"],
        id_end=info["next_id"],
        uri=uri,
        collection=collection,
        index_type=index_type,
        nlist=nlist,
        replace=replace,
        token=token,
        progress=progress,
        origin=str(index.path),
    )


def _check_batch_size(batch_size: int) -> None:
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise InvalidArgumentError(f"batch_size must be a positive integer; got {batch_size!r}")


def export_batches(
    batches: Iterable[Batch],
    *,
    bits: int,
    count: int,
    id_end: int,
    uri: str,
    collection: str,
    index_type: str = "bin_flat",
    nlist: Optional[int] = None,
    replace: bool = False,
    token: str = "",
    progress: Optional[Callable[[int, int], None]] = None,
    origin: str = "",
) -> ExportReport:
    """Writes ``batches`` (``count`` rows in all, every id below ``id_end``) of ``bits``-bit
    codes into a new collection; :func:`export` for an index calls it, and shards of a
    distributed ingest can, given ids that do not collide. ``origin`` is recorded in the
    collection's description."""
    started = time.perf_counter()
    _check_collection_name(collection)
    if isinstance(bits, bool) or not isinstance(bits, int) or bits < 8 or bits % 8 != 0:
        raise InvalidArgumentError(f"bits must be a positive multiple of 8; got {bits!r}")
    kind = str(index_type).lower()
    if kind not in INDEX_TYPES:
        raise InvalidArgumentError(
            f"index_type must be one of {', '.join(INDEX_TYPES)}; got {index_type!r}"
        )
    if kind == "bin_ivf_flat" and _is_local(uri):
        raise InvalidArgumentError(
            f"index_type bin_ivf_flat needs a Milvus server: Milvus Lite ({uri!r}) builds only "
            "bin_flat indexes"
        )
    if nlist is not None and (
        isinstance(nlist, bool) or not isinstance(nlist, int) or not 1 <= nlist <= 65536
    ):
        raise InvalidArgumentError(f"nlist must be 1 to 65536; got {nlist!r}")
    pymilvus = _pymilvus()
    client = _connect(uri, token)
    # Rows go in by columns, through pymilvus's collection API on a connection of its own: six
    # times faster than MilvusClient's rows, which it checks one by one.
    alias = f"milan-export-{os.getpid()}-{id(client)}"
    try:
        if client.has_collection(collection):
            if not replace:
                raise MilvusError(
                    f"collection {collection!r} already exists at {uri!r}; choose another name or "
                    "replace it (replace=True, --replace)"
                )
            client.drop_collection(collection)
        description = _DESCRIPTION_PREFIX + json.dumps(
            {"bits": bits, "id_end": int(id_end), "origin": origin}, ensure_ascii=False
        )
        schema = _schema(pymilvus, bits, description)
        index_params = client.prepare_index_params()
        params: Dict[str, Any] = {}
        if kind == "bin_ivf_flat":
            params["nlist"] = nlist or max(1, min(65536, int(4 * math.sqrt(max(count, 1)))))
        index_params.add_index(
            "code", index_type=kind.upper(), metric_type="HAMMING", params=params
        )
        try:
            client.create_collection(
                collection, schema=schema, index_params=index_params, consistency_level="Strong"
            )
        except Exception as err:
            # Milvus creates the collection before it fails to index it: leave nothing behind.
            with contextlib.suppress(Exception):
                if client.has_collection(collection):
                    client.drop_collection(collection)
            raise MilvusError(
                f"cannot create collection {collection!r} with a {kind} index at {uri!r}: "
                f"{_reason(err)}"
            ) from err
        done = 0
        try:
            pymilvus.connections.connect(alias=alias, uri=uri, token=token)
            columns = pymilvus.Collection(collection, using=alias)
            for batch in batches:
                columns.insert(_columns(batch, bits, id_end))
                done += len(batch.ids)
                if progress is not None:
                    progress(done, count)
            client.flush(collection)
        except BaseException:
            # A half-written collection would answer wrongly: drop it, keeping the first error.
            with contextlib.suppress(Exception):
                client.drop_collection(collection)
            raise
    except MilanError:
        raise
    except Exception as err:
        raise MilvusError(
            f"export to collection {collection!r} at {uri!r} failed: {_reason(err)}"
        ) from err
    finally:
        with contextlib.suppress(Exception):
            pymilvus.connections.disconnect(alias)
        client.close()
        _release(uri)
    return ExportReport(uri, collection, bits, done, kind, time.perf_counter() - started)


def _schema(pymilvus: Any, bits: int, description: str) -> Any:
    DataType = pymilvus.DataType
    schema = pymilvus.MilvusClient.create_schema(
        auto_id=False, enable_dynamic_field=False, description=description
    )
    schema.add_field("id", DataType.INT64, is_primary=True)
    schema.add_field("code", DataType.BINARY_VECTOR, dim=bits)
    schema.add_field("key", DataType.VARCHAR, max_length=MAX_VARCHAR_BYTES)
    schema.add_field("has_key", DataType.BOOL)
    schema.add_field("label", DataType.VARCHAR, max_length=MAX_VARCHAR_BYTES)
    schema.add_field("has_label", DataType.BOOL)
    return schema


def _columns(batch: Batch, bits: int, id_end: int) -> List[List[Any]]:
    """A batch as Milvus columns in the schema's order, checked: ids in [0, id_end) (range
    searches split that span), code width, one key and label per id, VARCHAR lengths."""
    n = len(batch.ids)
    ids = np.asarray(batch.ids, dtype=np.int64)
    if n and (int(ids.min()) < 0 or int(ids.max()) >= id_end):
        raise InvalidArgumentError(
            f"a batch holds ids from {int(ids.min())} to {int(ids.max())}; every id must be 0 "
            f"or more and below id_end ({id_end})"
        )
    codes = np.ascontiguousarray(batch.codes, dtype=np.uint8)
    if codes.shape != (n, bits // 8):
        raise InvalidArgumentError(
            f"a batch of {n} ids has codes of shape {codes.shape}; expected ({n}, {bits // 8})"
        )
    if len(batch.keys) != n or len(batch.labels) != n:
        raise InvalidArgumentError(
            f"a batch of {n} ids has {len(batch.keys)} keys and {len(batch.labels)} labels"
        )
    id_list = ids.tolist()
    return [
        id_list,
        [code.tobytes() for code in codes],
        [_varchar(key, "key", id) for key, id in zip(batch.keys, id_list)],
        [key is not None for key in batch.keys],
        [_varchar(label, "label", id) for label, id in zip(batch.labels, id_list)],
        [label is not None for label in batch.labels],
    ]


def _varchar(text: Optional[str], what: str, id: Any) -> str:
    if text is None:
        return ""
    size = len(text.encode("utf-8"))
    if size > MAX_VARCHAR_BYTES:
        raise InvalidArgumentError(
            f"the {what} of id {int(id)} is {size} bytes of UTF-8; a Milvus VARCHAR holds at most "
            f"{MAX_VARCHAR_BYTES} (starts {text[:60]!r})"
        )
    return text


# ---- searching ------------------------------------------------------------------------------


class Collection:
    """A collection that :func:`export` made, searched with :class:`milan.Index`'s methods and
    layouts. Make one with :meth:`Collection.open`; close it (or use ``with``) to disconnect and,
    for a Milvus Lite file, stop its server process."""

    def __init__(
        self,
        client: Any,
        uri: str,
        name: str,
        bits: int,
        id_end: int,
        index_type: str,
        nprobe: Optional[int],
    ):
        self._client: Any = client
        self.uri = uri
        self.name = name
        self.bits = bits
        self.index_type = index_type
        # Every id is below this: the span a range search splits when Milvus's cap cuts it.
        self._id_end = id_end
        self._nprobe = nprobe

    @staticmethod
    def open(
        uri: str, collection: str, *, token: str = "", nprobe: Optional[int] = None
    ) -> "Collection":
        """Connects to ``collection`` at ``uri`` and checks that :func:`export` made it.
        ``nprobe``: clusters searched per query on a BIN_IVF_FLAT index (Milvus's default
        otherwise)."""
        _check_collection_name(collection)
        client = _connect(uri, token)
        try:
            if not client.has_collection(collection):
                raise MilvusError(f"no collection {collection!r} at {uri!r}")
            described = client.describe_collection(collection)
            bits, id_end = _milan_layout(described, uri, collection)
            index_type = "bin_flat"
            for name in client.list_indexes(collection):
                found = client.describe_index(collection, name)
                if found.get("field_name") == "code":
                    index_type = str(found.get("index_type", "BIN_FLAT")).lower()
            client.load_collection(collection)
        except MilanError:
            client.close()
            _release(uri)
            raise
        except Exception as err:
            client.close()
            _release(uri)
            raise MilvusError(
                f"cannot open collection {collection!r} at {uri!r}: {_reason(err)}"
            ) from err
        return Collection(client, uri, collection, bits, id_end, index_type, nprobe)

    @property
    def closed(self) -> bool:
        """Whether ``close()`` was called."""
        return self._client is None

    def close(self) -> None:
        """Disconnects; for a Milvus Lite file, also stops its server process."""
        if self._client is not None:
            self._client.close()
            self._client = None
            _release(self.uri)

    def __enter__(self) -> "Collection":
        return self

    def __exit__(
        self,
        exc_type: Optional[Type[BaseException]],
        exc: Optional[BaseException],
        traceback: Optional[TracebackType],
    ) -> None:
        self.close()

    def __len__(self) -> int:
        stats = self._call("count", lambda c: c.get_collection_stats(self.name))
        return int(stats.get("row_count", 0))

    def __repr__(self) -> str:
        return f"milan.milvus.Collection({self.uri!r}, {self.name!r}, bits={self.bits})"

    def search(
        self, codes: Codes, k: int = 20, *, ties: str = "milan"
    ) -> Tuple[npt.NDArray[np.int64], npt.NDArray[np.int32]]:
        """The ``k`` nearest codes to each query, as :meth:`milan.Index.search`: ``(ids,
        distances)``, ``int64`` and ``int32`` of shape ``(nq, k)``, ordered by distance, then id,
        padded with ``-1``. ``k``: 1 to 16,384 (Milvus's cap). ``ties="milan"`` (the default)
        gives milan's ids among codes tied at the k-th distance (the lowest), at the cost of one
        more search per distinct k-th distance; ``ties="any"`` keeps Milvus's pick. On a
        bin_ivf_flat collection the answers are Milvus's approximate ones, ties included."""
        queries = self._queries(codes)
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)):
            raise InvalidTypeError(f"k must be an integer; got {type(k).__name__}")
        if k < 1:
            raise InvalidArgumentError(f"k must be at least 1; got {k}")
        if k > RESULT_CAP:
            raise InvalidArgumentError(
                f"k must be at most {RESULT_CAP} (Milvus's largest limit for one search); got {k}"
            )
        if ties not in ("milan", "any"):
            raise InvalidArgumentError(f"ties must be 'milan' or 'any'; got {ties!r}")
        k = int(k)
        rows = self._search_rows(queries, k, self._top_k_params())
        if ties == "milan" and self.index_type == "bin_flat":
            self._settle_ties(queries, rows, k)
        ids = np.full((len(queries), k), -1, dtype=np.int64)
        distances = np.full((len(queries), k), -1, dtype=np.int32)
        for i, row in enumerate(rows):
            row.sort()
            for j, (distance, id) in enumerate(row[:k]):
                ids[i, j] = id
                distances[i, j] = distance
        return ids, distances

    def range_search(
        self, codes: Codes, radius: int
    ) -> Tuple[npt.NDArray[np.int64], npt.NDArray[np.int64], npt.NDArray[np.int32]]:
        """Every code within ``radius`` bits of each query (``distance <= radius``, as in
        milan), as :meth:`milan.Index.range_search`: ``(lims, ids, distances)``. Answers that
        reach Milvus's cap of 16,384 per search are completed over halves of the id range."""
        queries = self._queries(codes)
        if isinstance(radius, bool) or not isinstance(radius, (int, np.integer)):
            raise InvalidTypeError(f"radius must be an integer; got {type(radius).__name__}")
        if radius < 0:
            raise InvalidArgumentError(
                f"radius must be 0 to {self.bits} (the code length); got {radius}"
            )
        if self.index_type != "bin_flat":
            raise InvalidArgumentError(
                f"range_search needs a bin_flat collection; {self.name!r} has a "
                f"{self.index_type} index"
            )
        # Milvus keeps range_filter <= d < radius.
        within = (0, min(int(radius), self.bits) + 1)
        rows = self._within(queries, within)
        lims = np.zeros(len(queries) + 1, dtype=np.int64)
        lims[1:] = np.cumsum([len(row) for row in rows])
        ids = np.empty(int(lims[-1]), dtype=np.int64)
        distances = np.empty(int(lims[-1]), dtype=np.int32)
        for i, row in enumerate(rows):
            row.sort()
            start = int(lims[i])
            for j, (distance, id) in enumerate(row):
                ids[start + j] = id
                distances[start + j] = distance
        return lims, ids, distances

    def keys(self, ids: Ids) -> List[Optional[str]]:
        """The keys stored with ``ids`` (``None`` where milan had none); an id the collection
        does not hold raises :class:`milan.UnknownIdError`."""
        return [key for key, _ in self._items(ids)]

    def labels(self, ids: Ids) -> List[Optional[str]]:
        """The labels stored with ``ids``, as :meth:`keys`."""
        return [label for _, label in self._items(ids)]

    # -- internals --

    def _call(self, what: str, work: Callable[[Any], Any]) -> Any:
        if self._client is None:
            raise MilvusError(f"collection {self.name!r} at {self.uri!r} is closed")
        try:
            return work(self._client)
        except MilanError:
            raise
        except Exception as err:
            raise MilvusError(
                f"Milvus {what} on collection {self.name!r} at {self.uri!r} failed: {_reason(err)}"
            ) from err

    def _queries(self, codes: Any) -> npt.NDArray[np.uint8]:
        return read_queries(codes, self.bits)

    def _top_k_params(self) -> Dict[str, Any]:
        params: Dict[str, Any] = {}
        if self.index_type == "bin_ivf_flat" and self._nprobe is not None:
            params["nprobe"] = self._nprobe
        return {"metric_type": "HAMMING", "params": params}

    @staticmethod
    def _range_params(low: int, high: int) -> Dict[str, Any]:
        return {"metric_type": "HAMMING", "params": {"radius": high, "range_filter": low}}

    def _search_rows(
        self,
        queries: npt.NDArray[np.uint8],
        limit: int,
        params: Dict[str, Any],
        id_filter: str = "",
    ) -> List[List[Tuple[int, int]]]:
        """(distance, id) pairs per query, in chunks of queries that keep each answer small."""
        per_call = max(1, min(MAX_QUERIES_PER_CALL, RESULTS_PER_CALL // limit))
        rows: List[List[Tuple[int, int]]] = []
        for start in range(0, len(queries), per_call):
            data = [query.tobytes() for query in queries[start : start + per_call]]
            answers = self._call(
                "search",
                lambda c: c.search(
                    self.name,
                    data=data,
                    limit=limit,
                    filter=id_filter,
                    output_fields=[],
                    search_params=params,
                ),
            )
            for hits in answers:
                rows.append([(int(hit["distance"]), int(hit["id"])) for hit in hits])
        return rows

    def _settle_ties(
        self, queries: npt.NDArray[np.uint8], rows: List[List[Tuple[int, int]]], k: int
    ) -> None:
        """Replaces, in full rows, the codes at the k-th distance by the lowest ids at it."""
        by_distance: Dict[int, List[int]] = {}
        for i, row in enumerate(rows):
            if len(row) >= k:
                by_distance.setdefault(max(d for d, _ in row), []).append(i)
        for last, members in sorted(by_distance.items()):
            within = (last, last + 1)
            closer = [[hit for hit in rows[i] if hit[0] < last] for i in members]
            needs = [k - len(hits) for hits in closer]
            tied_rows = self._within(queries[members], within, needs)
            for i, hits, need, tied in zip(members, closer, needs, tied_rows):
                tied.sort()
                rows[i] = hits + tied[:need]

    def _within(
        self,
        queries: npt.NDArray[np.uint8],
        within: Tuple[int, int],
        needs: Optional[List[int]] = None,
    ) -> List[List[Tuple[int, int]]]:
        """Every (distance, id) with ``within[0] <= distance < within[1]``, per query, complete.
        Milvus's cost follows the limit asked (nq x limit results are set aside), so a first
        search asks for few; rows that fill it are asked again at Milvus's cap, and rows that
        fill the cap are searched over halves of the id range. ``needs[i]``: for query i, how
        many of the lowest ids suffice (when all share one distance)."""
        params = self._range_params(*within)
        rows = self._search_rows(queries, FIRST_LIMIT, params)
        full = [i for i, row in enumerate(rows) if len(row) >= FIRST_LIMIT]
        if full:
            for i, row in zip(full, self._search_rows(queries[full], RESULT_CAP, params)):
                if len(row) >= RESULT_CAP:
                    need = None if needs is None else needs[i]
                    row = self._split_range(queries[i], within, 0, self._id_end, need)
                rows[i] = row
        return rows

    def _split_range(
        self,
        query: npt.NDArray[np.uint8],
        within: Tuple[int, int],
        id_low: int,
        id_high: int,
        need: Optional[int],
    ) -> List[Tuple[int, int]]:
        """Every (distance, id) within `within` with `id_low <= id < id_high`, found by searching
        the two halves of the id span (recursively where a half reaches Milvus's cap). With
        `need`, stops once the lower halves hold that many (the lowest ids)."""
        found: List[Tuple[int, int]] = []
        middle = (id_low + id_high) // 2
        for low, high in ((id_low, middle), (middle, id_high)):
            if low >= high:
                continue
            rows = self._search_rows(
                query[None, :],
                RESULT_CAP,
                self._range_params(*within),
                f"id >= {low} and id < {high}",
            )
            part = rows[0]
            if len(part) >= RESULT_CAP and high - low > 1:
                remaining = None if need is None else need - len(found)
                part = self._split_range(query, within, low, high, remaining)
            found.extend(part)
            if need is not None and len(found) >= need:
                break
        return found

    def _items(self, ids: Ids) -> List[Tuple[Optional[str], Optional[str]]]:
        wanted = _read_ids(ids)
        stored: Dict[int, Tuple[Optional[str], Optional[str]]] = {}
        unique = sorted(set(wanted))
        for start in range(0, len(unique), IDS_PER_QUERY):
            chunk = unique[start : start + IDS_PER_QUERY]
            found = self._call(
                "query",
                lambda c: c.query(
                    self.name,
                    filter=f"id in [{','.join(map(str, chunk))}]",
                    output_fields=["id", "key", "has_key", "label", "has_label"],
                ),
            )
            for row in found:
                stored[int(row["id"])] = (
                    row["key"] if row["has_key"] else None,
                    row["label"] if row["has_label"] else None,
                )
        for id in wanted:
            if id not in stored:
                raise UnknownIdError(
                    f"no item with id {id} in collection {self.name!r} at {self.uri!r}"
                )
        return [stored[id] for id in wanted]


def _milan_layout(described: Dict[str, Any], uri: str, collection: str) -> Tuple[int, int]:
    """The code length and id bound of a collection :func:`export` made; anything else is
    refused, naming what differs."""
    fields = {field["name"]: field for field in described.get("fields", [])}
    pymilvus = _pymilvus()
    DataType = pymilvus.DataType
    expected = {
        "id": DataType.INT64,
        "code": DataType.BINARY_VECTOR,
        "key": DataType.VARCHAR,
        "has_key": DataType.BOOL,
        "label": DataType.VARCHAR,
        "has_label": DataType.BOOL,
    }
    for name, kind in expected.items():
        if name not in fields or fields[name].get("type") != kind:
            raise MilvusError(
                f"collection {collection!r} at {uri!r} was not made by milan.milvus.export: it has "
                f"no {kind.name} field {name!r} (fields: {', '.join(fields) or 'none'})"
            )
    bits = int(fields["code"].get("params", {}).get("dim", 0))
    id_end = 1 << 63
    description = str(described.get("description", ""))
    if description.startswith(_DESCRIPTION_PREFIX):
        try:
            id_end = int(json.loads(description[len(_DESCRIPTION_PREFIX) :])["id_end"])
        except (ValueError, KeyError, TypeError):
            pass
    return bits, id_end


def read_queries(codes: Any, bits: int, what: str = "queries") -> npt.NDArray[np.uint8]:
    """Queries as :meth:`milan.Index.search` takes them, as ``uint8`` rows ``(nq, bits // 8)``:
    ``uint8`` of shape ``(n, bits // 8)`` or ``(bits // 8,)``, or for 64-bit codes ``uint64`` of
    shape ``(n,)`` or ``()`` (the most significant bit first)."""
    width = bits // 8
    expected = (
        f"a numpy uint8 array of shape (n, {width}) in numpy.packbits order "
        f"(or ({width},) for one code)"
    )
    if bits == 64:
        expected += ", or a numpy uint64 array of shape (n,) (or () for one code)"
    if isinstance(codes, np.generic):
        codes = np.asarray(codes)
    if not isinstance(codes, np.ndarray):
        raise InvalidTypeError(
            f"{what} must be {expected}; got {type(codes).__name__} "
            "(convert it with numpy.asarray(..., dtype=numpy.uint8))"
        )
    if codes.dtype == np.uint8:
        if codes.ndim == 1 and codes.shape[0] == width:
            return np.ascontiguousarray(codes.reshape(1, width))
        if codes.ndim == 2 and codes.shape[1] == width:
            return np.ascontiguousarray(codes)
        raise InvalidArgumentError(
            f"{what} must be {expected}: the collection stores {bits}-bit codes ({width} bytes "
            f"each); got a uint8 array of shape {_shape_text(codes.shape)}"
        )
    if codes.dtype == np.uint64:
        if bits != 64:
            raise InvalidTypeError(
                f"{what} must be {expected}: uint64 codes are only for 64-bit codes, and this "
                f"collection stores {bits}-bit codes"
            )
        if codes.ndim > 1:
            raise InvalidArgumentError(
                f"{what} must be {expected}; got a uint64 array of shape {_shape_text(codes.shape)}"
            )
        return np.ascontiguousarray(codes.reshape(-1).astype(">u8").view(np.uint8).reshape(-1, 8))
    hint = (
        " (pack bits into bytes with numpy.packbits(bits, axis=-1))"
        if codes.dtype == np.bool_
        else ""
    )
    raise InvalidTypeError(
        f"{what} must be {expected}; got an array of dtype {codes.dtype.str}{hint}"
    )


def _shape_text(shape: Tuple[int, ...]) -> str:
    return f"({shape[0]},)" if len(shape) == 1 else "(" + ", ".join(map(str, shape)) + ")"


def _read_ids(ids: Any) -> List[int]:
    array = np.asarray(ids)
    if array.ndim != 1 or not (array.size == 0 or np.issubdtype(array.dtype, np.integer)):
        raise InvalidTypeError(
            f"ids must be a sequence of integers or a 1-D integer array; got {ids!r:.80}"
        )
    return [int(id) for id in array]


if __name__ == "__main__":
    # `python -m milan.milvus`: the command line lives in its own module.
    from milan.milvus_cli import main

    sys.exit(main())
