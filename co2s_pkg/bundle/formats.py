"""The one table of bundle artefacts (Ultralytics style) and the names every stage agrees on.

Every kind of file a bundle holds is a row of FORMATS: its manifest key and its file name are derived here, so
CLI validation, the exporter, the engine builder, the runtime and the benchmarks look them up instead of building
`model.<p>.onnx` themselves, and adding a format is one row. The CLIs take their choice lists (precisions, fusion
modes, INT8 methods, presets) from the constants below; the code that implements each name checks itself
against them. Torch-free and numpy-free: `co2s-export --from-bundle` imports it on a Jetson without torch.
"""

from __future__ import annotations

import colorsys
import math
from dataclasses import dataclass
from fractions import Fraction

from co2s.errors import Co2SInputError

# "int8" is TensorRT-shaped (symmetric Q/DQ, built into engines); "int8-cpu" is the form onnxruntime's CPU kernels
# fuse (export/README.md "Precisions"). Only the first three become TensorRT engines.
PRECISIONS = ("fp32", "fp16", "int8", "int8-cpu")
ENGINE_PRECISIONS = ("fp32", "fp16", "int8")
FUSIONS = ("mean", "max-confidence")  # implemented by co2s.train.model.fuse_probabilities and the export graph
INT8_METHODS = ("auto", "ort-minmax", "ort-percentile", "ort-entropy", "modelopt-max", "modelopt-entropy")
CPU_INT8_FORMS = ("dynamic", "qoperator", "qdq")  # co2s.export.cpu_int8; the default is measured there
PRESET_NAMES = ("paper", "tiny")  # co2s.train.model.PRESETS

PATCH_SIZE = 16  # ViT patch of both students: tiles and crops are multiples of it
IGNORE_INDEX = 255  # the reserved uint8 label: "no label" in training data, "nodata" in runtime outputs
MAX_CLASSES = IGNORE_INDEX - 1
# Tiles overlap by a sixth: the reference evaluator slides its window with stride int(crop * 5 / 6)
DEFAULT_OVERLAP_FRACTION = Fraction(1, 6)

# manifest "kind" of each artefact
ONNX, ONNX_DATA, ENGINE, TIMING_CACHE = "onnx", "onnx-data", "engine", "timing-cache"


@dataclass(frozen=True)
class Format:
    key: str  # key in the manifest's "artifacts"
    kind: str
    precision: str | None
    filename: str
    cpu: bool  # runs with onnxruntime on a CPU
    needs_gpu_to_build: bool
    description: str


def external_data_name(onnx_name: str) -> str:
    """File beside an ONNX model above protobuf's 2 GB limit that holds its weights."""
    return f"{onnx_name}.data"


def _key(p: str) -> str:  # manifest keys are identifiers: int8-cpu -> int8_cpu
    return p.replace("-", "_")


def _onnx_name(p: str) -> str:
    return f"model.{p}.onnx"


_ONNX_WHAT = {
    "fp32": "reference graph; parity baseline",
    "fp16": "FP16 with FP32 islands (LN, softmax, reductions, similarity)",
    "int8": "INT8 Q/DQ (symmetric, per-channel weights) on the FP16 graph, for TensorRT",
    "int8-cpu": "INT8 for onnxruntime's CPU kernels (U8 activations, S8 weights), FP32 elsewhere",
}

FORMATS: tuple[Format, ...] = (
    *(Format(f"onnx_{_key(p)}", ONNX, p, _onnx_name(p), True, False, _ONNX_WHAT[p]) for p in PRECISIONS),
    *(
        Format(
            f"onnx_{_key(p)}_data",
            ONNX_DATA,
            p,
            external_data_name(_onnx_name(p)),
            True,
            False,
            f"weights of {_onnx_name(p)} when it is over 2 GB",
        )
        for p in PRECISIONS
    ),
    *(
        Format(
            f"engine_{p}",
            ENGINE,
            p,
            f"model.{p}.engine",
            False,
            True,
            f"TensorRT plan from {_onnx_name(p)}" + ("" if p == "fp32" else " (strongly typed)"),
        )
        for p in ENGINE_PRECISIONS
    ),
    Format("timing_cache", TIMING_CACHE, None, "timing.cache", False, True, "TensorRT timing cache (faster rebuilds)"),
)
KINDS = tuple(dict.fromkeys(f.kind for f in FORMATS))


def get_format(kind: str, precision: str | None = None) -> Format:
    for f in FORMATS:
        if f.kind == kind and f.precision == precision:
            return f
    raise KeyError((kind, precision))


def parse_precisions(values, option: str, choices: tuple[str, ...] = PRECISIONS) -> tuple[str, ...]:
    """'fp16,int8' or ['fp16', 'int8'] -> ('fp16', 'int8') in canonical order; aliases half/fp16, int8/i8."""
    aliases = {
        "float32": "fp32",
        "full": "fp32",
        "half": "fp16",
        "float16": "fp16",
        "i8": "int8",
        "int8cpu": "int8-cpu",
        "int8_cpu": "int8-cpu",
    }
    items: list[str] = []
    for v in [values] if isinstance(values, str) else list(values):
        items += [p.strip().lower() for p in v.split(",") if p.strip()]
    out = []
    for p in items:
        p = aliases.get(p, p)
        if p not in choices:
            raise Co2SInputError(f"{option}: unknown precision {p!r}; expected {', '.join(choices)}")
        out.append(p)
    return tuple(p for p in choices if p in out)


def table() -> str:
    rows = [("key", "file", "runs on CPU", "built on target GPU", "description")]
    rows += [
        (f.key, f.filename, "yes" if f.cpu else "no", "yes" if f.needs_gpu_to_build else "no", f.description)
        for f in FORMATS
    ]
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows)


# ------------------------------------------------------------------------------------------ conventions
def check_patch_multiple(value, option: str) -> int:
    """`value` if it is a positive multiple of PATCH_SIZE, else a Co2SInputError naming `option`."""
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0 or value % PATCH_SIZE:
        raise Co2SInputError(f"{option}: must be a positive multiple of {PATCH_SIZE} (the ViT patch), got {value!r}")
    return value


# The VLG head average-pools its deepest (1/16) map in 4 x 4 windows (docs/method.md §4): a model input must give
# that map at least 4 patches a side.
MIN_MODEL_INPUT = 4 * PATCH_SIZE


def check_model_input(value, option: str) -> int:
    """`value` if it is a model input size the Co2S pair takes (a multiple of PATCH_SIZE, at least MIN_MODEL_INPUT)."""
    check_patch_multiple(value, option)
    if value < MIN_MODEL_INPUT:
        raise Co2SInputError(
            f"{option}: must be at least {MIN_MODEL_INPUT} (the head pools 4 x 4 patches of {PATCH_SIZE} px), got {value}"
        )
    return value


def default_overlap(tile: int) -> int:
    """Pixels two neighbouring tiles share by default: ceil(tile / 6), i.e. the reference's stride int(5/6 tile)."""
    return math.ceil(tile * DEFAULT_OVERLAP_FRACTION)


def _golden_hues(n: int) -> tuple[tuple[int, int, int], ...]:
    """Distinct colours (golden-angle hues) for classes without a palette of their own."""
    return tuple(tuple(int(255 * c) for c in colorsys.hsv_to_rgb((i * 0.618034) % 1.0, 0.65, 0.95)) for i in range(n))


DEFAULT_PALETTE: tuple[tuple[int, int, int], ...] = _golden_hues(MAX_CLASSES)  # class i -> DEFAULT_PALETTE[i]
