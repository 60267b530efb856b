"""Add TensorRT engines to an existing bundle, torch-free (`co2s-export --from-bundle B --engine fp16`).

Without an NVIDIA GPU nothing is built: the bundle is left complete (all ONNX) and the caller exits with
status 3 (engines deferred) and one sentence saying where and how to build. With one, each engine is built from
the bundle's ONNX of that precision.

The bundle is changed in place, so every file goes in under a temporary name first: the engine and the updated
timing cache are written as `.<name>.<pid>.<tag>.tmp` in the bundle folder, then renamed over their final names
and the manifest is rewritten (atomically) with the engine's checksum and the builder/device record. A file that
is replaced keeps a hard link `.<name>.<pid>.<tag>.old` until the manifest is written, so if that write fails the
previous file is put back. Any failure (disk full, no permission, a failed build, Ctrl-C) therefore leaves the
bundle's files and manifest as they were (engines of precisions finished before it stay, each with its manifest
record) and no temporary file; write errors are one-line Co2SOutputErrors naming the file. A run killed halfway
leaves its temporary files behind: the next run removes them, and puts a replaced file back if the manifest still
describes the old one.
"""

from __future__ import annotations

import copy
import os
import re
import secrets
import shutil
from pathlib import Path

from co2s.errors import Co2SInputError, Co2SOutputError, output_error
from co2s.files import process_alive
from co2s.runtime.manifest import (
    MANIFEST_NAME,
    artifact_record,
    load_manifest,
    read_manifest_json,
    sha256_file,
    write_manifest,
)

from . import formats
from .tensorrt_build import build_engine, has_nvidia_gpu

NO_GPU_EXIT = 2
# `.<name>.<pid>.<tag>.tmp|.old`; the builder writes its own `.<that>.tmp` before renaming onto it
_TEMP = re.compile(r"^\.\.?(?P<name>.+?)\.(?P<pid>\d+)\.(?P<tag>[0-9a-f]{8})\.(?P<kind>tmp|old)(?P<inner>\.tmp)?$")


def no_gpu_message(bundle: Path, precisions: tuple[str, ...]) -> str:
    flags = " ".join(f"--engine {p}" for p in precisions)
    return (
        f"TensorRT engines are built on the target GPU, and this machine has none: copy {bundle} there and run "
        f"`co2s-export --from-bundle {bundle} {flags}`."
    )


def add_engines(bundle: str | Path, precisions, *, workspace_gib: float = 4.0, log=print):
    from .pipeline import ExportResult  # small module-level cycle avoided: pipeline imports us lazily too

    bundle = Path(bundle)
    precisions = formats.parse_precisions(precisions, "--engine")
    for msg in clean_leftovers(bundle):  # first: it may put back a file the manifest still describes
        log(msg)
    manifest = load_manifest(bundle)  # validates the schema and every checksum first
    missing = [p for p in precisions if not manifest.has(formats.get_format("onnx", p).key)]
    if missing:
        raise Co2SInputError(
            f"--engine {missing[0]}: the bundle {bundle} has no {missing[0]} ONNX to build from "
            f"(it has {', '.join(k for k in manifest.data['artifacts'] if k.startswith('onnx_'))}); re-export with "
            f"--precision including {missing[0]}"
        )
    if not has_nvidia_gpu():
        return ExportResult(bundle, manifest.data, NO_GPU_EXIT, no_gpu_message(bundle, precisions))

    data = manifest.data
    done: list[str] = []
    for p in precisions:
        try:
            data = _add_engine(bundle, data, p, workspace_gib, log)
        except Co2SOutputError as e:
            kept = (
                f"the bundle keeps the {', '.join(done)} engine{'s' if len(done) > 1 else ''} added before it"
                if done
                else "the bundle is unchanged"
            )
            raise Co2SOutputError(f"{e}; {kept}", e.errno) from None
        done.append(p)
    return ExportResult(bundle, data, 0, "")


