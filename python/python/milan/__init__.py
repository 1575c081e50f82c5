"""milan: content-based image retrieval with binary hash codes, stored in an on-disk index.

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

Images become codes through an :class:`Extractor` (an ONNX model; ONNX Runtime is loaded when
the first one opens, see ``milan._runtime``) and a :class:`Head` (from :func:`train`,
:meth:`Head.load` or :meth:`Head.lsh`)::

    extractor = milan.Extractor("inception_v3.onnx")
    head = milan.Head.load("milan64.head")
    with milan.Index.create("photos.milan", extractor=extractor, head=head) as index:
        report = index.add_images(paths, label_from_dir=True)   # as `milan index add --json`
        ids, distances = index.search_images(paths[:3], k=19)

    features = extractor.features(paths)                  # float32 (n, dim)
    train_rows, test_rows = milan.split(labels)           # 60/40 per class, as `milan train`
    head = milan.train(features[train_rows], labels[train_rows], bits=64)
    print(milan.evaluate(head, features, labels)["map_at_k"])   # the papers' mAP@20

Exceptions derive from :class:`MilanError` (see ``milan._errors``).
"""

from ._errors import (
    ClosedIndexError,
    CorruptedError,
    HeadError,
    ImageError,
    IndexExistsError,
    IndexVersionError,
    InvalidArgumentError,
    InvalidTypeError,
    LockTimeoutError,
    MilanError,
    MismatchError,
    ModelError,
    NotAnIndexError,
    ReadOnlyError,
    StorageError,
    UnknownIdError,
)
from ._milan import (
    Extractor,
    Head,
    Index,
    Snapshot,
    __version__,
    content_hash,
    evaluate,
    split,
    train,
)

__all__ = [
    "Index",
    "Snapshot",
    "Extractor",
    "Head",
    "train",
    "evaluate",
    "split",
    "content_hash",
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
    "__version__",
]
