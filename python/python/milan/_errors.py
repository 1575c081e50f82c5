"""The exceptions milan raises, one class per kind of failure.

Every class derives from :class:`MilanError`, and where a built-in exception says the same, from
that one too, so that either can be caught: a missing index is a ``FileNotFoundError``, a write
that waited too long for another writer a ``TimeoutError``, a wrong shape a ``ValueError``, a
wrong dtype a ``TypeError``, an unknown id a ``KeyError``. The messages are those of the Rust
library, which name the path, the expected and the given values.
"""

from __future__ import annotations

__all__ = [
    "MilanError",
    "NotAnIndexError",
    "IndexExistsError",
    "LockTimeoutError",
    "ReadOnlyError",
    "CorruptedError",
    "IndexVersionError",
    "InvalidArgumentError",
    "InvalidTypeError",
    "UnknownIdError",
    "ClosedIndexError",
    "StorageError",
    "ModelError",
    "MismatchError",
    "ImageError",
    "HeadError",
]


class MilanError(Exception):
    """Base class of every milan exception; raised itself for failures without a finer class."""


class NotAnIndexError(MilanError, FileNotFoundError):
    """The path holds no milan index: a missing directory, a file, or a directory without one."""


class IndexExistsError(MilanError, FileExistsError):
    """``Index.create`` found an index already there; open it instead."""


class LockTimeoutError(MilanError, TimeoutError):
    """A write waited longer than ``lock_timeout`` for another handle's or process's write."""


class ReadOnlyError(MilanError, PermissionError):
    """A write on a handle opened with ``read_only=True``."""


class CorruptedError(MilanError):
    """The stored index violates its format (damage); ``Index.check`` lists what is wrong."""


class IndexVersionError(MilanError):
    """The index was written in a format version this milan cannot read (too new or too old)."""


class InvalidArgumentError(MilanError, ValueError):
    """An argument with a wrong value: a shape, a code length, ``k``, a radius, a count of keys."""


class InvalidTypeError(MilanError, TypeError):
    """An argument of a wrong type or dtype: codes that are not ``uint8`` (or ``uint64``), ids
    that are not integers, keys that are not strings."""


class UnknownIdError(MilanError, KeyError):
    """An id that is not live: never handed out, or deleted."""

    def __str__(self) -> str:
        # KeyError quotes its argument; the message reads better as it is.
        return str(self.args[0]) if self.args else ""


class ClosedIndexError(MilanError, ValueError):
    """A use of an index after ``close()`` (or after its ``with`` block ended)."""


class StorageError(MilanError, OSError):
    """An I/O or storage-engine error; the message names the file and the cause."""


class ModelError(MilanError):
    """An ONNX model or ONNX Runtime that cannot be found, loaded or run; the message says which
    and why (for ONNX Runtime, every place it was looked for)."""


class MismatchError(MilanError, ValueError):
    """A model or hash head that is not the one an index (or a head) was made for: another
    model file, output or input settings, another feature dimension or code length."""


class ImageError(MilanError, ValueError):
    """An image that cannot be read or decoded; the message names the file and the reason."""


class HeadError(MilanError, ValueError):
    """A file or bytes that are not a usable hash head."""
