"""Calibration / parity images: `--calib-data DIR`, else the val split of the dataset the checkpoint was trained
on (it records it, with labels: parity is then scored against ground truth), else (untrained) the synthetic set.

The same tiles calibrate INT8 and measure parity (PyTorch vs ONNX FP32, FP16/INT8 vs FP32). Tiles are
taken on a regular grid over each image, round-robin across images, so a few large scenes still give
`count` distinct tiles; images smaller than the tile are refused (upsampling would calibrate on pixels
the model never sees at that scale). A folder is searched recursively, but label masks are not images to
calibrate on: folders named like mask folders and single-band or palette files are skipped, and counted.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from co2s.errors import Co2SInputError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".webp")
# folders whose files are labels, not imagery (dataset layouts: images/ + masks/ or labels/ side by side)
MASK_FOLDERS = frozenset(
    {"mask", "masks", "label", "labels", "gt", "groundtruth", "annotations", "ann", "segmentation"}
)


@dataclass
class CalibrationSet:
    images: np.ndarray  # uint8 [N, T, T, 3]
    labels: np.ndarray | None  # uint8 [N, T, T] (255 = ignore) when known
    source: dict  # for the manifest
    label_classes: tuple[str, ...] = ()  # what the label indices mean

    def truth_for(self, classes) -> np.ndarray | None:
        """Ground truth usable for a model with these classes (the synthetic labels only fit the synthetic set)."""
        return self.labels if self.labels is not None and tuple(classes) == self.label_classes else None

    def __len__(self) -> int:
        return len(self.images)


def list_images(folder: Path) -> list[Path]:
    """Image files under `folder` (recursively), without those in mask folders; single-band files are dropped
    later, when they are read (from_folder)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise Co2SInputError(f"--calib-data {folder}: not a folder")
    found = sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    files = [p for p in found if not MASK_FOLDERS & {part.lower() for part in p.relative_to(folder).parts[:-1]}]
    if not files:
        where = f" ({len(found)} in mask folders: {', '.join(sorted(MASK_FOLDERS))})" if found else ""
        raise Co2SInputError(
            f"--calib-data {folder}: no images found{where} (looked for {', '.join(IMAGE_SUFFIXES)}, recursively)"
        )
    return files


def _is_label_like(path: Path) -> bool:
    """A single-band or palette file is a label mask or a band, not an RGB scene to calibrate on."""
    from co2s.train.data.io import open_image

    with open_image(path) as im:
        return im.mode in ("1", "L", "P", "I", "I;16", "F")


def _grid_tiles(h: int, w: int, tile: int) -> list[tuple[int, int]]:
    ys = list(range(0, h - tile + 1, tile)) or [0]
    xs = list(range(0, w - tile + 1, tile)) or [0]
    return [(y, x) for y in ys for x in xs]


def from_folder(folder: Path, count: int, tile: int) -> CalibrationSet:
    from co2s.train.data import read_image

    listed = list_images(folder)
    files = [f for f in listed if not _is_label_like(f)]
    if not files:
        raise Co2SInputError(
            f"--calib-data {folder}: all {len(listed)} images are single-band or palette files (label masks?); "
            "calibration needs the RGB imagery"
        )
    images = [read_image(f) for f in files]  # Co2SInputError names a bad file
    for f, im in zip(files, images):
        if im.shape[0] < tile or im.shape[1] < tile:
            raise Co2SInputError(
                f"--calib-data: {f} is {im.shape[1]}x{im.shape[0]} pixels, smaller than the {tile}x{tile} tile"
            )
    grids = [_grid_tiles(im.shape[0], im.shape[1], tile) for im in images]
    out: list[np.ndarray] = []
    k = 0
    while len(out) < count and k < max(len(g) for g in grids):
        for im, g in zip(images, grids):
            if k < len(g) and len(out) < count:
                y, x = g[k]
                out.append(im[y : y + tile, x : x + tile])
        k += 1
    arr = np.stack(out).astype(np.uint8)
    return CalibrationSet(
        arr,
        None,
        {
            "kind": "folder",
            "path": str(Path(folder).resolve()),
            "files": len(files),
            "skipped_label_like": len(listed) - len(files),
            "count": len(arr),
            "sha256": _digest(arr),
        },
    )


def synthetic(count: int, tile: int, seed: int = 0) -> CalibrationSet:
    from co2s.train.data import get_dataset_info, make_scene

    pairs = [make_scene(seed * 1_000_003 + i, tile) for i in range(count)]
    images = np.stack([p[0] for p in pairs]).astype(np.uint8)
    labels = np.stack([p[1] for p in pairs]).astype(np.uint8)
    return CalibrationSet(
        images,
        labels,
        {"kind": "synthetic", "seed": seed, "count": count, "sha256": _digest(images)},
        tuple(get_dataset_info("synthetic").classes),
    )


