"""Errors a user can act on. CLIs print them as one clear message (no traceback) and exit non-zero."""

from __future__ import annotations

import errno
import os
import tempfile
from pathlib import Path


class Co2SInputError(ValueError):
    """Bad input: the message names the file or field and says what was expected."""


class Co2SOutputError(Co2SInputError):
    """An output could not be written (disk full, no permission, read-only file system): the message names the path
    and the reason. A Co2SInputError, so every CLI reports it the same way (one line, its usual exit status).
    `errno` is the OS error number when there was one (e.g. errno.ENOSPC: no point trying the next output)."""

    def __init__(self, message: str, code: int | None = None):
        super().__init__(message)
        self.errno = code


# errno -> what the user is told; these are problems with where the output goes, not bugs
_REASONS = {
    errno.ENOSPC: "the disk is full (no space left on device)",
    errno.EDQUOT: "the disk quota is exceeded",
    errno.EFBIG: "the file is too large for this file system",
    errno.EACCES: "permission denied",
    errno.EPERM: "operation not permitted",
    errno.EROFS: "read-only file system",
}
WRITE_ERRNOS = frozenset(_REASONS)


def output_error(path: str | os.PathLike, err: OSError, what: str = "cannot write") -> Co2SOutputError:
    """`<path>: <what>: <reason>`, e.g. `run/last.pt: cannot write the checkpoint: the disk is full (...)`."""
    reason = _REASONS.get(err.errno) or err.strerror or str(err)
    return Co2SOutputError(f"{path}: {what}: {reason}", err.errno)


def ensure_writable_dir(folder: str | os.PathLike, what: str | None = None) -> Path:
    """Create `folder` if needed and check a file can be created in it (a probe, removed at once), so an output
    folder that cannot be written is reported before any expensive work starts. Works for root too (root ignores
    permission bits, not a read-only mount). The error reads `<what>: <reason>`; `what` defaults to
    `<folder>: cannot write to this folder`."""
    folder = Path(folder)
    what = what or f"{folder}: cannot write to this folder"
    if folder.exists() and not folder.is_dir():
        raise Co2SOutputError(f"{what}: it exists and is not a folder")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".co2s-write-check-", dir=folder)
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        reason = _REASONS.get(e.errno) or e.strerror or str(e)
        raise Co2SOutputError(f"{what}: {reason}", e.errno) from None
    return folder
