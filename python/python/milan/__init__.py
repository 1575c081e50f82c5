"""milan: exact Hamming search over binary hash codes, stored in an on-disk index.

An :class:`Index` is a directory holding binary codes (8 to 1024 bits, a multiple of 8) with an
optional key and label each. It answers, exactly, the ``k`` nearest codes to a query
(:meth:`Index.search`) and every code within a radius (:meth:`Index.range_search`), in
parallel over a batch of queries, from numpy arrays::

    import numpy as np
    import milan

    codes = np.random.default_rng(0).integers(0, 256, size=(1000, 8), dtype=np.uint8)
    with milan.Index.create("photos.milan", bits=64) as index:
        index.add(codes, keys=[f"{i}.png" for i in range(1000)])
        ids, distances = index.search(codes[:5], k=10)  # int64 and int32, shape (5, 10)
        lims, near, near_distances = index.range_search(codes[:5], radius=4)

Codes are ``uint8`` arrays of shape ``(n, bits // 8)`` in ``numpy.packbits`` order, or for
64-bit codes ``uint64`` arrays of shape ``(n,)``, the integer's most significant bit first.
Exceptions derive from :class:`MilanError` (see ``milan._errors``).
"""

from ._errors import (
    ClosedIndexError,
    CorruptedError,
    IndexExistsError,
    IndexVersionError,
    InvalidArgumentError,
    InvalidTypeError,
    LockTimeoutError,
    MilanError,
    NotAnIndexError,
    ReadOnlyError,
    StorageError,
    UnknownIdError,
)
from ._milan import Index, __version__

__all__ = [
    "Index",
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
    "__version__",
]
