"""sha256 of bundle files: the one helper the exporter records checksums with and every reader checks them with."""

from __future__ import annotations

import hashlib
import os
import threading
from pathlib import Path

CHUNK = 1 << 22  # 4 MiB reads


def sha256_file(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(CHUNK):
            h.update(block)
    return h.hexdigest()


_known: dict[tuple[str, int, int], str] = {}
_known_lock = threading.Lock()


def cached_sha256(path: Path, st: os.stat_result) -> str:
    """sha256_file once per file version (path, size, mtime) and process: a server that opens the same bundle for
    each request, or a run that verifies a bundle and then loads from it, hashes a 700 MB model once."""
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    with _known_lock:
        digest = _known.get(key)
    if digest is None:
        digest = sha256_file(path)
        with _known_lock:
            _known[key] = digest
    return digest
