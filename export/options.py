"""What an export is asked to do, what it returns, and how it fails: shared by the orchestrator (`pipeline.py`),
the engine step (`engines.py`) and the CLI, so none of them imports another for its types.

Library code reports outcomes as data: "engines deferred to the target" is `ExportResult.engines_deferred`, and
only `cli.py` turns it into an exit status.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from co2s.bundle import formats
from co2s.errors import Co2SCheckFailed

DEFAULT_CALIB_COUNT = 32  # tiles of up to 256² pixels; larger tiles get fewer, for the same pixel count


def default_calib_count(tile: int) -> int:
    """32 tiles up to 256², then the same pixels in fewer tiles (8 at 512²), never under 8: the PyTorch reference and
    every parity run are over these tiles, and at 512² 32 tiles made them most of a 20-minute export."""
    return max(8, min(DEFAULT_CALIB_COUNT, round(DEFAULT_CALIB_COUNT * (256 / tile) ** 2)))


BOTH = "both"


class ExportCheckError(Co2SCheckFailed):
    """The exported graph failed the TensorRT audit or FP32 parity; nothing was written."""


@dataclass
class ExportOptions:
    out: Path
    checkpoint: Path | None = None
    untrained: bool = False
    preset: str | None = None
    num_classes: int | None = None
    dataset: str | None = None
    students: str = BOTH
    fusion: str = "mean"
    tile: int | None = None
    batch: tuple[int, int, int] = (1, 1, 1)
    precisions: tuple[str, ...] = formats.PRECISIONS
    engines: tuple[str, ...] = ()
    calib_data: Path | None = None
    calib_count: int | None = None  # None: default_calib_count(tile)
    int8_method: str = "auto"
    cpu_int8_form: str = "dynamic"  # one of formats.CPU_INT8_FORMS (export/cpu_int8.py: why this one)
    probs: bool = True  # seamless stitching by default (README "What co2s-infer writes": seams measured)
    workspace_gib: float = 4.0
    triton_repo: Path | None = None
    allow_degraded: bool = False
    force: bool = False
    seed: int = 0
    log: object = field(default=print, repr=False)


@dataclass(frozen=True)
class EnginesDeferred:
    """TensorRT engines were asked for on a machine without an NVIDIA GPU: the bundle is complete (all ONNX) and
    the engines are to be built on the target, with `command`."""

    bundle: Path
    precisions: tuple[str, ...]

    @property
    def command(self) -> str:
        return f"co2s-export --from-bundle {self.bundle} " + " ".join(f"--engine {p}" for p in self.precisions)

    @property
    def message(self) -> str:
        return (
            f"TensorRT engines are built on the target GPU, and this machine has none: copy {self.bundle} there "
            f"and run `{self.command}`."
        )


@dataclass
class ExportResult:
    bundle: Path
    manifest: dict
    engines_deferred: EnginesDeferred | None = None  # None: every engine asked for was built
    # precisions under their parity gate -> what happened ("...; not written" or "...; kept, flagged degraded")
    failed_precisions: dict[str, str] = field(default_factory=dict)

    @property
    def partial(self) -> bool:
        """A precision asked for is missing from the bundle: it failed its parity gate and was not written."""
        return any(v.endswith("not written") for v in self.failed_precisions.values())
