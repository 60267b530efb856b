"""Threading model: one loaded backend (one session) serves several threads at once.

Each test runs the same work twice through ONE shared backend -- first serially, then from several threads that
start together (a barrier) with a tiny GIL switch interval, so their calls interleave as much as possible -- and
requires every thread's outputs to equal its serial outputs exactly (labels) or to float tolerance. The work
mixes what could collide if any per-call state lived on a shared object: batches of different sizes, calls that
ask for different outputs (with and without `probs`), tiled large images with and without blending, whole
pipeline runs (with their own and with a shared profiler), and one pipeline object run from several threads.
The native TensorRT backend is driven through stand-in tensorrt/pycuda modules whose "GPU" is numpy memory, so
two batches sharing a slot's buffers would corrupt each other's results here just as on a real GPU.
"""

from __future__ import annotations

import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from fakes.runtime import bundle_with_engine, make_bundle, pixel_rule, reference_outputs
from PIL import Image

from co2s.bundle import load_bundle
from co2s.runtime.backends import open_backend
from co2s.runtime.pipeline import InferencePipeline, InferOptions, collect_inputs, predict_array
from co2s.runtime.profiler import StageProfiler

TILE = 32
N_CLASSES = 4
THREADS = 6


@pytest.fixture(autouse=True)
def _tiny_switch_interval():
    """Switch threads every microsecond: interleavings that are rare at the default 5 ms become routine."""
    old = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    yield
    sys.setswitchinterval(old)


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    return load_bundle(
        make_bundle(
            tmp_path_factory.mktemp("threads") / "b", tile=TILE, num_classes=N_CLASSES, batch=(1, 2, 4), probs=True
        )
    )


