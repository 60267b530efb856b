"""The one table of deployable formats (Ultralytics style): CLI validation, file names, manifest keys and
benchmarks all read it, so adding a format is one row.

Torch-free on purpose: `co2s-export --from-bundle` imports it on a Jetson without torch.
"""

from __future__ import annotations

from dataclasses import dataclass

from co2s.errors import Co2SInputError

PRECISIONS = ("fp32", "fp16", "int8")


@dataclass(frozen=True)
class Format:
    key: str  # manifest artifacts key
    kind: str  # "onnx" | "engine"
    precision: str
    filename: str
    cpu: bool  # runs with onnxruntime on a CPU
    needs_gpu_to_build: bool
    description: str


FORMATS: tuple[Format, ...] = (
    Format("onnx_fp32", "onnx", "fp32", "model.fp32.onnx", True, False, "reference graph; parity baseline"),
    Format(
        "onnx_fp16",
        "onnx",
        "fp16",
        "model.fp16.onnx",
        True,
        False,
        "FP16 with FP32 islands (LN, softmax, reductions, similarity)",
    ),
    Format(
        "onnx_int8",
        "onnx",
        "int8",
        "model.int8.onnx",
        True,
        False,
        "INT8 Q/DQ (symmetric, per-channel weights) on the FP16 graph",
    ),
    Format("engine_fp32", "engine", "fp32", "model.fp32.engine", False, True, "TensorRT plan from model.fp32.onnx"),
    Format(
        "engine_fp16",
        "engine",
        "fp16",
        "model.fp16.engine",
        False,
        True,
        "TensorRT plan from model.fp16.onnx (strongly typed)",
    ),
    Format(
        "engine_int8",
        "engine",
        "int8",
        "model.int8.engine",
        False,
        True,
        "TensorRT plan from model.int8.onnx (strongly typed)",
    ),
)
TIMING_CACHE = "timing.cache"


def get_format(kind: str, precision: str) -> Format:
    for f in FORMATS:
        if f.kind == kind and f.precision == precision:
            return f
    raise KeyError((kind, precision))


def parse_precisions(values, option: str) -> tuple[str, ...]:
    """'fp16,int8' or ['fp16', 'int8'] -> ('fp16', 'int8') in canonical order; aliases half/fp16, int8/i8."""
    aliases = {"float32": "fp32", "full": "fp32", "half": "fp16", "float16": "fp16", "i8": "int8"}
    items: list[str] = []
    for v in [values] if isinstance(values, str) else list(values):
        items += [p.strip().lower() for p in v.split(",") if p.strip()]
    out = []
    for p in items:
        p = aliases.get(p, p)
        if p not in PRECISIONS:
            raise Co2SInputError(f"{option}: unknown precision {p!r}; expected {', '.join(PRECISIONS)}")
        out.append(p)
    return tuple(p for p in PRECISIONS if p in out)


def table() -> str:
    rows = [("key", "file", "runs on CPU", "built on target GPU", "description")]
    rows += [
        (f.key, f.filename, "yes" if f.cpu else "no", "yes" if f.needs_gpu_to_build else "no", f.description)
        for f in FORMATS
    ]
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows)
