"""Decode each image once: resized uint8 arrays on disk, keyed by file content and size."""

from __future__ import annotations

import io
import os
import threading
from pathlib import Path

import numpy as np

from ..files import write_atomic
from ..preprocess import FRAMING_REVISION, PreprocessSpec

# np.load parses each .npy header with ast.literal_eval, and CPython 3.11's AST constructor
# keeps its recursion depth in shared state: two threads compiling at once can fail with
# "SystemError: AST constructor recursion depth mismatch" (python/cpython#106905; it failed a
# CI run). Decoding threads read files in parallel and take turns only at the header.
_HEADER_LOCK = threading.Lock()


def cache_root() -> Path | None:
    """``$HEMATOVISION_CACHE`` or ``~/.cache/hematovision``; None where ``=off`` disables caches."""
    env = os.environ.get("HEMATOVISION_CACHE")
    if env == "off":
        return None
    return Path(env) if env else Path.home() / ".cache" / "hematovision"


class DecodeCache:
    """A folder of ``.npy`` files named by the SHA-256 of the image file and the resize spec.

    Content keys mean a renamed or moved file is still a hit, and an edited file a miss.
    """

    def __init__(self, root: str | Path | None):
        self.root = Path(root) if root else None

    @classmethod
    def default(cls) -> DecodeCache:
        root = cache_root()
        return cls(root / "decoded" if root else None)

    def _path(self, key: str, spec: PreprocessSpec) -> Path:
        framing = "" if spec.framing == "none" else f"-{spec.framing}{FRAMING_REVISION}"
        return self.root / f"{spec.input_size}-{spec.resample}{framing}" / key[:2] / f"{key}.npy"

    def get(self, key: str, spec: PreprocessSpec) -> np.ndarray | None:
        if self.root is None:
            return None
        path = self._path(key, spec)
        try:
            data = path.read_bytes()
            with _HEADER_LOCK:
                arr = np.load(io.BytesIO(data), allow_pickle=False)
        except (OSError, ValueError):
            return None
        size = spec.input_size
        return arr if arr.shape == (size, size, 3) and arr.dtype == np.uint8 else None

    def put(self, key: str, spec: PreprocessSpec, arr: np.ndarray) -> None:
        if self.root is None:
            return
        buffer = io.BytesIO()
        np.save(buffer, arr, allow_pickle=False)
        write_atomic(self._path(key, spec), buffer.getvalue())  # readers never see half a file
