"""Finding ONNX Runtime for :class:`milan.Extractor`.

The package does not link ONNX Runtime: the library is loaded when the first extractor opens, so
that the wheel needs nothing but numpy at run time. It is looked for, in order:

1. the ``ort_library`` argument of :class:`milan.Extractor` (which must then exist);
2. the environment variables ``MILAN_ORT_LIB``, then ``ORT_DYLIB_PATH`` (as the command line);
3. beside the extension module (a library copied into the installed package);
4. the ``onnxruntime`` Python package, when installed (``pip install onnxruntime==1.31.1``), whose
   wheel carries the library (found without importing the package);
5. for a build inside a cargo ``target/`` folder (``make python``), the project's
   ``.onnxruntime/cpu`` and ``.onnxruntime/gpu`` folders (``make setup``, ``make setup-gpu``), as
   the command line finds them from its own executable.

Only these places: never the current directory or other folders above the package, where anyone
may have planted a file. ONNX Runtime is loaded once per process; later extractors use the
library the first one loaded.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path
from typing import List, Optional, Tuple, Union

from ._errors import ModelError

__all__ = ["find_library", "library_candidates"]

if sys.platform == "darwin":
    _LIBRARY = "libonnxruntime.dylib"
elif sys.platform == "win32":
    _LIBRARY = "onnxruntime.dll"
else:
    _LIBRARY = "libonnxruntime.so"

# Folders above the extension module searched for a cargo `target` folder: enough for
# target/python-venv/lib/python3.X/site-packages/milan/.
_TARGET_FOLDER_DEPTH = 6


def _onnxruntime_package() -> List[Path]:
    """The libraries in the installed ``onnxruntime`` package's ``capi`` folder, newest name
    first (the wheel names the file with its version: ``libonnxruntime.so.1.31.1``)."""
    try:
        spec = importlib.util.find_spec("onnxruntime")
    except (ImportError, ValueError):
        return []
    if spec is None or not spec.submodule_search_locations:
        return []
    found: List[Path] = []
    for location in spec.submodule_search_locations:
        capi = Path(location) / "capi"
        if capi.is_dir():
            found.extend(sorted(capi.glob(_LIBRARY + "*"), reverse=True))
    return [path for path in found if not path.name.endswith((".py", ".pyc"))]


def library_candidates(
    explicit: Optional[Union[str, "os.PathLike[str]"]] = None, prefer_gpu: bool = True
) -> List[Tuple[Path, str]]:
    """Every place ONNX Runtime is looked for, in order, with where each came from."""
    candidates: List[Tuple[Path, str]] = []
    if explicit is not None:
        candidates.append((Path(explicit), "the ort_library argument"))
    for variable in ("MILAN_ORT_LIB", "ORT_DYLIB_PATH"):
        value = os.environ.get(variable)
        if value:
            candidates.append((Path(value), variable))
    here = Path(__file__).resolve().parent
    candidates.append((here / _LIBRARY, "beside the milan package"))
    for path in _onnxruntime_package():
        candidates.append((path, "the onnxruntime Python package"))
    for folder in list(here.parents)[:_TARGET_FOLDER_DEPTH]:
        if folder.name == "target":
            root = folder.parent / ".onnxruntime"
            kinds = ["gpu", "cpu"] if prefer_gpu else ["cpu", "gpu"]
            for kind in kinds:
                candidates.append(
                    (root / kind / _LIBRARY, f"the project of this build (.onnxruntime/{kind})")
                )
            break
    return candidates


def find_library(
    explicit: Optional[Union[str, "os.PathLike[str]"]] = None, prefer_gpu: bool = True
) -> str:
    """The first candidate that is a file, as an absolute path; ``ModelError`` naming every
    place looked in when there is none."""
    if explicit is not None and not Path(explicit).is_file():
        raise ModelError(f"{explicit}: ort_library is not a file; point it at libonnxruntime")
    candidates = library_candidates(explicit, prefer_gpu)
    for path, _ in candidates:
        path = Path(os.path.abspath(path))
        if path.is_file():
            return str(path)
    searched = ", ".join(f"{path} ({source})" for path, source in candidates)
    raise ModelError(
        "ONNX Runtime 1.31 was not found; install it with `pip install onnxruntime==1.31.1`, or "
        "point milan.Extractor(..., ort_library=PATH) or MILAN_ORT_LIB at libonnxruntime. "
        f"Looked in: {searched}"
    )