def from_dataset(train_config: dict, count: int, tile: int) -> CalibrationSet:
    """Tiles and labels of the val split the checkpoint was trained with (its train_config: dataset, data root,
    split, seed, sizes), so INT8 is calibrated on the imagery the model is for and parity is scored on truth."""
    from co2s.train.data import build_splits, get_dataset_info

    name = train_config["dataset"]
    sizes = {k: train_config[k] for k in ("num_val",) if train_config.get(k) is not None}
    if train_config.get("image_size") is not None:
        sizes["size"] = train_config["image_size"]
    try:
        val = build_splits(
            name,
            train_config.get("data_root"),
            train_config.get("split") or "1_8",
            seed=int(train_config.get("seed") or 0),
            parts=("val",),
            **sizes,
        )["val"]
    except Co2SInputError as e:
        raise Co2SInputError(
            f"the checkpoint was trained on dataset {name!r}, whose val images calibrate INT8 and check parity, "
            f"but they cannot be read here ({e}); pass --calib-data DIR with images like the deployment's"
        ) from None
    items = [val[i] for i in range(min(len(val), count))]
    usable = [(im, lab) for im, lab in items if im.shape[0] >= tile and im.shape[1] >= tile]
    if not usable:
        raise Co2SInputError(
            f"dataset {name!r}: no val image is at least {tile}x{tile} pixels; pass --calib-data DIR or a smaller --tile"
        )
    grids = [_grid_tiles(im.shape[0], im.shape[1], tile) for im, _ in usable]
    imgs, labs = [], []
    k = 0
    while len(imgs) < count and k < max(len(g) for g in grids):
        for (im, lab), g in zip(usable, grids):
            if k < len(g) and len(imgs) < count:
                y, x = g[k]
                imgs.append(im[y : y + tile, x : x + tile])
                labs.append(lab[y : y + tile, x : x + tile])
        k += 1
    arr = np.stack(imgs).astype(np.uint8)
    return CalibrationSet(
        arr,
        np.stack(labs).astype(np.uint8),
        {"kind": "dataset", "dataset": name, "part": "val", "count": len(arr), "sha256": _digest(arr)},
        tuple(get_dataset_info(name).classes),
    )


def load_calibration(
    folder: str | Path | None, count: int, tile: int, train_config: dict | None = None
) -> CalibrationSet:
    """--calib-data, else the training dataset's val split (a checkpoint), else the synthetic set (untrained)."""
    if count < 1:
        raise Co2SInputError(f"--calib-count must be at least 1, got {count}")
    if folder:
        return from_folder(Path(folder), count, tile)
    if train_config and train_config.get("dataset"):
        return from_dataset(train_config, count, tile)
    return synthetic(count, tile)


def calibration_reader(calib: np.ndarray, input_name: str, batch: int, stride: int = 4):
    """onnxruntime's CalibrationDataReader over `calib` in batches, read `stride` batches at a time by
    `calibrated_ranges`: ranges (or histograms) are folded every few batches, so the calibrator holds the
    intermediate outputs of a few tiles, not of all of them (their memory grows with tile area: tens of GB for 32
    tiles of the paper preset at 512). Not CalibMaxIntermediateOutputs: onnxruntime 1.32 drops the collected
    outputs when that limit is reached instead of folding them."""
    from onnxruntime.quantization import CalibrationDataReader

    batches = [calib[i : i + batch] for i in range(0, len(calib) - batch + 1, batch)]
    stride = max(1, min(stride, len(batches)))

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.stride = stride
            self.set_range(0, len(batches))

        def __len__(self) -> int:
            return len(batches)

        def set_range(self, start_index: int, end_index: int) -> None:
            self._it = iter(batches[start_index:end_index])

        def get_next(self):
            x = next(self._it, None)
            return None if x is None else {input_name: x}

    return Reader()


def calibrated_ranges(fp32_path: Path, reader, method, op_types, out: Path, *, options: dict | None = None) -> Path:
    """Activation ranges of `fp32_path` from onnxruntime's own calibrator (`method`: a CalibrationMethod),
    written to `out` as onnxruntime's calibration cache for quantize_static(calibration_cache_path=...).

    Run here rather than inside quantize_static for two reasons: memory, and quantize_static passes only five
    calibrator options on, so the entropy calibrator's bin counts could not be set there. Memory: the calibrator's
    session (no graph optimisation, every calibrated tensor a graph output) runs in onnxruntime's priority-based
    order, which frees each activation after its last consumer; in the default order one run of the paper
    preset at 512² held ~4 GB of activations at once (peak 5.4 GB in a bare process, 1.5 GB priority-based, the
    same ranges). It has no CPU memory arena either: with the arena the second run allocates its memory pattern
    beside what the first left there (9.2 GB instead of 4.8 GB before the order was changed). Order and arena
    change when memory is allocated and freed, not what is computed (export_memory.md)."""
    import onnxruntime as ort
    from onnxruntime.quantization import create_calibrator, save_tensors_data

    from .onnx_export import needs_external_data

    fp32_path, out = Path(fp32_path), Path(out)
    calibrator = create_calibrator(
        fp32_path,
        list(op_types),
        augmented_model_path=str(out.with_name(out.stem + ".augmented.onnx")),
        calibrate_method=method,
        use_external_data_format=needs_external_data(fp32_path),
        extra_options=dict(options or {}),
    )
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL  # as the calibrator's own
    opts.enable_cpu_mem_arena = False
    opts.execution_order = ort.ExecutionOrder.PRIORITY_BASED
    calibrator.infer_session = None  # its own session goes before the next one loads the model
    calibrator.infer_session = ort.InferenceSession(
        calibrator.augmented_model_path, opts, providers=calibrator.execution_providers
    )
    for start in range(0, len(reader), reader.stride):  # collected outputs are folded and freed each stride
        reader.set_range(start, start + reader.stride)
        calibrator.collect_data(reader)
    save_tensors_data(calibrator.compute_data(), out)
    return out


def _digest(arr: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(arr).tobytes()).hexdigest()
