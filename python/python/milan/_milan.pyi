"""Type stubs of the extension module ``milan._milan`` (re-exported by ``milan``)."""

import os
from pathlib import Path
from types import TracebackType
from typing import Any, Callable, Dict, Optional, Sequence, Tuple, Type, TypedDict, Union, final

import numpy as np
import numpy.typing as npt

__all__ = ["Index", "Extractor", "Head", "train", "evaluate", "split", "__version__"]

__version__: str

# uint8 of shape (n, bits // 8) or (bits // 8,), or for 64-bit indexes uint64 of shape (n,) or ().
_Codes = Union[npt.NDArray[np.uint8], npt.NDArray[np.uint64], np.uint64]
# A sequence of ints or a 1-D integer array.
_Ids = Union[Sequence[int], npt.NDArray[np.integer[Any]]]
_Strings = Sequence[Optional[str]]
_Path = Union[str, os.PathLike[str]]
_Paths = Sequence[_Path]
# float32 (or float64) of shape (n, dim).
_Features = npt.NDArray[np.floating[Any]]
# One class per row: ints, or str.
_Labels = Union[npt.NDArray[Any], Sequence[int], Sequence[str]]
_Rows = Union[Sequence[int], npt.NDArray[np.integer[Any]]]

class _FailedFile(TypedDict):
    """A file ``add_images`` skipped (for type checkers only)."""

    path: str
    reason: str
    detail: str

class _AddReport(TypedDict):
    """What ``Index.add_images`` returns, as ``milan index add --json`` (for type checkers only)."""

    added: int
    already_indexed: int
    duplicates: int
    failed: list[_FailedFile]
    failed_by_reason: Dict[str, int]
    ids: Optional[list[int]]
    device: str
    seconds: float
    cancelled: bool

class _ModelInfo(TypedDict):
    """What ``Index.model`` returns (for type checkers only)."""

    path: Path
    fingerprint: str
    input: str
    layout: str
    input_size: int
    pixel_range: str
    output: str
    dim: int

class _TrainProgress(TypedDict):
    """What the progress function of ``train`` receives (for type checkers only)."""

    step: int
    iters: int
    loss: float
    validation_map: Optional[float]
    best: Optional[Tuple[int, float]]

class _IndexInfo(TypedDict):
    """What ``Index.info`` returns (for type checkers only)."""

    path: Path
    format_version: int
    bits: int
    substrings: int
    recommended_substrings: int
    len: int
    next_id: int
    file_bytes: int
    memory_bytes: int
    created_by: str
    written_by: str
    read_only: bool

class _CheckReport(TypedDict):
    """What ``Index.check`` returns (for type checkers only)."""

    ok: bool
    problems: list[str]
    unlisted: int
    codes: int
    storage_ok: Optional[bool]

