"""The errors a user can act on, one hierarchy: every CLI prints a `Co2SError` as one `error: <message>` line (no
traceback) and exits with status 1 (`co2s.cli` holds the exit-status table).

    Co2SError               root: catch this to handle any of them
      Co2SInputError        bad input: a file, a field or an option value; also a ValueError (older code catches that)
      Co2SOutputError       an output cannot be written (disk full, no permission, read-only file system)
      Co2SCheckFailed       a check on a result failed (export: a parity threshold, the TensorRT operator audit)
      BackendUnavailable    this inference backend cannot run here (package, provider or device missing)
"""

from __future__ import annotations

import errno
import os
import tempfile
from pathlib import Path


class Co2SError(Exception):
    """A problem the user can act on; the message names the file, field or option and says what was expected."""


class Co2SInputError(Co2SError, ValueError):
    """Bad input: the message names the file or field and says what was expected."""


class Co2SOutputError(Co2SError):
    """An output could not be written (disk full, no permission, read-only file system): the message names the path
    and the reason. `errno` is the OS error number when there was one (e.g. errno.ENOSPC: no point trying the next
    output)."""

    def __init__(self, message: str, code: int | None = None):
        super().__init__(message)
        self.errno = code


class Co2SCheckFailed(Co2SError):
    """A check on what was produced failed (a parity threshold, an operator audit); nothing was kept."""


class BackendUnavailable(Co2SError):
    """This backend cannot run here (package, provider or device missing); auto-selection tries the next one."""


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
