"""Tiling: the grid covers the scene, each pixel comes from its most central tile, and stitching has no seams
(tiled == whole-image for a model whose output at a pixel depends only on that pixel), in both stitch modes."""

from __future__ import annotations

import re

import numpy as np
import pytest
from fakes.runtime import FakeBackend, centrality, centrality_rule, pixel_rule
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from co2s.bundle import BatchSpec
from co2s.errors import Co2SInputError
from co2s.runtime.pipeline import InferencePipeline, InferOptions, collect_inputs, predict_array
from co2s.runtime.tiling import NODATA_LABEL, TileGrid, axis_keep_bounds, axis_starts, pad_to_tile, parse_overlap

SETTINGS = settings(max_examples=40, deadline=None)


@given(length=st.integers(1, 700), tile=st.sampled_from([16, 32, 48]), frac=st.floats(0, 0.9))
@settings(max_examples=200, deadline=None)
def test_axis_grid_covers_and_keep_boxes_partition(length, tile, frac):
    overlap = min(tile - 1, int(frac * tile))
    starts = axis_starts(length, tile, tile - overlap)
    assert starts[0] == 0
    assert starts[-1] == max(0, length - tile)  # last tile flush with the end (or a single padded tile)
    assert all(b - a <= tile - overlap for a, b in zip(starts, starts[1:]))
    keeps = axis_keep_bounds(starts, tile, length)
    assert keeps[0][0] == 0 and keeps[-1][1] == length
    assert all(k1[1] == k2[0] for k1, k2 in zip(keeps, keeps[1:]))  # disjoint and gap-free
    for s, (lo, hi) in zip(starts, keeps):
        assert s <= lo <= hi <= s + tile  # a tile only keeps pixels it covers
        # every kept pixel is at least as central in this tile as in any other covering tile
        for p in range(lo, hi):
            mine = abs(p + 0.5 - (s + tile / 2))
            assert all(mine <= abs(p + 0.5 - (o + tile / 2)) + 1e-9 for o in starts if o <= p < o + tile)


def test_default_overlap_is_a_sixth_and_parsing():
    assert parse_overlap(None, 512) == 86  # stride 426 = int(5/6 of the tile), the training evaluator's stride
    assert all(t - parse_overlap(None, t) == int(t * 5 / 6) for t in range(16, 1025, 16))
    assert parse_overlap("0.25", 512) == 128
    assert parse_overlap("64", 512) == 64
    assert parse_overlap(0, 512) == 0
    for bad in ("-1", "512", "abc", "nan"):
        with pytest.raises(Co2SInputError):
            parse_overlap(bad, 512)


def test_overlap_is_at_most_half_the_tile_and_pixels_are_whole():
    assert parse_overlap("64", 128) == 64 and parse_overlap("0.5", 128) == 64  # stride half a tile: the limit
    assert parse_overlap("1", 128) == 1 and parse_overlap("2.0", 128) == 2
    for bad, says in (("127", "at most half the tile (64 px"), ("0.999", "or a fraction up to 0.5"), ("65", "64 px")):
        with pytest.raises(Co2SInputError, match=re.escape(says)):
            parse_overlap(bad, 128)
    with pytest.raises(Co2SInputError, match="must be whole"):
        parse_overlap("1.5", 128)  # once silently 2 px


def _whole(rgb: np.ndarray, n: int) -> dict:
    out = pixel_rule(rgb[None], n)
    return {"labels": out["labels"][0], "confidence": out["confidence"][0]}


@given(
    h=st.integers(1, 150),
    w=st.integers(1, 150),
    tile=st.sampled_from([16, 32]),
    frac=st.floats(0, 0.75),
    blend=st.booleans(),
    seed=st.integers(0, 2**16),
)
@SETTINGS
def test_tiled_equals_whole_image_no_seams(h, w, tile, frac, blend, seed):
    n = 5
    rgb = np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)
    be = FakeBackend(tile, n)
    overlap = min(tile - 1, int(frac * tile))
    got = predict_array(be, rgb, overlap=overlap, blend=blend, num_classes=n)
    want = _whole(rgb, n)
    assert np.array_equal(got["labels"], want["labels"])
    np.testing.assert_allclose(got["confidence"], want["confidence"], rtol=0, atol=1e-6 if blend else 0)


@given(h=st.integers(1, 32), w=st.integers(1, 32), seed=st.integers(0, 2**16))
@SETTINGS
def test_image_that_fits_one_tile_equals_single_tile_inference(h, w, seed):
    tile, n = 32, 4
    rgb = np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)
    be = FakeBackend(tile, n)
    got = predict_array(be, rgb)
    single = be.run(pad_to_tile(rgb, tile)[None])
    assert np.array_equal(got["labels"], single["labels"][0, :h, :w])
    assert np.array_equal(got["confidence"], single["confidence"][0, :h, :w])


