"""Sharded ingest on Ray: images coded on many workers into shards that
``milan index import-shards`` merges into one index.

:func:`ingest` lists the images (a folder, walked as ``milan index add --recursive`` walks it, or
a list of paths), plans shards of ``shard_size`` consecutive images of the sorted list, and codes
the shards not written yet in Ray Data actors: each actor opens one :class:`milan.Extractor` (on
a GPU when ``num_gpus`` asks for one) and the :class:`milan.Head`, and writes each shard it is
given whole, under a temporary name renamed into place. A worker killed mid-shard is retried by
Ray and leaves no shard behind, half-written or twice; a driver killed mid-run leaves the
manifest and the finished shards, and running the same ingest again codes only the rest. The
folder's format is docs/shards.md's::

    python -m milan.ray ingest --images photos/ --model inception_v3.onnx --head milan64.head \\
        --out shards/ --num-cpus 2
    milan index create photos.milan --model inception_v3.onnx --head milan64.head
    milan index import-shards photos.milan shards/

On a cluster of several machines (``address``), ``out``, the images, the model and the head
must be at the same paths on every node (a shared file system).

The codes are those ``milan index add`` gives the same images with the same model and head, bit
for bit: both read, decode and code through the same crate. Ray (``pip install
"ray[data]==2.60.0"``) is imported only when :func:`ingest` runs.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import uuid
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Union

import numpy as np

__all__ = ["ingest", "list_images", "RayMissingError", "ShardsError", "main"]

FORMAT = "milan-shards"
SHARD_FORMAT = "milan-shard"
VERSION = 1
MANIFEST = "manifest.json"
SOURCES = "sources.txt"
SHARD_FILE = "shard.json"

# As the command line's folder walk (src/bin/milan/walk.rs): files named explicitly are always
# tried; in folders, these extensions only.
IMAGE_EXTENSIONS = frozenset(
    ["jpg", "jpeg", "png", "tif", "tiff", "webp", "bmp", "gif", "jfif"]
)

_Path = Union[str, "os.PathLike[str]"]


class RayMissingError(ImportError):
    """Ray Data is not installed: ``pip install "ray[data]==2.60.0"``."""


class ShardsError(ValueError):
    """The output folder holds shards of another ingest, or is not a shards folder."""


def escape_line(key: str) -> str:
    """A key as one line of a keys file (``\\``, line feed, carriage return escaped)."""
    if not any(c in key for c in "\\\n\r"):
        return key
    return key.replace("\\", "\\\\").replace("\n", "\\n").replace("\r", "\\r")


def unescape_line(line: str) -> str:
    """The key that :func:`escape_line` wrote as ``line``."""
    if "\\" not in line:
        return line
    out = []
    i = 0
    while i < len(line):
        c = line[i]
        if c == "\\" and i + 1 < len(line) and line[i + 1] in "\\nr":
            out.append({"\\": "\\", "n": "\n", "r": "\r"}[line[i + 1]])
            i += 2
            continue
        out.append(c)
        i += 1
    return "".join(out)


def _key(path: _Path) -> str:
    """A path spelled as ``milan index add`` keys it: absolute, ``.`` and ``..`` resolved."""
    return os.path.normpath(os.path.abspath(os.fspath(path)))


def list_images(images: Union[_Path, Sequence[_Path]]) -> List[str]:
    """The image files of a folder (walked recursively, links followed, each folder and file
    once, image extensions only) or of a list of paths (each taken as it is), as keys,
    sorted by their UTF-8 bytes and without repeats."""
    if isinstance(images, (str, os.PathLike)):
        roots = [images]
    else:
        roots = list(images)
    found: List[str] = []
    seen_files = set()
    seen_folders = set()
    for root in roots:
        root = os.fspath(root)
        try:
            stat = os.stat(root)
        except OSError as err:
            raise FileNotFoundError(f"{root}: cannot read ({err.strerror})") from None
        if not os.path.isdir(root):
            if (stat.st_dev, stat.st_ino) not in seen_files:
                seen_files.add((stat.st_dev, stat.st_ino))
                found.append(_key(root))
            continue
        pending = [root]
        while pending:
            folder = pending.pop()
            try:
                folder_stat = os.stat(folder)
                entries = sorted(os.scandir(folder), key=lambda e: e.name)
            except OSError as err:
                print(f"skipped {folder}: cannot list ({err.strerror})", file=sys.stderr)
                continue
            if (folder_stat.st_dev, folder_stat.st_ino) in seen_folders:
                continue
            seen_folders.add((folder_stat.st_dev, folder_stat.st_ino))
            for entry in entries:
                try:
                    is_dir = entry.is_dir()  # links followed
                except OSError:
                    is_dir = False
                if is_dir:
                    pending.append(entry.path)
                    continue
                extension = entry.name.rsplit(".", 1)[-1].lower() if "." in entry.name else ""
                if extension not in IMAGE_EXTENSIONS:
                    continue
                try:
                    entry_stat = os.stat(entry.path)
                    identity = (entry_stat.st_dev, entry_stat.st_ino)
                except OSError:
                    identity = ("path", entry.path)
                if identity in seen_files:
                    continue
                seen_files.add(identity)
                found.append(_key(entry.path))
    return sorted(set(found), key=lambda key: key.encode("utf-8", "surrogateescape"))


def _write_atomically(path: Path, data: bytes) -> None:
    partial = path.with_name(path.name + ".partial")
    with open(partial, "wb") as out:
        out.write(data)
        out.flush()
        os.fsync(out.fileno())
    os.replace(partial, path)


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _blake3_file(path: Path) -> str:
    import milan

    return milan.content_hash(path).hex()


def _shard_name(number: int) -> str:
    return f"shard-{number:06d}"


def _sources_text(sources: Sequence[str]) -> bytes:
    return "".join(escape_line(key) + "\n" for key in sources).encode(
        "utf-8", "surrogateescape"
    )


def _plan(
    out: Path,
    sources: List[str],
    extractor: Any,
    head: Any,
    shard_size: int,
    label_from_dir: bool,
    keep_features: bool,
) -> Dict[str, Any]:
    """Writes the manifest and source list into ``out``, or checks that those already there
    are this ingest's; returns the manifest."""
    import milan

    text = _sources_text(sources)
    manifest = {
        "format": FORMAT,
        "version": VERSION,
        "bits": head.bits,
        "head": {"fingerprint": head.fingerprint, "kind": head.kind, "bits": head.bits},
        "model": {
            "model": str(extractor.model),
            "fingerprint": extractor.fingerprint,
            "input": extractor.input,
            "layout": extractor.layout,
            "size": extractor.input_size,
            "pixel_range": extractor.pixel_range,
            "output": extractor.output,
            "dim": extractor.dim,
        },
        "sources": {
            "file": SOURCES,
            "count": len(sources),
            "fingerprint": milan.content_hash(text).hex(),
        },
        "shard_size": shard_size,
        "shards": -(-len(sources) // shard_size),
        "done": [],
        "label_from_dir": label_from_dir,
        "features": keep_features,
    }
    existing = out / MANIFEST
    if existing.exists():
        try:
            old = json.loads(existing.read_text("utf-8"))
        except (OSError, ValueError) as err:
            raise ShardsError(f"{existing}: not a shards manifest ({err})") from None
        if old.get("format") != FORMAT:
            raise ShardsError(f"{existing}: not a shards manifest (docs/shards.md)")
        for field, what in [
            ("sources", "source list"),
            ("head", "head"),
            ("model", "model"),
            ("shard_size", "shard size"),
            ("label_from_dir", "labels"),
            ("features", "kept features"),
        ]:
            ours, theirs = manifest[field], old.get(field)
            if field == "model":
                ours = {k: v for k, v in ours.items() if k != "model"}
                theirs = {k: v for k, v in (theirs or {}).items() if k != "model"}
            if ours != theirs:
                raise ShardsError(
                    f"{out} holds the shards of another ingest: its {what} is {_short(theirs)}, "
                    f"this one's {_short(ours)}; give another --out folder (or empty this one)"
                )
        return old
    out.mkdir(parents=True, exist_ok=True)
    # A plan whose writing was cut short left at most these.
    stray = [p for p in out.iterdir() if not p.name.startswith((MANIFEST, SOURCES))]
    if stray:
        raise ShardsError(
            f"{out} is not empty and holds no {MANIFEST}; give an empty or new folder"
        )
    _write_atomically(out / SOURCES, text)
    _write_atomically(out / MANIFEST, json.dumps(manifest, indent=1).encode())
    _fsync_dir(out)
    return manifest


def _short(value: Any) -> str:
    if isinstance(value, dict) and "fingerprint" in value:
        return str(value["fingerprint"])[:16]
    return json.dumps(value)[:80]


def _read_sources(out: Path) -> List[str]:
    text = (out / SOURCES).read_bytes().decode("utf-8", "surrogateescape")
    return [unescape_line(line) for line in text.split("\n")[:-1]]


def write_shard(
    out: Path,
    number: int,
    extractor: Any,
    head: Any,
    manifest: Dict[str, Any],
    batch_size: int = 16,
    lenient: bool = False,
    sources: Optional[List[str]] = None,
    _die_midway: bool = False,
) -> Dict[str, Any]:
    """Codes shard ``number`` of the ingest planned in ``out`` and writes it whole: into a
    temporary folder, then renamed to ``shard-NNNNNN``. When that folder is already there
    (another attempt finished first) nothing is written. Returns the shard's summary."""
    final = out / _shard_name(number)
    if final.is_dir():
        return {"shard": number, "rows": -1, "failed": 0, "written": False}
    if sources is None:
        sources = _read_sources(out)
    size = manifest["shard_size"]
    first = number * size
    paths = sources[first : first + size]
    found = extractor.extract(paths, batch_size=batch_size, lenient=lenient)
    rows = found["rows"]
    features = found["features"]
    codes = head.codes(features) if len(rows) else np.zeros((0, head.bits // 8), np.uint8)
    keys = [paths[i] for i in rows]
    tmp = out / f".{_shard_name(number)}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        np.save(tmp / "codes.npy", np.ascontiguousarray(codes, dtype=np.uint8))
        if _die_midway:
            # The fault tests' worker death: the process ends with the shard half-written.
            os._exit(1)
        np.save(
            tmp / "content_hashes.npy",
            np.ascontiguousarray(found["content_hashes"], dtype=np.uint8).reshape(-1, 32),
        )
        (tmp / "keys.txt").write_bytes(_sources_text(keys))
        names = ["codes.npy", "content_hashes.npy", "keys.txt"]
        if manifest.get("label_from_dir"):
            labels = [os.path.basename(os.path.dirname(key)) for key in keys]
            (tmp / "labels.txt").write_bytes(_sources_text(labels))
            names.append("labels.txt")
        if manifest.get("features"):
            np.save(tmp / "features.npy", np.ascontiguousarray(features, dtype="<f4"))
            names.append("features.npy")
        shard = {
            "format": SHARD_FORMAT,
            "version": VERSION,
            "shard": number,
            "first_source": first,
            "sources": len(paths),
            "rows": len(rows),
            "bits": head.bits,
            "head": head.fingerprint,
            "model": extractor.fingerprint,
            "files": {name: _blake3_file(tmp / name) for name in names},
            "failed": found["failed"],
        }
        (tmp / SHARD_FILE).write_text(json.dumps(shard, indent=1), "utf-8")
        for name in names + [SHARD_FILE]:
            with open(tmp / name, "rb") as f:
                os.fsync(f.fileno())
        _fsync_dir(tmp)
        try:
            os.rename(tmp, final)
        except OSError:
            if final.is_dir():
                # Another attempt renamed its copy first: that one stands.
                shutil.rmtree(tmp, ignore_errors=True)
                return {"shard": number, "rows": -1, "failed": 0, "written": False}
            raise
        _fsync_dir(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return {"shard": number, "rows": len(rows), "failed": len(found["failed"]), "written": True}


class _ShardCoder:
    """A Ray Data actor: one extractor session and one head, shards coded one at a time."""

    def __init__(
        self,
        out: str,
        model: str,
        head: str,
        extractor_options: Dict[str, Any],
        batch_size: int,
        lenient: bool,
        fail_after: Optional[str] = None,
    ) -> None:
        import milan

        self.out = Path(out)
        self.extractor = milan.Extractor(model, **extractor_options)
        self.head = milan.Head.load(head)
        # Read here rather than passed: constructor arguments stay small, so that a restarted
        # actor never depends on them being kept in the object store.
        self.manifest = json.loads((self.out / MANIFEST).read_text("utf-8"))
        self.batch_size = batch_size
        self.lenient = lenient
        self.sources = _read_sources(self.out)
        # For the fault tests: a file whose presence makes this process die mid-shard once.
        self.fail_after = fail_after

    def __call__(self, batch: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
        results = []
        for number in batch["shard"]:
            die = False
            if self.fail_after:
                try:
                    os.remove(self.fail_after)  # once: whoever removes it dies
                    die = True
                except FileNotFoundError:
                    pass
            results.append(
                write_shard(
                    self.out,
                    int(number),
                    self.extractor,
                    self.head,
                    self.manifest,
                    batch_size=self.batch_size,
                    lenient=self.lenient,
                    sources=self.sources,
                    _die_midway=die,
                )
            )
        return {
            "shard": np.array([r["shard"] for r in results], dtype=np.int64),
            "rows": np.array([r["rows"] for r in results], dtype=np.int64),
            "failed": np.array([r["failed"] for r in results], dtype=np.int64),
        }


def _import_ray() -> Any:
    try:
        import ray  # noqa: F401
        import ray.data  # noqa: F401
    except ImportError as err:
        raise RayMissingError(
            f'milan.ray needs Ray Data: pip install "ray[data]==2.60.0" ({err})'
        ) from None
    return ray


def ingest(
    images: Union[_Path, Sequence[_Path]],
    model: _Path,
    head: _Path,
    out: _Path,
    *,
    num_cpus: Optional[int] = None,
    num_gpus: Optional[int] = None,
    shard_size: int = 256,
    batch_size: int = 16,
    label_from_dir: bool = False,
    keep_features: bool = False,
    lenient: bool = False,
    input_size: Optional[int] = None,
    layout: Optional[str] = None,
    pixel_range: Optional[str] = None,
    output: Optional[str] = None,
    ort_library: Optional[_Path] = None,
    address: Optional[str] = None,
    progress: Optional[Any] = None,
    _fail_after: Optional[str] = None,
) -> Dict[str, Any]:
    """Codes ``images`` with ``model`` and ``head`` into shards under ``out``.

    ``num_cpus`` and ``num_gpus`` size a local Ray (started here unless Ray is already
    initialised or ``address`` names a cluster): one actor per CPU, or per GPU when
    ``num_gpus`` is given, each running the model on its device. Returns a summary: shards
    planned, written by this run and found written before, images coded, and every image that
    could not be coded, by name and reason (as ``milan index add --json`` lists them).
    """
    import milan

    if shard_size < 1 or batch_size < 1:
        raise ValueError("shard_size and batch_size must be 1 or more")
    out = Path(out)
    options: Dict[str, Any] = {
        "input_size": input_size,
        "layout": layout,
        "pixel_range": pixel_range,
        "output": output,
        "ort_library": None if ort_library is None else os.fspath(ort_library),
    }
    # The driver opens the model once, to record its contract and check the head against it.
    extractor = milan.Extractor(model, device="cpu", threads=1, **options)
    the_head = milan.Head.load(head)
    if the_head.dim != extractor.dim:
        raise ValueError(
            f"{head}: the head takes {the_head.dim}-dimensional features but {model} gives {extractor.dim}"
        )
    bound = the_head.extractor_fingerprint
    if bound is not None and bound != extractor.fingerprint:
        raise ValueError(
            f"{head}: the head was made for model {bound[:16]}, not {model} ({extractor.fingerprint[:16]})"
        )
    listed = list_images(images)
    sources, unnamed = [], []
    for key in listed:
        try:
            key.encode("utf-8")
            sources.append(key)
        except UnicodeEncodeError:
            # As `index add`: a key must name the file again, in UTF-8.
            unnamed.append(key)
    manifest = _plan(out, sources, extractor, the_head, shard_size, label_from_dir, keep_features)
    for stray in out.glob(".shard-*.tmp-*"):
        # Left by a killed run: never renamed, so never a shard.
        shutil.rmtree(stray, ignore_errors=True)
    planned = manifest["shards"]
    pending = [n for n in range(planned) if not (out / _shard_name(n)).is_dir()]
    summary: Dict[str, Any] = {
        "shards": planned,
        "written": 0,
        "written_before": planned - len(pending),
        "images": len(listed),
        "coded": 0,
        "failed": [
            {"path": key, "reason": "name_not_utf8", "detail": "the file name is not valid UTF-8"}
            for key in unnamed
        ],
        "failed_by_reason": {"name_not_utf8": len(unnamed)} if unnamed else {},
    }
    if pending:
        ray = _import_ray()
        started_here = False
        if not ray.is_initialized():
            os.environ.setdefault("RAY_AUTH_MODE", "disabled")
            kwargs: Dict[str, Any] = {"include_dashboard": False, "log_to_driver": False}
            if address is not None:
                kwargs["address"] = address
            else:
                kwargs["num_cpus"] = num_cpus or os.cpu_count() or 1
                if num_gpus is not None:
                    kwargs["num_gpus"] = num_gpus
                # Socket paths have a length limit: a short folder under the system's temp.
                kwargs["_temp_dir"] = tempfile.mkdtemp(prefix="mr-", dir="/tmp")
            ray.init(**kwargs)
            started_here = True
        try:
            resources = ray.cluster_resources()
            have = int(resources.get("GPU", 0))
            if num_gpus is not None and num_gpus > have:
                raise ValueError(
                    f"--num-gpus {num_gpus}: the Ray cluster has {have} GPU(s); ask for at most {have}"
                )
            gpus = have if num_gpus is None else num_gpus
            cpus = int(resources.get("CPU", 1)) if num_cpus is None else num_cpus
            if gpus > 0:
                actors, per_actor = min(gpus, len(pending)), {"num_gpus": 1, "num_cpus": 1}
                device = "cuda"
                threads = None
            else:
                actors, per_actor = min(max(cpus, 1), len(pending)), {"num_cpus": 1}
                device = "cpu"
                threads = 1
            dataset = ray.data.from_items([{"shard": n} for n in pending])
            coded = dataset.map_batches(
                _ShardCoder,
                fn_constructor_kwargs={
                    "out": str(out),
                    "model": os.fspath(model),
                    "head": os.fspath(head),
                    "extractor_options": dict(options, device=device, threads=threads),
                    "batch_size": batch_size,
                    "lenient": lenient,
                    "fail_after": _fail_after,
                },
                batch_size=1,
                # Ray Data restarts a dead actor and retries its shard (its defaults:
                # max_restarts=-1, max_task_retries=-1).
                compute=ray.data.ActorPoolStrategy(size=actors),
                **per_actor,
            )
            done = set(manifest.get("done") or [])
            for row in coded.iter_rows():
                number = int(row["shard"])
                if int(row["rows"]) >= 0:
                    summary["written"] += 1
                else:
                    summary["written_before"] += 1
                done.add(number)
                manifest["done"] = sorted(done)
                _write_atomically(out / MANIFEST, json.dumps(manifest, indent=1).encode())
                if progress is not None:
                    progress(len(done), planned)
        finally:
            if started_here:
                ray.shutdown()
    if all((out / _shard_name(n)).is_dir() for n in range(planned)):
        for stray in out.glob(".shard-*.tmp-*"):
            # Left by a worker that died mid-shard and was retried.
            shutil.rmtree(stray, ignore_errors=True)
    # The summary covers every shard, those of earlier runs too.
    for n in range(planned):
        path = out / _shard_name(n) / SHARD_FILE
        if not path.exists():
            continue
        shard = json.loads(path.read_text("utf-8"))
        summary["coded"] += shard["rows"]
        for failed in shard["failed"]:
            summary["failed"].append(failed)
            reasons = summary["failed_by_reason"]
            reasons[failed["reason"]] = reasons.get(failed["reason"], 0) + 1
    return summary


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m milan.ray",
        description="Sharded ingest on Ray: images coded on many workers into shards that "
        "`milan index import-shards` merges into one index.",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser(
        "ingest",
        help="code a folder of images into shards",
        description="Code images into shards (docs/shards.md); a re-run codes only the shards "
        "not written yet. Exit status: 0 success, 1 error, 2 usage error, 3 some images "
        "could not be coded (each named).",
    )
    run.add_argument("--images", required=True, action="append", help="a folder (walked recursively) or an image file; repeat for more")
    run.add_argument("--model", required=True, help="the ONNX image model")
    run.add_argument("--head", required=True, help="the hash head file")
    run.add_argument("--out", required=True, help="the shards folder (created if missing)")
    run.add_argument("--num-cpus", type=int, help="CPUs of the local Ray [default: all cores]")
    run.add_argument("--num-gpus", type=int, help="GPUs of the local Ray; one actor per GPU")
    run.add_argument("--address", help="a running Ray cluster to use instead of a local one")
    run.add_argument("--input-size", type=int, help="input height and width in pixels")
    run.add_argument("--layout", choices=["nchw", "nhwc"], help="input layout")
    run.add_argument("--pixel-range", choices=["0..1", "-1..1", "imagenet"], help="pixel scaling")
    run.add_argument("--output", help="the model output to use as features")
    run.add_argument("--ort-lib", help="the ONNX Runtime library (libonnxruntime.so)")
    run.add_argument("--shard-size", type=int, default=256, help="images per shard [default: 256]")
    run.add_argument("--batch-size", type=int, default=16, help="images per model run [default: 16]")
    run.add_argument("--label-from-dir", action="store_true", help="label each image with its folder's name")
    run.add_argument("--keep-features", action="store_true", help="keep feature vectors in the shards")
    run.add_argument("--lenient", action="store_true", help="accept truncated JPEGs")
    run.add_argument("--json", action="store_true", help="print one JSON summary")
    args = parser.parse_args(argv)
    for value, flag in [(args.shard_size, "--shard-size"), (args.batch_size, "--batch-size")]:
        if value < 1:
            parser.error(f"{flag} must be 1 or more; got {value}")
    try:
        summary = ingest(
            args.images,
            args.model,
            args.head,
            args.out,
            num_cpus=args.num_cpus,
            num_gpus=args.num_gpus,
            address=args.address,
            shard_size=args.shard_size,
            batch_size=args.batch_size,
            label_from_dir=args.label_from_dir,
            keep_features=args.keep_features,
            lenient=args.lenient,
            input_size=args.input_size,
            layout=args.layout,
            pixel_range=args.pixel_range,
            output=args.output,
            ort_library=args.ort_lib,
            _fail_after=os.environ.get("MILAN_RAY_FAIL_ONCE"),
        )
    except KeyboardInterrupt:
        print("interrupted: the shards written so far are kept; run the same command again to finish", file=sys.stderr)
        return 130
    except Exception as err:  # noqa: BLE001 - Ray's and milan's errors alike, named
        print(f"error: {err}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(summary))
    else:
        for failed in summary["failed"]:
            shown = failed["path"].encode("unicode_escape", "backslashreplace").decode("ascii")
            print(f"skipped {shown}: {failed['detail']}", file=sys.stderr)
        print(
            f"{summary['shards']} shards in {args.out}: {summary['written']} written now, "
            f"{summary['written_before']} before; {summary['coded']} of {summary['images']} "
            f"images coded, {len(summary['failed'])} failed"
        )
    return 3 if summary["failed"] else 0


if __name__ == "__main__":
    sys.exit(main())
