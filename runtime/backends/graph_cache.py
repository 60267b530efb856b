"""A saved optimised graph per ONNX artefact, so that the second start of a CPU session skips onnxruntime's graph
optimisation (constant folding, fusions, layout changes: most of the session creation of a large ViT graph).

The first session of an artefact is created as always (ORT_ENABLE_ALL) with `optimized_model_filepath` pointing into
a temporary folder of the user's cache; onnxruntime writes the optimised graph there, we add `graph.json` (its
sha256 and the key below) and commit the folder under its final name (co2s.files). Later sessions load that graph
with ORT_DISABLE_ALL: the work is already in it, and re-running the passes would only pay for their matching again.

Why the key is what it is: onnxruntime documents that an offline-optimised model must be run with the same options,
execution provider and hardware it was optimised for, and at ORT_ENABLE_ALL it warns that the graph "may contain
hardware specific optimizations" (the NCHWc layout transformer picks block sizes from the CPU's vector width; fused
contrib ops belong to that onnxruntime build). So the key is the artefact's sha256, the onnxruntime version, the CPU
model and its feature flags, the optimisation level and the provider, and a reused graph is checked against its
recorded sha256 first; a mismatch, a corrupt sidecar or a graph onnxruntime refuses is one warning and a rebuild.

Only the CPU provider is cached (ORT's TensorRT EP keeps its own engine cache; a CUDA-optimised graph would be tied
to a GPU as well), and never a model with external data (>2 GB): onnxruntime cannot write a protobuf above 2 GB
without external initializers, and its writer has left tensors pointing at the original external file
(microsoft/onnxruntime#17311), which a graph moved into the cache could not find.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import time
from pathlib import Path

from co2s.bundle import Artefact
from co2s.bundle.checksum import sha256_file
from co2s.files import atomic_write_text, commit_files, remove_quietly, remove_stale_temps, temp_name

from ..profiler import cpu_flags, cpu_model
from .cache import cache_dir, key_digest, read_record

log = logging.getLogger("co2s.runtime")

SCHEMA = "co2s.optimised-graph/1"
GRAPH, SIDECAR = "model.onnx", "graph.json"
PROVIDER = "CPUExecutionProvider"
LEVEL = "ORT_ENABLE_ALL"


def graph_key(art: Artefact, ort_version: str) -> dict:
    return {
        "artefact_sha256": art.sha256,
        "onnxruntime": ort_version,
        "cpu": cpu_model(),
        "cpu_flags_sha256": hashlib.sha256(" ".join(sorted(cpu_flags())).encode()).hexdigest()[:16],
        "level": LEVEL,
        "provider": PROVIDER,
    }


def graph_folder(key: dict) -> Path:
    return cache_dir() / "ort-graphs" / key_digest(key)


def cpu_session(ort, path: Path, art: Artefact, options, *, external_data: bool):
    """An InferenceSession on `path` for the CPU provider, through the optimised-graph cache where it applies.
    `options()` returns fresh SessionOptions (threads, logging). Returns (session, note), the note saying what
    the cache did (for profiles and -v)."""
    if external_data or not art.sha256:
        why = "external data (>2 GB)" if external_data else "no sha256 in the manifest"
        return _session(ort, path, options(), LEVEL), f"optimised graph not cached: {why}"
    key = graph_key(art, ort.__version__)
    folder = graph_folder(key)
    graph = _verified_graph(folder, key)
    if graph is not None:
        try:
            return _session(ort, graph, options(), "ORT_DISABLE_ALL"), f"optimised graph reused from {folder}"
        except Exception as e:  # noqa: BLE001 - ORT raises its own pybind exception types
            log.warning("optimised graph %s: onnxruntime refuses it (%s); rebuilding it", graph, first_line(e))
    return _build(ort, path, folder, key, options)


def _verified_graph(folder: Path, key: dict) -> Path | None:
    meta, problem = read_record(folder / SIDECAR, SCHEMA, key)
    if meta is not None:
        graph = folder / GRAPH
        try:
            digest = sha256_file(graph)
        except OSError as e:
            digest, problem = None, f"cannot read {GRAPH} ({e.strerror or e})"
        if digest is not None and digest != meta.get("sha256"):
            problem = f"{GRAPH} has sha256 {digest[:12]}…, {SIDECAR} says {str(meta.get('sha256'))[:12]}…"
        if problem is None:
            return graph
    if problem:
        log.warning("optimised graph cache %s: %s; rebuilding it", folder, problem)
    return None


def _build(ort, path: Path, folder: Path, key: dict, options):
    """Optimise `path` as usual, saving the result into a temporary folder that is committed under `folder`."""
    tmp = temp_name(folder)
    try:
        folder.parent.mkdir(parents=True, exist_ok=True)
        remove_stale_temps(folder.parent)  # the temporary folders of killed runs
        tmp.mkdir()
    except OSError as e:
        log.warning("optimised graph not saved: cannot write to %s (%s)", folder.parent, e.strerror or e)
        return _session(ort, path, options(), LEVEL), "optimised graph not cached: cache not writable"
    so = options()
    so.optimized_model_filepath = str(tmp / GRAPH)
    t = time.perf_counter()
    try:
        session = _session(ort, path, so, LEVEL)
    except Exception as e:  # noqa: BLE001 - e.g. the optimised graph does not fit a protobuf: run without saving
        remove_quietly([tmp])
        session = _session(ort, path, options(), LEVEL)  # raises when the model itself is what onnxruntime refuses
        log.warning("optimised graph not saved (%s); the session runs without it", first_line(e))
        return session, "optimised graph not cached: onnxruntime could not save it"
    seconds = time.perf_counter() - t
    try:
        meta = {"schema": SCHEMA, "key": key, "sha256": sha256_file(tmp / GRAPH), "optimised_in_s": round(seconds, 3)}
        atomic_write_text(tmp / SIDECAR, json.dumps(meta, indent=2) + "\n")
        commit_files([(tmp, folder)])
    except Exception as e:  # noqa: BLE001 - a cache that cannot be written costs time on the next start, nothing else
        remove_quietly([tmp])
        log.warning("optimised graph not saved in %s (%s)", folder, first_line(e))
        return session, "optimised graph not cached: cache not writable"
    return session, f"optimised graph saved to {folder}"


def _session(ort, path: Path, so, level: str):
    so.graph_optimization_level = getattr(ort.GraphOptimizationLevel, level)
    return ort.InferenceSession(str(path), so, providers=[PROVIDER])


def first_line(e: BaseException | str) -> str:
    """An onnxruntime error's message, first line only, without its source location (`/onnxruntime_src/...cc:1193
    fn() [ONNXRuntimeError] : 1 : FAIL : `)."""
    text = str(e).strip()
    if not text:
        return type(e).__name__
    line = text.splitlines()[0]
    m = re.search(r"\[ONNXRuntimeError\] : \d+ : \w+ : (.*)", line) or re.match(r"^\S+\.cc:\d+ \S+ (.*)", line)
    return m.group(1).strip() if m else line
