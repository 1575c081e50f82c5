"""Type stubs of the extension module ``milan._milan`` (re-exported by ``milan``)."""

import os
from pathlib import Path
from types import TracebackType
from typing import Any, Optional, Sequence, Tuple, Type, TypedDict, Union, final

import numpy as np
import numpy.typing as npt

__all__ = ["Index", "__version__"]

__version__: str

# uint8 of shape (n, bits // 8) or (bits // 8,), or for 64-bit indexes uint64 of shape (n,) or ().
_Codes = Union[npt.NDArray[np.uint8], npt.NDArray[np.uint64], np.uint64]
# A sequence of ints or a 1-D integer array.
_Ids = Union[Sequence[int], npt.NDArray[np.integer[Any]]]
_Strings = Sequence[Optional[str]]

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
        bits: int = 64,
        substrings: Optional[int] = None,
        expected_size: Optional[int] = None,
        lock_timeout: float = 30.0,
    ) -> Index:
        """Creates a new, empty index in the directory ``path`` and opens it for writing."""
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
    def search(
        self, codes: _Codes, k: int = 20
    ) -> Tuple[npt.NDArray[np.int64], npt.NDArray[np.int32]]:
        """The ``k`` nearest codes to each query: ``(ids, distances)`` of shape ``(nq, k)``,
        padded with ``-1``."""
    def range_search(
        self, codes: _Codes, radius: int
    ) -> Tuple[npt.NDArray[np.int64], npt.NDArray[np.int64], npt.NDArray[np.int32]]:
        """Every code within ``radius`` of each query: ``(lims, ids, distances)``, FAISS's
        layout."""
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
