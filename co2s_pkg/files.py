"""Writing files so that a kill, a full disk or a missing permission never leaves half a file under a final name.

Torch-free and numpy-free: train (checkpoints, metrics), export (bundles, engines, Triton models) and runtime
(outputs) all write through here. Whatever is not committed yet is a hidden sibling of its final name that carries
the writer's process id (`temp_name`):

    .<name>.<pid>.<tag>.tmp    being written (a file, or a folder of files)
    .<name>.<pid>.<tag>.old    the previous content of <name>, kept until what replaces it is committed

so a later run can tell a dead writer's leftovers from a live one's (`leftovers`, `remove_stale_temps`).
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import shutil
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import BinaryIO

from .errors import output_error

TEMP_NAME = re.compile(r"^\.(?P<name>.+)\.(?P<pid>\d+)\.(?P<tag>[0-9a-f]{8})\.(?P<kind>tmp|old)$")


def temp_name(final: str | os.PathLike, kind: str = "tmp") -> Path:
    """A new hidden sibling of `final` (same folder, so renaming it onto `final` is atomic); kind "tmp" or "old"."""
    final = Path(final)
    return final.with_name(f".{final.name}.{os.getpid()}.{secrets.token_hex(4)}.{kind}")


# ------------------------------------------------------------------------------------------- one file at a time
@contextlib.contextmanager
def atomic_file(path: str | os.PathLike) -> Iterator[BinaryIO]:
    """`with atomic_file(path) as f:` write to f; on a clean exit f is fsynced and renamed over `path`, and the
    folder fsynced. A kill at any point leaves either the old file or the new one under `path`, never part of one;
    any failure removes the temporary file and propagates unchanged (an OSError for I/O), for callers that report
    it under another name. Everyone else uses atomic_write."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_name(path)
    f = open(tmp, "wb")  # the name is this process's own; mode 0666 & ~umask, like any new file
    try:
        with f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        remove_quietly([tmp])
        raise
    fsync_dir(path.parent)


def atomic_write(path: str | os.PathLike, write: Callable[[BinaryIO], object], *, what: str = "cannot write") -> None:
    """write(binary file) lands under `path` atomically (see atomic_file); a failure (disk full, no permission)
    raises Co2SOutputError `<path>: <what>: <reason>`."""
    try:
        with atomic_file(path) as f:
            write(f)
    except OSError as e:
        raise output_error(path, e, what) from None


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write(path, lambda f: f.write(text.encode("utf-8")))


# ------------------------------------------------------------------------------------- several files as one step
def commit_files(pairs: Sequence[tuple[Path, Path]], *, then: Callable[[], object] | None = None) -> None:
    """Move finished temporary files (or folders) onto their final names as one step: each is fsynced and renamed
    in the order given, then `then()` runs (e.g. writing the manifest that describes them). A final name that is
    replaced keeps its previous content aside (`.old`) until the end, so if any step fails every final name
    renamed so far is put back as it was, the temporary files still waiting are removed, and the error propagates:
    a failed fsync or rename as an OSError whose `filename` is the final name it was for (callers word it with
    co2s.errors.output_error), a failure in `then` unchanged."""
    asides: list[tuple[Path, Path | None]] = []  # (final, its previous content, if it had one)
    final = None
    try:
        for tmp, final in pairs:
            if Path(tmp).is_dir():
                fsync_tree(tmp)
            else:
                fsync_file(tmp)
            asides.append((final, _keep_aside(final)))
            os.replace(tmp, final)
        final = None
        if then is not None:
            then()
    except BaseException as e:
        for done, aside in reversed(asides):
            with contextlib.suppress(OSError):
                if aside is not None:
                    os.replace(aside, done)
                else:
                    remove_path(done)
        remove_quietly(tmp for tmp, _ in pairs)  # those not renamed yet
        if isinstance(e, OSError) and final is not None:
            raise OSError(e.errno, e.strerror, os.fspath(final)) from None
        raise
    for folder in {Path(f).parent for _, f in pairs}:
        fsync_dir(folder)
    for _, aside in asides:
        if aside is not None:
            remove_path(aside)  # if this fails the next run removes it


def _keep_aside(final: Path) -> Path | None:
    """A second name for `final`'s current content (None if there is none), so it can be put back."""
    if not final.exists():
        return None
    aside = temp_name(final, "old")
    if not final.is_dir():
        try:
            os.link(final, aside)  # `final` itself never goes missing
            return aside
        except OSError:  # no hard links on this file system: move it aside instead
            pass
    os.replace(final, aside)
    return aside


# ------------------------------------------------------------------------------------------------- durability
def fsync_file(path: str | os.PathLike) -> None:
    """Make a file's content durable before it is renamed into place (one written by a library that does not)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_tree(root: str | os.PathLike) -> None:
    for folder, _dirs, files in os.walk(root):
        for name in files:
            fsync_file(os.path.join(folder, name))
        fsync_dir(folder)


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


# ------------------------------------------------------------------------------------------------- leftovers
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


def leftovers(folder: str | os.PathLike, name: str | None = None) -> list[tuple[Path, re.Match]]:
    """The temporary and kept-aside entries in `folder` whose writer is gone (only those of final name `name`,
    if given), sorted, each with its TEMP_NAME match."""
    try:
        entries = sorted(Path(folder).iterdir())
    except OSError:
        return []
    found = []
    for p in entries:
        m = TEMP_NAME.match(p.name)
        if m is not None and (name is None or m["name"] == name) and not process_alive(int(m["pid"])):
            found.append((p, m))
    return found


def remove_stale_temps(folder: str | os.PathLike, name: str | None = None) -> list[Path]:
    """Remove the leftovers of killed writers in `folder` (see `leftovers`); returns what was removed. They never
    carry a final name, so nothing would read them anyway: this only reclaims the space. Where a `.old` can be put
    back (export), the caller does that first."""
    return [p for p, _ in leftovers(folder, name) if remove_path(p)]


def remove_path(path: str | os.PathLike) -> bool:
    """Remove a file or a folder tree; whether it is gone."""
    path = Path(path)
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(OSError):
            path.unlink()
    return not os.path.lexists(path)


def remove_quietly(paths: Iterable[str | os.PathLike]) -> None:
    """Drop one's own temporary files on the way out of a failure (missing ones are fine)."""
    for p in paths:
        remove_path(p)
