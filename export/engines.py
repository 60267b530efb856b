"""Add TensorRT engines to an existing bundle, torch-free (`co2s-export --from-bundle B --engine fp16`).

Without an NVIDIA GPU nothing is built: the bundle is left complete (all ONNX) and the result says the engines
are deferred to the target, with the command that builds them there (`ExportResult.engines_deferred`; the CLI
exits with status 3). With one, each engine is built from the bundle's ONNX of that precision.

The bundle is changed in place, so every file goes in under a temporary name first: the engine and the updated
timing cache are written as `.<name>.<pid>.<tag>.tmp` (co2s.files.temp_name) in the bundle folder, then renamed
over their final names and the manifest is rewritten (atomically) with the engine's checksum and the
builder/device record, as one co2s.files.commit_files step. A file that is replaced keeps a hard link
`.<name>.<pid>.<tag>.old` until the manifest is written, so if that write fails the previous file is put back.
Any failure (disk full, no permission, a failed build, Ctrl-C) therefore leaves the bundle's files and manifest as
they were (engines of precisions finished before it stay, each with its manifest record) and no temporary file;
write errors are one-line Co2SOutputErrors naming the file. A run killed halfway leaves its temporary files
behind: the next run removes them, and puts a replaced file back if the manifest still describes the old one.
"""

from __future__ import annotations

import copy
import os
import shutil
from pathlib import Path

from co2s.bundle import MANIFEST_NAME, artefact_record, formats, load_bundle, read_manifest, sha256_file, write_manifest
from co2s.errors import Co2SInputError, Co2SOutputError, output_error
from co2s.files import commit_files, leftovers, remove_path, remove_quietly, temp_name

from .options import EnginesDeferred, ExportResult
from .tensorrt_build import build_engine, has_nvidia_gpu


def add_engines(bundle: str | Path, precisions, *, workspace_gib: float = 4.0, log=print) -> ExportResult:
    bundle = Path(bundle)
    precisions = formats.parse_precisions(precisions, "--engine", formats.ENGINE_PRECISIONS)
    for msg in clean_leftovers(bundle):  # first: it may put back a file the manifest still describes
        log(msg)
    manifest = load_bundle(bundle, verify=True)  # validates the schema and every checksum first
    missing = [p for p in precisions if not manifest.has(formats.ONNX, p)]
    if missing:
        raise Co2SInputError(
            f"--engine {missing[0]}: the bundle {bundle} has no {missing[0]} ONNX to build from "
            f"(it has {', '.join(k for k in manifest.data['artifacts'] if k.startswith('onnx_'))}); re-export with "
            f"--precision including {missing[0]}"
        )
    if not has_nvidia_gpu():
        return ExportResult(bundle, manifest.data, engines_deferred=EnginesDeferred(bundle, precisions))

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
    return ExportResult(bundle, data)


def _add_engine(bundle: Path, data: dict, precision: str, workspace_gib: float, log) -> dict:
    """Build one engine into temporary files, then swap them in with the manifest; returns the new manifest."""
    onnx_fmt, eng_fmt = formats.get_format("onnx", precision), formats.get_format("engine", precision)
    cache_fmt = formats.get_format(formats.TIMING_CACHE)
    engine, cache, manifest = bundle / eng_fmt.filename, bundle / cache_fmt.filename, bundle / MANIFEST_NAME
    tmp_engine, tmp_cache = temp_name(engine), temp_name(cache)
    what = {
        engine: "cannot write the TensorRT engine",
        cache: "cannot write the TensorRT timing cache",
        manifest: "cannot update the manifest",
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
        arts[eng_fmt.key] = artefact_record(bundle, eng_fmt, source=tmp_engine.name, tensorrt=record)
        moves = [(tmp_engine, engine)]
        if tmp_cache.is_file():
            arts[cache_fmt.key] = artefact_record(bundle, cache_fmt, source=tmp_cache.name)
            moves.append((tmp_cache, cache))
        new["producer"]["tensorrt"] = record["version"]
        # the files replaced are put back if the manifest cannot be written: the old manifest describes them
        target = manifest
        commit_files(moves, then=lambda: write_manifest(bundle, new, what=what[manifest]))
    except OSError as e:
        if building and tmp_engine.exists():
            target = cache  # the engine was complete: the builder failed writing the timing cache after it
        elif e.filename is not None and Path(e.filename) in what:
            target = Path(e.filename)  # a rename into place
        raise output_error(target, e, what[target]) from None
    finally:
        remove_quietly([tmp_engine, tmp_cache])
    log(
        f"  {engine.name}: TensorRT {record['version']} on {record['device'].get('name')} "
        f"in {record['build_seconds']} s"
    )
    return new


def clean_leftovers(bundle: Path) -> list[str]:
    """Temporary files of an add_engines run that was killed (its process is gone): removed, except that a moved-
    aside previous file is put back when the manifest still describes it and the file under its name does not
    match (killed between the rename and the manifest update). Returns one message each."""
    messages: list[str] = []
    records = None
    for p, m in leftovers(bundle):
        if m["kind"] == "old" and p.is_file():
            if records is None:
                try:
                    records = {a.get("path"): a.get("sha256") for a in read_manifest(bundle)["artifacts"].values()}
                except Exception:  # noqa: BLE001 - an unreadable manifest is reported by load_bundle next
                    records = {}
            final = bundle / m["name"]
            try:
                if records.get(final.name) not in (None, _sha(final)) and records[final.name] == sha256_file(p):
                    os.replace(p, final)
                    messages.append(f"restored {final} (an engine build was interrupted while replacing it)")
                    continue
            except OSError:
                pass
        if remove_path(p):
            messages.append(f"removed {p} (left by an interrupted engine build)")
    return messages


def _sha(path: Path) -> str | None:
    try:
        return sha256_file(path)
    except OSError:
        return None