def _rgb(h, w, seed):
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def run_concurrently(fns: list) -> list:
    """Call every fn on its own thread, all released at once; re-raise the first failure."""
    barrier = threading.Barrier(len(fns))
    results, errors = [None] * len(fns), []

    def body(i, fn):
        try:
            barrier.wait(timeout=30)
            results[i] = fn()
        except BaseException as e:  # noqa: BLE001 - reported below with the thread index
            errors.append((i, e))

    threads = [threading.Thread(target=body, args=(i, fn), name=f"test-{i}", daemon=True) for i, fn in enumerate(fns)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 60
    for t in threads:
        t.join(max(0.0, deadline - time.monotonic()))
    assert not any(t.is_alive() for t in threads), "threads hung (deadlock, or a run waiting on another's queue)"
    if errors:
        i, e = errors[0]
        raise AssertionError(f"thread {i} failed: {type(e).__name__}: {e}") from e
    return results


def assert_same(got: dict, want: dict, where: str) -> None:
    assert set(got) == set(want), f"{where}: outputs {sorted(got)} != {sorted(want)}"
    for k in want:
        if k == "labels":
            assert np.array_equal(got[k], want[k]), f"{where}: labels differ"
        else:
            np.testing.assert_allclose(
                np.asarray(got[k], np.float32),
                np.asarray(want[k], np.float32),
                atol=1e-6,
                err_msg=f"{where}: {k} differs",
            )


# --- the backend itself ----------------------------------------------------------------------------------------------


def _backend_work(be, seed: int, reps: int = 6):
    """Batches of 1..4 tiles, alternately asking for probs and not; returns every call's outputs."""
    rng = np.random.default_rng(seed)
    out = []
    for r in range(reps):
        b = int(rng.integers(1, 5))
        x = rng.integers(0, 256, (b, TILE, TILE, 3), dtype=np.uint8)
        want = ("labels", "confidence", "probs") if (seed + r) % 2 else ("labels", "confidence")
        res = be.run(x, outputs=want)
        assert set(res) == set(want), f"asked for {want}, got {sorted(res)}"  # nobody else's choice leaked in
        assert all(v.shape[0] == b for v in res.values())
        out.append(res)
    return out


def test_ort_backend_run_from_many_threads(bundle):
    be = open_backend(bundle, "ort-cpu", "fp32", threads=1)
    serial = [_backend_work(be, s) for s in range(THREADS)]
    for _ in range(3):
        got = run_concurrently([lambda s=s: _backend_work(be, s) for s in range(THREADS)])
        for s in range(THREADS):
            for k, (g, w) in enumerate(zip(got[s], serial[s])):
                assert_same(g, w, f"thread {s} call {k}")


# --- whole runs: predict_array, pipelines, profilers -----------------------------------------------------------------


def _write_inputs(folder: Path, seed: int) -> list[Path]:
    """A tiled scene plus small odd-sized images for one thread (file names unique across threads)."""
    folder.mkdir(parents=True, exist_ok=True)
    sizes = [(97, 131), (TILE, TILE), (20, 45)]
    paths = []
    for k, (h, w) in enumerate(sizes):
        p = folder / f"t{seed}_{k}.png"
        Image.fromarray(_rgb(h, w, 100 * seed + k)).save(p)
        paths.append(p)
    return paths


def _read_outputs(out_dir: Path, inputs: list[Path]) -> dict:
    res = {}
    for p in inputs:
        res[p.stem + ".labels"] = np.asarray(Image.open(out_dir / f"{p.stem}.labels.png"))
        res[p.stem + ".confidence"] = np.asarray(Image.open(out_dir / f"{p.stem}.confidence.png"))
    return res


def test_pipelines_and_predict_array_share_one_backend(bundle, tmp_path):
    """Per thread: predict_array on a tiled image (blend on for even threads, off for odd ones -- the outputs
    fetched differ), then a full pipeline run over its own files with its own profiler."""
    be = open_backend(bundle, "ort-cpu", "fp32", threads=1)
    arrays = [_rgb(90 + 7 * s, 150 - 5 * s, s) for s in range(THREADS)]
    inputs = [_write_inputs(tmp_path / "in", s) for s in range(THREADS)]

    def work(s: int, tag: str):
        blend = s % 2 == 0
        pa = predict_array(be, arrays[s], blend=blend, num_classes=N_CLASSES, batch=1 + s % 4)
        out = tmp_path / f"out_{tag}_{s}"
        prof = StageProfiler()
        pipe = InferencePipeline(
            bundle, be, out, InferOptions(blend=blend, overlay=False, readers=2, batch=1 + s % 4), profiler=prof
        )
        summary = pipe.run(collect_inputs(inputs[s])[0])
        assert [r.status for r in summary.results] == ["ok"] * len(inputs[s]), summary.results
        return pa, _read_outputs(out, inputs[s]), prof.report()["tiles"]

    serial = [work(s, "serial") for s in range(THREADS)]
    expected_tiles = [t for _, _, t in serial]
    assert all(t > len(inputs[0]) for t in expected_tiles)  # the scene was really tiled
    got = run_concurrently([lambda s=s: work(s, "threads") for s in range(THREADS)])
    for s in range(THREADS):
        assert_same(got[s][0], serial[s][0], f"thread {s} predict_array")
        for k, v in serial[s][1].items():
            assert np.array_equal(got[s][1][k], v), f"thread {s}: {k} differs from the serial run"
        assert got[s][2] == expected_tiles[s], f"thread {s}: its profiler counted another run's tiles"
    # and the in-memory result is the model's (no stitching mix-up across threads): pixel-wise model, no blend
    ref = reference_outputs(arrays[1][None], N_CLASSES)["labels"][0]
    assert np.mean(got[1][0]["labels"] == ref) > 0.99


def test_one_pipeline_object_run_from_several_threads(bundle, tmp_path):
    """The same InferencePipeline (so the same backend, options and shared profiler) run concurrently on
    different inputs: each run keeps its own queues and results; the shared profiler sums the tiles."""
    be = open_backend(bundle, "ort-cpu", "fp32", threads=1)
    inputs = [_write_inputs(tmp_path / "in", s) for s in range(4)]
    prof = StageProfiler()
    pipe = InferencePipeline(bundle, be, tmp_path / "out", InferOptions(overlay=False), profiler=prof)
    serial_dir = tmp_path / "serial"
    serial_pipe = InferencePipeline(bundle, be, serial_dir, InferOptions(overlay=False))
    for s in range(4):
        serial_pipe.run(collect_inputs(inputs[s])[0])
    summaries = run_concurrently([lambda s=s: pipe.run(collect_inputs(inputs[s])[0]) for s in range(4)])
    for s, summary in enumerate(summaries):
        assert [r.input for r in summary.results] == inputs[s]  # its own inputs, none of the others'
        assert all(r.status == "ok" for r in summary.results)
        want, got = _read_outputs(serial_dir, inputs[s]), _read_outputs(tmp_path / "out", inputs[s])
        for k in want:
            assert np.array_equal(got[k], want[k]), f"run {s}: {k}"
    assert prof.tiles == sum(r.tiles for sm in summaries for r in sm.results)


# --- native TensorRT (stand-in modules): slots shared between threads -----------------------------------------------


@pytest.mark.parametrize("cuda_graph", [False, True])
def test_tensorrt_backend_shared_between_threads(tmp_path, monkeypatch, cuda_graph):
    from fakes.tensorrt import install

    install(monkeypatch, tile=TILE, num_classes=N_CLASSES)
    b = load_bundle(bundle_with_engine(tmp_path / "b", version="10.3.0", cc="8.7"))
    be = open_backend(b, "tensorrt", "fp16", cuda_graph=cuda_graph)
    assert be.in_flight == 2  # two slots for six threads: slots are contended

    def work(s: int):
        rng = np.random.default_rng(s)
        out = []
        for r in range(8):
            x = rng.integers(0, 256, (int(rng.integers(1, 5)), TILE, TILE, 3), dtype=np.uint8)
            if r % 2:  # queue two batches before collecting (double buffering), as the pipeline does
                y = rng.integers(0, 256, (2, TILE, TILE, 3), dtype=np.uint8)
                p1, p2 = be.submit(x, outputs=("labels", "confidence")), be.submit(y, outputs=("labels",))
                out += [(x, p1.result()), (y, p2.result())]
            else:
                out.append((x, be.run(x, StageProfiler())))
        rgb = _rgb(70, 50, s)
        out.append((rgb[None], {"labels": predict_array(be, rgb)["labels"][None]}))
        return out

    for res in run_concurrently([lambda s=s: work(s) for s in range(THREADS)]):
        for x, got in res:
            want = pixel_rule(x, N_CLASSES)
            assert np.array_equal(got["labels"], want["labels"]), "a batch got another batch's labels"
            if "confidence" in got:
                np.testing.assert_allclose(got["confidence"].astype(np.float32), want["confidence"], atol=1e-3)
    be.close()
    with pytest.raises(RuntimeError, match="closed"):
        be.run(np.zeros((1, TILE, TILE, 3), np.uint8))
