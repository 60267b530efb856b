"""The checkpoint file: the one hand-off from training to export.

A dict saved with torch.save, written atomically (temporary name, then rename) so a kill mid-write never leaves a
corrupt file under the final name:

    format        "co2s-checkpoint"
    version       1
    model_config  {"num_classes", "preset", "students", "img_size"}  -> co2s.train.model.co2s_from_state
    dataset       {"name", "classes", "palette"}
    model         Co2S state dict (CLIP prototypes travel inside it)
    ...           anything else the trainer needs to resume (optimizer, iteration, rng, metrics)
"""

from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path
from typing import Callable

import torch

from co2s.errors import Co2SInputError, output_error

FORMAT, VERSION = "co2s-checkpoint", 1
_REQUIRED = ("model_config", "dataset", "model")
# `.<name>.<pid>.<random>.tmp`: the temporary file of an atomic write, with the writer's process id
_TEMP = re.compile(r"^\.(?P<name>.+)\.(?P<pid>\d+)\.[^.]+\.tmp$")


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
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp creates 0600; these are ordinary files
        os.replace(tmp, path)
        tmp = None
        _fsync_dir(path.parent)
    except OSError as e:
        raise output_error(path, e, what) from None
    finally:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write(path, lambda f: f.write(text.encode("utf-8")))


def _fsync_dir(folder: Path) -> None:
    """Make the rename itself durable (POSIX; a no-op where folders cannot be opened)."""
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


def remove_stale_temps(folder: str | os.PathLike) -> list[Path]:
    """Remove the temporary files that killed writers (their process is gone) left in `folder`; returns them.
    Such files never carry a final name, so nothing would read them anyway: this only reclaims the space."""
    removed = []
    folder = Path(folder)
    if not folder.is_dir():
        return removed
    for p in folder.glob(".*.tmp"):
        m = _TEMP.match(p.name)
        if m is None or _alive(int(m["pid"])):
            continue
        try:
            p.unlink()
            removed.append(p)
        except OSError:
            pass
    return removed


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # exists, another user's
        return True
    return True


def save_checkpoint(path: str | os.PathLike, payload: dict) -> None:
    atomic_write(path, lambda f: torch.save({"format": FORMAT, "version": VERSION, **payload}, f),
                 what="cannot write the checkpoint")


def load_checkpoint(path: str | os.PathLike, *, num_classes: int | None = None, dataset: str | None = None) -> dict:
    """Read and check a checkpoint; optionally that it was trained for this dataset / class count."""
    path = Path(path)
    if not path.is_file():
        raise Co2SInputError(f"{path}: checkpoint file not found")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as e:  # truncated or not a torch file
        raise Co2SInputError(f"{path}: not a readable checkpoint ({type(e).__name__}: {e})") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise Co2SInputError(f"{path}: not a co2s checkpoint (field 'format' should be {FORMAT!r})")
    if ckpt.get("version") != VERSION:
        raise Co2SInputError(f"{path}: checkpoint version {ckpt.get('version')!r}, this co2s reads {VERSION}")
    for key in _REQUIRED:
        if key not in ckpt:
            raise Co2SInputError(f"{path}: checkpoint has no {key!r} field")
    have = ckpt["model_config"]["num_classes"]
    if num_classes is not None and have != num_classes:
        raise Co2SInputError(f"{path}: field model_config.num_classes is {have}, expected {num_classes}")
    if dataset is not None and ckpt["dataset"]["name"] != dataset:
        raise Co2SInputError(f"{path}: field dataset.name is {ckpt['dataset']['name']!r}, expected {dataset!r}")
    return ckpt