@final
class Index:
    """An open milan index: binary hash codes stored in a directory, searched exactly by
    Hamming distance. Make one with ``Index.create`` or ``Index.open``."""

    @staticmethod
    def create(
        path: Union[str, os.PathLike[str]],
        bits: Optional[int] = None,
        substrings: Optional[int] = None,
        expected_size: Optional[int] = None,
        lock_timeout: float = 30.0,
        extractor: Optional[Extractor] = None,
        head: Optional[Head] = None,
    ) -> Index:
        """Creates a new, empty index in the directory ``path`` and opens it for writing;
        with ``extractor`` and ``head``, an image index (``bits`` then the head's)."""
    @staticmethod
    def open(
        path: Union[str, os.PathLike[str]],
        read_only: bool = False,
        lock_timeout: float = 30.0,
    ) -> Index:
        """Opens the index in the directory ``path``, writable or read-only."""
    @property
    def path(self) -> Path:
        """The index directory."""
    @property
    def bits(self) -> int:
        """The code length in bits."""
    @property
    def read_only(self) -> bool:
        """Whether this handle was opened read-only."""
    @property
    def closed(self) -> bool:
        """Whether ``close()`` was called."""
    def close(self) -> None:
        """Closes the handle, after the calls under way on other threads end."""
    def __enter__(self) -> Index:
        """Returns the index itself."""
    def __exit__(
        self,
        exc_type: Optional[Type[BaseException]],
        exc: Optional[BaseException],
        traceback: Optional[TracebackType],
    ) -> bool:
        """Closes the index."""
    def __len__(self) -> int:
        """The number of live codes."""
    def add(
        self,
        codes: _Codes,
        keys: Optional[_Strings] = None,
        labels: Optional[_Strings] = None,
    ) -> npt.NDArray[np.int64]:
        """Adds codes in one transaction; returns their new ids."""
    def delete(self, ids: _Ids) -> int:
        """Deletes live ids in one transaction; an unknown id raises ``UnknownIdError`` and
        deletes nothing. Returns the number deleted."""
    def ids_with_key(self, key: str) -> npt.NDArray[np.int64]:
        """The live ids stored under ``key``, increasing; empty when none is."""
    def delete_keys(self, keys: Sequence[str]) -> npt.NDArray[np.int64]:
        """Deletes every item of each key in one transaction; a key with no item raises
        ``UnknownIdError`` and deletes nothing. Returns the deleted ids."""
    def upsert(
        self,
        codes: _Codes,
        keys: Sequence[str],
        labels: Optional[_Strings] = None,
    ) -> Tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
        """Adds each code in place of every item of its key, in one transaction: ``(ids,
        replaced)``, the new ids and the replaced ones."""
    def search(
        self, codes: _Codes, k: int = 20
    ) -> Tuple[npt.NDArray[np.int64], npt.NDArray[np.int32]]:
        """The ``k`` nearest codes to each query: ``(ids, distances)`` of shape ``(nq, k)``,
        padded with ``-1``."""
    def snapshot(self) -> Snapshot:
        """The index as of its last commit, held for many searches without a fresh read of the
        last commit per call; close it when done."""
    def range_search(
        self, codes: _Codes, radius: int
    ) -> Tuple[npt.NDArray[np.int64], npt.NDArray[np.int64], npt.NDArray[np.int32]]:
        """Every code within ``radius`` of each query: ``(lims, ids, distances)``, FAISS's
        layout."""
    def add_images(
        self,
        paths: _Paths,
        extractor: Optional[Extractor] = None,
        label_from_dir: bool = False,
        keep_features: bool = False,
        lenient: bool = False,
        batch_size: int = 16,
        commit_every: int = 512,
        progress: Optional[Callable[[int, int], Any]] = None,
    ) -> _AddReport:
        """Adds image files through the index's model and head, as ``milan index add``;
        returns its ``--json`` report. Unreadable files are listed, not raised."""
    def search_images(
        self,
        paths: _Paths,
        k: int = 20,
        extractor: Optional[Extractor] = None,
        batch_size: int = 16,
        lenient: bool = False,
    ) -> Tuple[npt.NDArray[np.int64], npt.NDArray[np.int32]]:
        """The ``k`` nearest codes to each image: ``(ids, distances)`` as ``search``."""
    @property
    def head(self) -> Optional[Head]:
        """The hash head of an image index, or ``None``."""
    @property
    def model(self) -> Optional[_ModelInfo]:
        """The model an image index is bound to, or ``None``."""
    def ids(self) -> npt.NDArray[np.int64]:
        """The live ids, increasing."""
    def keys(self, ids: _Ids) -> list[Optional[str]]:
        """The keys stored with ``ids``."""
    def labels(self, ids: _Ids) -> list[Optional[str]]:
        """The labels stored with ``ids``."""
    def codes(self, ids: _Ids) -> npt.NDArray[np.uint8]:
        """The codes stored under ``ids``, ``uint8`` of shape ``(len(ids), bits // 8)``."""
    def info(self) -> _IndexInfo:
        """Facts about the index, as of the last commit."""
    def check(self) -> _CheckReport:
        """Checks every invariant of the stored index."""

@final
class Snapshot:
    """The index as of one commit, for many searches (``Index.snapshot()``)."""

    @property
    def bits(self) -> int: ...
    @property
    def closed(self) -> bool: ...
    def __len__(self) -> int: ...
    def __enter__(self) -> Snapshot: ...
    def __exit__(self, *exc: object) -> bool: ...
    def close(self) -> None: ...
    def search(
        self, codes: _Codes, k: int = 20
    ) -> Tuple[npt.NDArray[np.int64], npt.NDArray[np.int32]]:
        """As ``Index.search``, from the snapshot's commit."""
    def range_search(
        self, codes: _Codes, radius: int
    ) -> Tuple[npt.NDArray[np.int64], npt.NDArray[np.int64], npt.NDArray[np.int32]]:
        """As ``Index.range_search``, from the snapshot's commit."""