def _add_engine(bundle: Path, data: dict, precision: str, workspace_gib: float, log) -> dict:
    """Build one engine into temporary files, then swap them in with the manifest; returns the new manifest."""
    onnx_fmt, eng_fmt = formats.get_format("onnx", precision), formats.get_format("engine", precision)
    engine, cache = bundle / eng_fmt.filename, bundle / formats.TIMING_CACHE
    tag = f"{os.getpid()}.{secrets.token_hex(4)}"
    tmp_engine, tmp_cache = _temp(engine, tag, "tmp"), _temp(cache, tag, "tmp")
    what = {
        engine: "cannot write the TensorRT engine",
        cache: "cannot write the TensorRT timing cache",
        bundle / MANIFEST_NAME: "cannot update the manifest",
    }
    target, building = cache, False
    try:
        if cache.is_file():
            shutil.copyfile(cache, tmp_cache)  # the builder starts from (and extends) the current cache
        target, building = engine, True
        record = build_engine(
            bundle / onnx_fmt.filename,
            tmp_engine,
            precision=precision,
            batch=data["batch"],
            input_name=data["input"]["name"],
            input_shape=tuple(1 if isinstance(d, str) else d for d in data["input"]["shape"]),
            workspace_gib=workspace_gib,
            timing_cache=tmp_cache,
            log=log,
        )
        building = False
        new = copy.deepcopy(data)
        arts = new["artifacts"]
        arts[eng_fmt.key] = _record(bundle, tmp_engine, engine.name, "engine", precision=precision, tensorrt=record)
        moves = [(tmp_engine, engine)]
        if tmp_cache.is_file():
            arts["timing_cache"] = _record(bundle, tmp_cache, cache.name, "timing-cache")
            moves.append((tmp_cache, cache))
        new["producer"]["tensorrt"] = record["version"]

        asides: list[tuple[Path, Path | None]] = []  # (final, hard link to its previous content, if it had one)
        try:
            for tmp, final in moves:
                target = final
                asides.append((final, _keep_aside(final, tag)))
                os.replace(tmp, final)
            target = bundle / MANIFEST_NAME
            write_manifest(bundle, new)
        except BaseException:
            for final, aside in reversed(asides):  # put the previous files back: the old manifest describes them
                try:
                    if aside is not None:
                        os.replace(aside, final)
                    else:
                        final.unlink(missing_ok=True)
                except OSError:
                    pass
            raise
        for _, aside in asides:
            if aside is not None:
                try:
                    aside.unlink()
                except OSError:  # the new files are in place; the next run removes it
                    pass
    except OSError as e:
        if building and tmp_engine.exists():
            target = cache  # the engine was complete: the builder failed writing the timing cache after it
        raise output_error(target, e, what[target]) from None
    finally:
        _remove_temps(bundle, tag)
    log(
        f"  {engine.name}: TensorRT {record['version']} on {record['device'].get('name')} "
        f"in {record['build_seconds']} s"
    )
    return new


def _temp(final: Path, tag: str, kind: str) -> Path:
    return final.with_name(f".{final.name}.{tag}.{kind}")


def _record(bundle: Path, tmp: Path, name: str, kind: str, **extra) -> dict:
    """The manifest record of `tmp` under its final name (checksummed before the rename)."""
    record = artifact_record(bundle, tmp.name, kind, **extra)
    record["path"] = name
    return record


def _keep_aside(final: Path, tag: str) -> Path | None:
    """A second name for `final`'s current content (None if there is none), so it can be put back."""
    if not final.exists():
        return None
    aside = _temp(final, tag, "old")
    try:
        os.link(final, aside)  # `final` itself never goes missing
    except OSError:  # no hard links on this file system: move it aside instead
        os.replace(final, aside)
    return aside


def _remove_temps(bundle: Path, tag: str) -> None:
    """The temporary files of this attempt, ours and the builder's own `.<ours>.tmp`; not a `.old` one that could
    not be put back (the next run restores it)."""
    try:
        names = [
            p
            for p in bundle.iterdir()
            if f".{tag}." in p.name and (m := _TEMP.match(p.name)) and (m["kind"] == "tmp" or m["inner"])
        ]
    except OSError:
        return
    for p in names:
        try:
            p.unlink()
        except OSError:
            pass


def clean_leftovers(bundle: Path) -> list[str]:
    """Temporary files of an add_engines run that was killed (its process is gone): removed, except that a moved-
    aside previous file is put back when the manifest still describes it and the file under its name does not
    match (killed between the rename and the manifest update). Returns one message each."""
    messages: list[str] = []
    try:
        entries = sorted(bundle.iterdir())
    except OSError:
        return messages
    records = None
    for p in entries:
        m = _TEMP.match(p.name)
        if m is None or process_alive(int(m["pid"])):
            continue
        if m["kind"] == "old" and not m["inner"]:
            if records is None:
                try:
                    records = {
                        a.get("path"): a.get("sha256") for a in read_manifest_json(bundle)[1]["artifacts"].values()
                    }
                except Exception:  # noqa: BLE001 - an unreadable manifest is reported by load_manifest next
                    records = {}
            final = bundle / m["name"]
            try:
                if records.get(final.name) not in (None, _sha(final)) and records[final.name] == sha256_file(p):
                    os.replace(p, final)
                    messages.append(f"restored {final} (an engine build was interrupted while replacing it)")
                    continue
            except OSError:
                pass
        try:
            p.unlink()
            messages.append(f"removed {p} (left by an interrupted engine build)")
        except OSError:
            pass
    return messages


def _sha(path: Path) -> str | None:
    try:
        return sha256_file(path)
    except OSError:
        return None