@given(h=st.integers(20, 140), w=st.integers(20, 140), frac=st.floats(0, 0.75))
@SETTINGS
def test_each_pixel_comes_from_its_most_central_tile(h, w, frac):
    tile = 32
    overlap = min(tile - 1, int(frac * tile))
    be = FakeBackend(tile, 2, rule=lambda t: centrality_rule(t, tile), probs=False)
    got = predict_array(be, np.zeros((h, w, 3), np.uint8), overlap=overlap)["confidence"]
    best = np.full((h, w), -1.0, np.float32)
    c = centrality(tile)
    for win in TileGrid(h, w, tile, overlap):
        region = best[win.y0 : win.y0 + win.h, win.x0 : win.x0 + win.w]
        np.maximum(region, c[: win.h, : win.w], out=region)
    assert np.array_equal(got, best)


def test_nodata_pixels_get_nodata_label_and_empty_tiles_are_not_run():
    tile, n = 16, 3
    rgb = np.random.default_rng(0).integers(0, 256, (40, 60, 3), dtype=np.uint8)
    valid = np.ones((40, 60), bool)
    valid[:, :30] = False  # left half nodata: whole tiles there are skipped
    valid[35:, 50:] = False
    be = FakeBackend(tile, n)
    for blend in (False, True):
        be.batch_sizes.clear()
        got = predict_array(be, rgb, overlap=4, valid=valid, blend=blend, num_classes=n)
        want = _whole(rgb, n)
        assert np.all(got["labels"][~valid] == NODATA_LABEL)
        assert np.all(got["confidence"][~valid] == 0)
        assert np.array_equal(got["labels"][valid], want["labels"][valid])
        assert sum(be.batch_sizes) < len(TileGrid(40, 60, tile, 4))


def test_pad_to_tile_mirrors_and_handles_one_pixel():
    a = np.arange(2 * 3 * 3, dtype=np.uint8).reshape(2, 3, 3)
    p = pad_to_tile(a, 4)
    assert p.shape == (4, 4, 3) and np.array_equal(p[:2, :3], a)
    assert np.array_equal(p[2, :3], a[0])  # reflect: row 2 mirrors row 0
    one = pad_to_tile(np.ones((1, 5, 3), np.uint8), 8)
    assert one.shape == (8, 8, 3) and one.min() == 1


@pytest.mark.parametrize("blend", [False, True])
def test_pipeline_from_files_matches_whole_image_and_batches_across_files(tmp_path, blend):
    tile, n = 32, 4
    rng = np.random.default_rng(3)
    sizes = [(70, 90), (10, 12), (33, 31), (5, 100)]
    imgs = []
    (tmp_path / "in" / "sub").mkdir(parents=True)
    for i, (h, w) in enumerate(sizes):
        rgb = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        imgs.append(rgb)
        Image.fromarray(rgb).save(tmp_path / "in" / ("sub" if i % 2 else "") / f"img{i}.png")
    be = FakeBackend(tile, n, batch=BatchSpec(1, 4, 4))
    from fakes.runtime import make_bundle

    from co2s.bundle import load_bundle

    bundle = load_bundle(make_bundle(tmp_path / "b", tile=tile, num_classes=n, probs=True))
    specs, _ = collect_inputs([tmp_path / "in"])
    pipe = InferencePipeline(bundle, be, tmp_path / "out", InferOptions(overlap=7, blend=blend, readers=2))
    summary = pipe.run(specs)
    assert [r.status for r in summary.results] == ["ok"] * 4, summary.results
    for i, rgb in enumerate(imgs):
        rel = ("sub/" if i % 2 else "") + f"img{i}"
        lab = np.asarray(Image.open(tmp_path / "out" / f"{rel}.labels.png"))
        assert np.array_equal(lab, _whole(rgb, n)["labels"])
        conf = np.asarray(Image.open(tmp_path / "out" / f"{rel}.confidence.png"))
        want = np.clip(_whole(rgb, n)["confidence"] * 255 + 0.5, 0, 255).astype(np.uint8)
        assert np.abs(conf.astype(int) - want).max() <= (1 if blend else 0)
        assert Image.open(tmp_path / "out" / f"{rel}.overlay.png").size == (rgb.shape[1], rgb.shape[0])
    assert max(be.batch_sizes) > 1  # tiles of different files share batches


def test_backend_failure_stops_the_run_without_hanging_or_partial_files(tmp_path):
    from fakes.runtime import make_bundle

    from co2s.bundle import load_bundle

    tile = 32
    calls = []

    def flaky(tiles):
        calls.append(len(tiles))
        if len(calls) == 3:
            raise RuntimeError("device lost")
        return pixel_rule(tiles, 4)

    (tmp_path / "in").mkdir()
    for i in range(4):
        Image.fromarray(np.random.default_rng(i).integers(0, 256, (90, 90, 3), dtype=np.uint8)).save(
            tmp_path / "in" / f"{i}.png"
        )
    bundle = load_bundle(make_bundle(tmp_path / "b", tile=tile))
    pipe = InferencePipeline(bundle, FakeBackend(tile, 4, rule=flaky, probs=False), tmp_path / "out", InferOptions())
    with pytest.raises(RuntimeError, match="device lost"):
        pipe.run(collect_inputs([tmp_path / "in"])[0])
    left = [p.name for p in (tmp_path / "out").rglob("*") if p.is_file()] if (tmp_path / "out").exists() else []
    assert not [n for n in left if "partial" in n], left
