"""Writing a bundle atomically: everything goes into a hidden temporary folder beside the target, which is
renamed into place only when the export (and its parity checks) succeeded. A failure or Ctrl-C leaves the
previous bundle (if any) untouched and no partial one.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from co2s.errors import Co2SInputError


def check_output_dir(out: Path, force: bool) -> None:
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise Co2SInputError(f"--out {out}: exists and is not a folder")
    if out.is_dir() and any(out.iterdir()) and not force:
        raise Co2SInputError(f"--out {out}: folder exists and is not empty (use --force to replace it)")


class AtomicBundle:
    """with AtomicBundle(out, force) as tmp: write into tmp; on clean exit tmp becomes out."""

    def __init__(self, out: Path, force: bool = False):
        self.out = Path(out)
        self.force = force
        self.tmp: Path | None = None

    def __enter__(self) -> Path:
        check_output_dir(self.out, self.force)
        self.out.parent.mkdir(parents=True, exist_ok=True)
        self.tmp = Path(tempfile.mkdtemp(prefix=f".{self.out.name}.", suffix=".partial", dir=self.out.parent))
        os.chmod(self.tmp, 0o777 & ~_umask())  # mkdtemp makes it private; a bundle is meant to be shared
        return self.tmp

    def __exit__(self, exc_type, exc, tb) -> bool:
        assert self.tmp is not None
        if exc_type is not None:
            shutil.rmtree(self.tmp, ignore_errors=True)
            return False
        self.commit()
        return False

    def commit(self) -> None:
        assert self.tmp is not None
        old = None
        if self.out.exists():
            check_output_dir(self.out, self.force)  # re-check: it may have appeared while we exported
            old = self.out.with_name(f".{self.out.name}.old-{os.getpid()}")
            os.replace(self.out, old)
        os.replace(self.tmp, self.out)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
