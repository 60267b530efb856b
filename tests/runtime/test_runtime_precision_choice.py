"""`--precision auto` on onnxruntime's CPU: the measured fastest precision that passed parity, the measurement cached
per bundle, CPU, onnxruntime and threads; a cache that is corrupt or for another machine is measured again with
one warning. The timer is injected (`measure=`), so the choice is proved to follow the numbers without timing."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest
from fakes.runtime import make_bundle

from co2s.bundle import load_bundle, read_manifest, write_manifest
from co2s.errors import Co2SInputError
from co2s.runtime.backends import auto_candidates, choose, open_backend

ALL = ("fp32", "fp16", "int8", "int8-cpu")


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch):
    """A fresh user cache per test."""
    monkeypatch.setenv("CO2S_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache"


class Timer:
    """Stands in for choose.time_precisions: the given milliseconds per precision; records what it was asked."""

    def __init__(self, ms: dict[str, float]):
        self.ms, self.asked = ms, []

    def __call__(self, bundle, precisions, *, threads, batch):
        self.asked.append(tuple(precisions))
        return {p: [self.ms[p]] * 3 for p in precisions}


def bundle(root, precisions=ALL, failed=(), seed=0):
    root = make_bundle(root, precisions=precisions, seed=seed)
    if failed:  # what an export with --allow-degraded records for a precision below its gate
        data = read_manifest(root)
        for p in failed:
            data["parity"][p] = {"reference": "onnx-fp32", "pixel_agreement": 0.9, "threshold": 0.97, "passed": False}
        write_manifest(root, data)
    return load_bundle(root)


@pytest.mark.parametrize("fastest", ["int8-cpu", "fp16", "fp32"])
def test_auto_on_the_cpu_takes_the_measured_fastest(tmp_path, fastest):
    ms = {p: 100.0 + 10 * i for i, p in enumerate(ALL)}
    ms[fastest] = 50.0
    timer = Timer(ms)
    b = bundle(tmp_path / "b")
    be = open_backend(b, "ort-cpu", measure=timer)
    assert be.precision == fastest
    assert timer.asked == [ALL]
    assert be.precision_reason.startswith(f"precision auto -> {fastest}: fastest passing on ")
    assert f"{fastest} 50 ms" in be.precision_reason and "per batch of 2" in be.precision_reason
    # --backend auto reaches the same CPU choice when no GPU provider is there
    if [n for n, _ in auto_candidates(b, "auto")] == ["ort-cpu"]:
        assert open_backend(b, measure=timer).precision == fastest


def test_failed_parity_is_never_taken_by_auto_but_runs_when_named(tmp_path, caplog):
    timer = Timer({"fp32": 300.0, "fp16": 200.0, "int8": 150.0, "int8-cpu": 10.0})
    b = bundle(tmp_path / "b", failed=("int8-cpu",))
    be = open_backend(b, "ort-cpu", measure=timer)
    assert be.precision == "int8"
    assert timer.asked == [("fp32", "fp16", "int8")]  # the degraded one is not even timed
    assert "int8-cpu skipped: failed parity at export" in be.precision_reason
    with caplog.at_level(logging.WARNING, logger="co2s.runtime"):
        named = open_backend(b, "ort-cpu", "int8-cpu")
    assert named.precision == "int8-cpu"
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert (
        len(warnings) == 1 and "int8-cpu failed its parity gate" in warnings[0] and "90.00 % < 97.00 %" in warnings[0]
    )
    assert "failed parity" in named.precision_reason


def test_a_single_passing_precision_is_taken_without_measuring(tmp_path):
    def no_timer(*a, **k):
        raise AssertionError("nothing to measure")

    b = bundle(tmp_path / "b", failed=("fp16", "int8", "int8-cpu"))
    be = open_backend(b, "ort-cpu", measure=no_timer)
    assert be.precision == "fp32"
    assert be.precision_reason.startswith("precision auto -> fp32: the only CPU precision that passed parity")
    assert not (choose.cache_dir() / "precision").exists()


def test_auto_refuses_a_bundle_whose_every_precision_failed(tmp_path):
    b = bundle(tmp_path / "b", precisions=("fp32", "int8"), failed=("fp32", "int8"))
    with pytest.raises(Co2SInputError, match=r"failed its parity gate.*--precision fp32"):
        open_backend(b, "ort-cpu")
    with pytest.raises(Co2SInputError, match="auto never takes a precision that failed parity"):
        open_backend(b)
    assert open_backend(b, "ort-cpu", "fp32").precision == "fp32"


def test_gpu_auto_keeps_fp16_first_and_never_int8_cpu(tmp_path):
    from co2s.runtime.backends import _precision_for

    b = bundle(tmp_path / "b")
    assert _precision_for(b, "auto", gpu=True) == "fp16"
    only_cpu_int8 = bundle(tmp_path / "c", precisions=("fp32", "int8-cpu"))
    assert _precision_for(only_cpu_int8, "auto", gpu=True) == "fp32"
    degraded_fp16 = bundle(tmp_path / "d", failed=("fp16",))
    assert _precision_for(degraded_fp16, "auto", gpu=True) == "fp32"
    assert ("ort-cpu", "auto") in auto_candidates(b, "auto")  # the CPU's choice waits until the CPU is tried


def test_the_measurement_is_cached_and_reused(tmp_path, cache):
    timer = Timer({"fp32": 30.0, "fp16": 20.0, "int8": 40.0, "int8-cpu": 10.0})
    b = bundle(tmp_path / "b")
    first = choose.choose_cpu_precision(b, threads=1, measure=timer)
    second = choose.choose_cpu_precision(load_bundle(b.root), threads=1, measure=timer)
    assert len(timer.asked) == 1 and not first.reused and second.reused
    assert (first.precision, first.reason) == (second.precision, second.reason) == ("int8-cpu", first.reason)
    files = list((cache / "precision").glob("*.json"))
    assert files == [first.cache]
    record = json.loads(files[0].read_text())
    assert record["p50_ms"] == {"fp32": 30.0, "fp16": 20.0, "int8": 40.0, "int8-cpu": 10.0}
    assert record["key"]["threads"] == 1 and record["key"]["onnxruntime"] and record["key"]["cpu"]
    assert set(record["key"]["artefacts"]) == set(ALL)
    # another thread count is another measurement, in its own file
    choose.choose_cpu_precision(b, threads=2, measure=timer)
    assert len(timer.asked) == 2 and len(list((cache / "precision").glob("*.json"))) == 2


def test_a_missing_cache_is_measured_without_a_warning(tmp_path, caplog):
    timer = Timer({"fp32": 3.0, "fp16": 2.0, "int8": 4.0, "int8-cpu": 1.0})
    b = bundle(tmp_path / "b")
    first = choose.choose_cpu_precision(b, measure=timer)
    first.cache.unlink()
    with caplog.at_level(logging.INFO, logger="co2s.runtime"):
        again = choose.choose_cpu_precision(b, measure=timer)
    assert len(timer.asked) == 2 and again.cache.is_file()
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert any("measuring fp32, fp16, int8, int8-cpu" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize(
    "damage, why",
    [
        (b'{"schema": "co2s.precision-choice/1", "key"', "not valid JSON"),
        (b"\xff\xfe\x00garbage", "cannot read"),
        (b"[1, 2, 3]", "not a co2s.precision-choice/1 record"),
        ("timings", "timings are missing or not positive"),
        ("negative", "timings are missing or not positive"),
    ],
)
def test_a_corrupt_cache_is_one_warning_and_measured_again(tmp_path, caplog, damage, why):
    timer = Timer({"fp32": 3.0, "fp16": 2.0, "int8": 4.0, "int8-cpu": 1.0})
    b = bundle(tmp_path / "b")
    path = choose.choose_cpu_precision(b, measure=timer).cache
    if isinstance(damage, bytes):
        path.write_bytes(damage)
    else:
        record = json.loads(path.read_text())
        if damage == "timings":
            del record["p50_ms"]["int8"]
        else:
            record["p50_ms"]["int8"] = -1.0
        path.write_text(json.dumps(record))
    with caplog.at_level(logging.WARNING, logger="co2s.runtime"):
        again = choose.choose_cpu_precision(b, measure=timer)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and str(path) in warnings[0] and why in warnings[0] and "measuring again" in warnings[0]
    assert len(timer.asked) == 2 and again.precision == "int8-cpu"
    assert json.loads(path.read_text())["p50_ms"]["int8-cpu"] == 1.0  # rewritten whole


def test_another_cpu_or_onnxruntime_measures_again(tmp_path, monkeypatch, caplog):
    import onnxruntime

    timer = Timer({"fp32": 3.0, "fp16": 2.0, "int8": 4.0, "int8-cpu": 1.0})
    b = bundle(tmp_path / "b")
    here = choose.choose_cpu_precision(b, measure=timer).cache
    monkeypatch.setattr(choose, "cpu_model", lambda: "Other CPU 9000")
    there = choose.choose_cpu_precision(b, measure=timer)
    assert len(timer.asked) == 2 and there.cache != here and "on Other CPU 9000" in there.reason
    monkeypatch.setattr(onnxruntime, "__version__", "9.9.9")
    upgraded = choose.choose_cpu_precision(b, measure=timer)
    assert len(timer.asked) == 3 and upgraded.cache not in (here, there)
    # a file copied in from another machine answers nothing here: its key is read, named and measured again
    upgraded.cache.write_bytes(here.read_bytes())
    with caplog.at_level(logging.WARNING, logger="co2s.runtime"):
        choose.choose_cpu_precision(b, measure=timer)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(timer.asked) == 4 and len(warnings) == 1
    assert "cpu 'Other CPU 9000', onnxruntime '9.9.9'" in warnings[0]  # what this run has, beside what it was for


def test_an_unwritable_cache_still_chooses(tmp_path, monkeypatch, caplog):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the cache folder should be")
    monkeypatch.setenv("CO2S_CACHE_DIR", str(blocker))
    timer = Timer({"fp32": 3.0, "fp16": 2.0, "int8": 4.0, "int8-cpu": 1.0})
    with caplog.at_level(logging.WARNING, logger="co2s.runtime"):
        choice = choose.choose_cpu_precision(bundle(tmp_path / "b"), measure=timer)
    assert choice.precision == "int8-cpu"
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "precision cache not saved" in warnings[0]


def test_the_real_timer_times_each_precision_within_its_budget(tmp_path):
    b = bundle(tmp_path / "b", precisions=("fp32", "int8-cpu"))
    times = choose.time_precisions(b, ["fp32", "int8-cpu"], threads=1, batch=2, budget_s=0.05)
    assert set(times) == {"fp32", "int8-cpu"}
    for ms in times.values():
        assert choose.MIN_CALLS <= len(ms) <= choose.MAX_CALLS and all(t > 0 for t in ms)


def test_bench_and_infer_profile_say_which_precision_and_why(tmp_path, run_cli, monkeypatch):
    from PIL import Image

    monkeypatch.setattr(choose, "time_precisions", Timer({"fp32": 9.0, "fp16": 7.0, "int8": 8.0, "int8-cpu": 5.0}))
    root = bundle(tmp_path / "b").root
    r = run_cli("co2s-bench", [root, "--backend", "ort-cpu", "--calls", "2", "--warmup", "1"])
    assert r.code == 0, r.err
    assert "precision auto -> int8-cpu: fastest passing on" in r.out
    assert "cold start:" in r.out
    Image.fromarray(np.zeros((40, 40, 3), np.uint8)).save(tmp_path / "x.png")
    r = run_cli(
        "co2s-infer", [root, tmp_path / "x.png", "--out", tmp_path / "out", "--backend", "ort-cpu", "--profile"]
    )
    assert r.code == 0, r.err
    assert "precision auto -> int8-cpu: fastest passing on" in r.err and "cold start:" in r.err
    profile = json.loads((tmp_path / "out" / "profile.json").read_text())
    assert profile["precision_choice"].startswith("precision auto -> int8-cpu")
    assert profile["cold_start"]["first_result_s"] > 0
