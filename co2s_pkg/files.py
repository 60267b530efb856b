"""Writing files so that a kill, a full disk or a missing permission never leaves half a file under a final name.

Torch-free and numpy-free: train (checkpoints, metrics), export (bundles, engines) and runtime share these.
Temporary files are hidden and carry the writer's process id (`.<name>.<pid>.<random>.tmp`), so a later run can
tell a dead writer's leftovers from a live one's.
"""

from __future__ import annotations

import os
import re
import tempfile
from collections.abc import Callable
from pathlib import Path

from .errors import output_error

# `.<name>.<pid>.<random>.tmp`: the temporary file of an atomic write, with the writer's process id
TEMP_NAME = re.compile(r"^\.(?P<name>.+)\.(?P<pid>\d+)\.[^.]+\.tmp$")


def atomic_write(path: str | os.PathLike, write: Callable, *, what: str = "cannot write") -> None:
    """write(binary file) into a hidden temporary file in the same folder, fsync it, rename it over `path`, fsync
    the folder. A kill at any point leaves either the old file or the new one under `path`, never part of one;
    a failure (disk full, no permission) removes the temporary file and raises Co2SOutputError naming `path`."""
    path = Path(path)
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.{os.getpid()}.", suffix=".tmp", dir=path.parent)
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~umask())  # mkstemp creates 0600; these are ordinary files
        os.replace(tmp, path)
        tmp = None
        fsync_dir(path.parent)
    except OSError as e:
        raise output_error(path, e, what) from None
    finally:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write(path, lambda f: f.write(text.encode("utf-8")))


def fsync_dir(folder: str | os.PathLike) -> None:
    """Make a rename in `folder` durable (POSIX; a no-op where folders cannot be opened)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def process_alive(pid: int) -> bool:
    """Whether the process that wrote a temporary file may still be writing it."""
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # exists, another user's
        return True
    return True


def remove_stale_temps(folder: str | os.PathLike) -> list[Path]:
    """Remove the temporary files that killed writers (their process is gone) left in `folder`; returns them.
    Such files never carry a final name, so nothing would read them anyway: this only reclaims the space."""
    removed = []
    folder = Path(folder)
    if not folder.is_dir():
        return removed
    for p in folder.glob(".*.tmp"):
        m = TEMP_NAME.match(p.name)
        if m is None or process_alive(int(m["pid"])):
            continue
        try:
            p.unlink()
            removed.append(p)
        except OSError:
            pass
    return removed
