"""Writing a bundle atomically: everything goes into a hidden temporary folder beside the target
(`.<name>.<pid>.<random>.partial`), which is fsynced and renamed into place only when the export (and its parity
checks) succeeded. A failure, Ctrl-C or a kill leaves the previous bundle (if any) untouched and no partial one
under the final name; the temporary folder of a killed export is removed (and reported) by the next export to the
same place. Write failures (disk full, no permission, read-only file system) become one-line Co2SOutputErrors that
name the destination.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

from co2s.errors import WRITE_ERRNOS, Co2SInputError, Co2SOutputError, ensure_writable_dir, output_error
from co2s.files import fsync_dir, process_alive, umask


def check_output_dir(out: Path, force: bool) -> None:
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise Co2SInputError(f"--out {out}: exists and is not a folder")
    if out.is_dir() and any(out.iterdir()) and not force:
        raise Co2SInputError(f"--out {out}: folder exists and is not empty (use --force to replace it)")


def check_output_writable(out: Path) -> None:
    """The folder the bundle is created in (its parent) can be written: checked before any export work."""
    out = Path(out)
    ensure_writable_dir(out.parent, f"--out {out}: cannot create the bundle in {out.parent}")


class AtomicBundle:
    """with AtomicBundle(out, force) as tmp: write into tmp; on clean exit tmp becomes out."""

    def __init__(self, out: Path, force: bool = False, log: Callable[[str], None] | None = None):
        self.out = Path(out)
        self.force = force
        self.log = log or (lambda _msg: None)
        self.tmp: Path | None = None

    def __enter__(self) -> Path:
        for msg in clean_leftovers(self.out):  # first: it may put a previous bundle back in place
            self.log(msg)
        check_output_dir(self.out, self.force)
        try:
            self.out.parent.mkdir(parents=True, exist_ok=True)
            self.tmp = Path(
                tempfile.mkdtemp(prefix=f".{self.out.name}.{os.getpid()}.", suffix=".partial", dir=self.out.parent)
            )
            os.chmod(self.tmp, 0o777 & ~umask())  # mkdtemp makes it private; a bundle is meant to be shared
        except OSError as e:
            raise self._error(e) from None
        return self.tmp

    def __exit__(self, exc_type, exc, tb) -> bool:
        assert self.tmp is not None
        if exc_type is not None:
            shutil.rmtree(self.tmp, ignore_errors=True)
            if isinstance(exc, OSError) and exc.errno in WRITE_ERRNOS:
                raise self._error(exc) from None
            return False
        try:
            self.commit()
        except OSError as e:
            shutil.rmtree(self.tmp, ignore_errors=True)
            raise self._error(e) from None
        return False

    def _error(self, e: OSError) -> Co2SOutputError:
        message = output_error(f"--out {self.out}", e, "cannot write the bundle")
        return Co2SOutputError(f"{message}; nothing was written", e.errno)

    def commit(self) -> None:
        assert self.tmp is not None
        _fsync_tree(self.tmp)  # the files are on disk before the rename makes them the bundle
        old = None
        if self.out.exists():
            check_output_dir(self.out, self.force)  # re-check: it may have appeared while we exported
            old = self.out.with_name(f".{self.out.name}.old-{os.getpid()}")
            os.replace(self.out, old)
        os.replace(self.tmp, self.out)
        fsync_dir(self.out.parent)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)


_PARTIAL = re.compile(r"^(?P<pid>\d+)\.[^.]+\.partial$")
_OLD = re.compile(r"^old-(?P<pid>\d+)$")


def clean_leftovers(out: Path) -> list[str]:
    """Deal with what an export to `out` that was killed left beside it (only when its process is gone):
    `.NAME.PID.*.partial` folders are removed; `.NAME.old-PID` (a previous bundle moved aside by --force, killed
    before the new one was renamed in) is put back when `out` is missing, else removed. Returns one message each."""
    out = Path(out)
    messages = []
    prefix = f".{out.name}."
    try:
        siblings = list(out.parent.iterdir()) if out.parent.is_dir() else []
    except OSError:
        return messages
    for p in sorted(siblings):
        if not p.name.startswith(prefix) or not p.is_dir():
            continue
        rest = p.name[len(prefix) :]
        m = _PARTIAL.match(rest) or _OLD.match(rest)
        if m is None or process_alive(int(m["pid"])):
            continue
        if m.re is _OLD and not out.exists():
            try:
                os.replace(p, out)
            except OSError as e:
                messages.append(f"could not restore {out} from {p} ({e.strerror}): rename it back by hand")
                continue
            messages.append(f"restored {out} from {p.name} (an export with --force was interrupted while replacing it)")
            continue
        shutil.rmtree(p, ignore_errors=True)
        messages.append(
            f"removed {p} (left by an interrupted export)"
            if not p.exists()
            else f"could not remove {p} (left by an interrupted export)"
        )
    return messages


def _fsync_tree(root: Path) -> None:
    for folder, _dirs, files in os.walk(root):
        for name in files:
            fd = os.open(os.path.join(folder, name), os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        fsync_dir(Path(folder))