@final
class Extractor:
    """An ONNX image model that turns image files into feature vectors (ONNX Runtime is
    loaded when the first one opens)."""

    def __init__(
        self,
        model: _Path,
        input_size: Optional[int] = None,
        layout: Optional[str] = None,
        pixel_range: Optional[str] = None,
        output: Optional[str] = None,
        device: str = "auto",
        threads: Optional[int] = None,
        ort_library: Optional[_Path] = None,
    ) -> None: ...
    @property
    def model(self) -> Path:
        """The ONNX model file."""
    @property
    def dim(self) -> int:
        """The length of the feature vectors."""
    @property
    def input_size(self) -> int:
        """The input's height and width in pixels."""
    @property
    def input(self) -> str:
        """The input tensor's name."""
    @property
    def layout(self) -> str:
        """``"nchw"`` or ``"nhwc"``."""
    @property
    def pixel_range(self) -> str:
        """``"0..1"``, ``"-1..1"`` or ``"imagenet"``."""
    @property
    def output(self) -> str:
        """The output tensor the features come from."""
    @property
    def device(self) -> str:
        """``"cpu"`` or ``"cuda:N"``."""
    @property
    def fingerprint(self) -> str:
        """BLAKE3 of the model file, in hex."""
    def features(
        self,
        paths: _Paths,
        batch_size: int = 16,
        lenient: bool = False,
        progress: Optional[Callable[[int, int], Any]] = None,
    ) -> npt.NDArray[np.float32]:
        """The feature vectors of image files, ``(len(paths), dim)``; ``ImageError`` names
        the first file that cannot be read."""
    def extract(
        self,
        paths: _Paths,
        batch_size: int = 16,
        lenient: bool = False,
        progress: Optional[Callable[[int, int], Any]] = None,
    ) -> Dict[str, Any]:
        """Every readable file's features and content hash (``rows``, ``features``,
        ``content_hashes``) and every other file with why (``failed``)."""

@final
class Head:
    """A hash head: turns feature vectors into binary codes."""

    @staticmethod
    def load(path: _Path) -> Head:
        """Reads a head file."""
    @staticmethod
    def from_bytes(data: bytes) -> Head:
        """A head from the bytes of a head file."""
    @staticmethod
    def lsh(
        bits: int,
        dim: int,
        seed: int = 0,
        mean: Optional[npt.NDArray[np.floating[Any]]] = None,
        extractor: Optional[Extractor] = None,
    ) -> Head:
        """Random-hyperplane LSH through ``mean`` (or the origin), as ``milan head init --lsh``."""
    def save(self, path: _Path) -> None:
        """Writes the head file (whole or not at all)."""
    def to_bytes(self) -> bytes:
        """The bytes of the head file."""
    @property
    def bits(self) -> int:
        """The code length in bits."""
    @property
    def dim(self) -> int:
        """The length of the feature vectors it takes."""
    @property
    def kind(self) -> str:
        """``"lsh"``, ``"milan-plus"`` or ``"milan-paper"``."""
    @property
    def fingerprint(self) -> str:
        """BLAKE3 of the head's bytes, in hex."""
    @property
    def extractor_fingerprint(self) -> Optional[str]:
        """The fingerprint of the model the head is bound to, or ``None``."""
    @property
    def provenance(self) -> Dict[str, Any]:
        """How the head was made."""
    def codes(self, features: _Features) -> npt.NDArray[np.uint8]:
        """The codes of feature vectors, ``uint8`` of shape ``(n, bits // 8)``, packbits order."""

def content_hash(data: Union[bytes, _Path]) -> bytes:
    """BLAKE3 of bytes, or of a file's content: what an index stores as content hash."""

def train(
    features: _Features,
    labels: _Labels,
    bits: int = 64,
    recipe: str = "milan-plus",
    *,
    iters: Optional[int] = None,
    batch: Optional[int] = None,
    hidden: Optional[Sequence[int]] = None,
    alpha: Optional[float] = None,
    beta: Optional[float] = None,
    gamma: Optional[float] = None,
    lr: Optional[float] = None,
    seed: int = 0,
    threads: int = 0,
    validation: Optional[Tuple[_Features, _Labels]] = None,
    validate_every: Optional[int] = None,
    keep_best: bool = False,
    patience: int = 0,
    extractor: Optional[Extractor] = None,
    progress: Optional[Callable[[_TrainProgress], Any]] = None,
) -> Head:
    """Trains a hash head on labelled feature vectors, as ``milan train``."""

def evaluate(
    head: Head,
    features: _Features,
    labels: _Labels,
    *,
    k: int = 20,
    train_fraction: float = 0.6,
    split_seed: Optional[int] = None,
    keys: Optional[Sequence[str]] = None,
    split: Optional[Tuple[_Rows, _Rows]] = None,
    lsh_seed: int = 0,
    threads: int = 0,
) -> Dict[str, Any]:
    """A head's mAP@k and more by the MiLaN papers' protocol, as ``milan eval --json``."""

def split(
    labels: _Labels,
    train_fraction: float = 0.6,
    seed: Optional[int] = None,
    keys: Optional[Sequence[str]] = None,
) -> Tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    """The per-class train/test rows of ``milan train`` and ``milan eval``."""
