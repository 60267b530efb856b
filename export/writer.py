"""Writing a bundle atomically: everything goes into a hidden temporary folder beside the target
(`.<name>.<pid>.<tag>.tmp`, co2s.files.temp_name), which is fsynced and renamed into place only when the export
(and its parity checks) succeeded. A failure, Ctrl-C or a kill leaves the previous bundle (if any) untouched and no
partial one under the final name; the temporary folder of a killed export is removed (and reported) by the next
export to the same place. Write failures (disk full, no permission, read-only file system) become one-line
Co2SOutputErrors that name the destination.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from co2s.errors import WRITE_ERRNOS, Co2SInputError, Co2SOutputError, ensure_writable_dir, output_error
from co2s.files import commit_files, leftovers, remove_path, temp_name


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
            self.tmp = temp_name(self.out)
            self.tmp.mkdir()
        except OSError as e:
            raise self._error(e) from None
        return self.tmp

    def __exit__(self, exc_type, exc, tb) -> bool:
        assert self.tmp is not None
        if exc_type is not None:
            remove_path(self.tmp)
            if isinstance(exc, OSError) and exc.errno in WRITE_ERRNOS:
                raise self._error(exc) from None
            return False
        try:
            self.commit()
        except OSError as e:
            remove_path(self.tmp)
            raise self._error(e) from None
        return False

    def _error(self, e: OSError) -> Co2SOutputError:
        message = output_error(f"--out {self.out}", e, "cannot write the bundle")
        return Co2SOutputError(f"{message}; nothing was written", e.errno)

    def commit(self) -> None:
        """fsync every file, then rename the folder into place; a previous bundle (--force) is moved aside first
        and removed only once the new one is in place."""
        assert self.tmp is not None
        if self.out.exists():
            check_output_dir(self.out, self.force)  # re-check: it may have appeared while we exported
        commit_files([(self.tmp, self.out)])


def clean_leftovers(out: Path) -> list[str]:
    """Deal with what an export to `out` that was killed left beside it (only when its process is gone): its
    temporary `.tmp` folders are removed; a `.old` one (a previous bundle moved aside by --force, killed before the
    new one was renamed in) is put back when `out` is missing, else removed. Returns one message each."""
    out = Path(out)
    messages = []
    for p, m in leftovers(out.parent, out.name):
        if not p.is_dir():
            continue
        if m["kind"] == "old" and not out.exists():
            try:
                os.replace(p, out)
            except OSError as e:
                messages.append(f"could not restore {out} from {p} ({e.strerror}): rename it back by hand")
                continue
            messages.append(f"restored {out} from {p.name} (an export with --force was interrupted while replacing it)")
            continue
        messages.append(
            f"removed {p} (left by an interrupted export)"
            if remove_path(p)
            else f"could not remove {p} (left by an interrupted export)"
        )
    return messages
