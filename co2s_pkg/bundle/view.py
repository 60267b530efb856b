"""The typed view of a bundle: one parse and validation (`manifest.read_manifest`), then small records (tile, batch
range, classes/palette, one `Artefact` per row of the formats table) that the runtime, the engine builder, Triton
and the benchmarks all read.

Checksums are checked per artefact (`verify_artefact`: the one a run is about to load, so a wrong file is named
before anything is deserialised) or for the whole folder (`load_bundle(..., verify=True)`, what the exporter does
before it changes a bundle).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .checksum import cached_sha256
from .formats import DEFAULT_PALETTE, ENGINE, ONNX, ONNX_DATA, PRECISIONS
from .manifest import MANIFEST_NAME, ManifestError, read_manifest


@dataclass(frozen=True)
class BatchSpec:
    min: int
    opt: int
    max: int

    @property
    def dynamic(self) -> bool:
        return self.min != self.max

    def __str__(self) -> str:
        return f"{self.min}" if not self.dynamic else f"{self.min}..{self.max} (opt {self.opt})"


@dataclass(frozen=True)
class Artefact:
    """One file of the bundle: a row of the formats table (kind, precision) and where it is."""

    kind: str  # formats.ONNX | ONNX_DATA | ENGINE | TIMING_CACHE
    precision: str | None
    path: Path
    sha256: str | None
    size: int | None = None
    # engines only: what they were built with/for
    trt_version: str | None = None
    device_name: str | None = None
    compute_capability: tuple[int, int] | None = None
    version_compatible: bool = False
    hardware_compatibility: str | None = None
    batch: BatchSpec | None = None

    @property
    def what(self) -> str:
        """'fp16 engine', 'timing-cache': how messages name it."""
        return f"{self.precision} {self.kind}" if self.precision else self.kind


@dataclass(frozen=True, eq=False)
class Bundle:
    root: Path
    classes: tuple[str, ...]
    palette: np.ndarray  # [N, 3] uint8
    tile: int
    batch: BatchSpec
    input_name: str
    outputs: tuple[str, ...]
    artefacts: tuple[Artefact, ...]
    parity: dict = field(default_factory=dict)
    data: dict = field(default_factory=dict, repr=False)  # the validated manifest, for fields without a record here

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def has_probs(self) -> bool:
        return "probs" in self.outputs

    def parity_passed(self, precision: str) -> bool:
        """Whether this precision passed its parity gate at export. Bundles keep a failed precision only with
        --allow-degraded; one without a parity record (older bundles, hand-made ones) counts as passed."""
        record = self.parity.get(precision)
        return not isinstance(record, dict) or bool(record.get("passed", True))

    def precisions(self, kind: str = ONNX) -> list[str]:
        return [p for p in PRECISIONS if self.has(kind, p)]

    def find(self, kind: str, precision: str | None = None) -> list[Artefact]:
        return [a for a in self.artefacts if a.kind == kind and a.precision == precision]

    def has(self, kind: str, precision: str | None = None) -> bool:
        return bool(self.find(kind, precision))

    def artefact(self, kind: str, precision: str | None = None) -> Artefact:
        """The bundle's file of that kind and precision, or a ManifestError saying what it has instead."""
        found = self.find(kind, precision)
        if found:
            return found[0]
        if kind == ENGINE:
            raise ManifestError(
                f"bundle {self.root} has no {precision} TensorRT engine "
                f"(engines: {', '.join(self.precisions(ENGINE)) or 'none'}); build it with "
                f"`co2s-export --from-bundle {self.root} --engine {precision}`"
            )
        if kind == ONNX:
            raise ManifestError(
                f"bundle {self.root} has no {precision} ONNX model "
                f"(it has: {', '.join(self.precisions(ONNX)) or 'none'})"
            )
        raise ManifestError(f"bundle {self.root} has no {f'{precision} {kind}' if precision else kind}")

    def companions(self, art: Artefact) -> list[Artefact]:
        """External-data files an ONNX model needs (models over 2 GB)."""
        return self.find(ONNX_DATA, art.precision) if art.kind == ONNX else []

    def verify(self) -> None:
        """Every artefact exists with the size and sha256 the manifest records, or one ManifestError naming all."""
        problems = [p for p in map(_artefact_problem, self.artefacts) if p]
        if problems:
            raise ManifestError(f"bundle {self.root}: {'; '.join(problems)}")


def verify_artefact(bundle: Bundle, art: Artefact) -> Path:
    """The artefact's path once it exists and matches its checksum (hashed once per file version per process)."""
    problem = _artefact_problem(art)
    if problem:
        raise ManifestError(f"bundle {bundle.root}: {problem}")
    return art.path


def _artefact_problem(art: Artefact) -> str | None:
    p = art.path
    name = _short_name(p.name)
    try:  # is_file() itself raises for a name the OS refuses (too long, say), not only for a missing file
        st = p.stat() if p.is_file() else None
        if st is None:
            return f"{art.what} file {name} is missing (listed in the manifest); re-export the bundle or copy the file back"
        if art.size is not None and st.st_size != art.size:
            return (
                f"{name} is {st.st_size} bytes, the manifest says {art.size}: "
                f"the file is truncated or from another export"
            )
        digest = cached_sha256(p, st) if art.sha256 else None
    except OSError as e:
        return f"cannot read {name} ({e.strerror or e})"
    if digest is not None and digest != art.sha256.lower():
        return (
            f"checksum mismatch for {name} (sha256 {digest[:12]}…, manifest says {art.sha256[:12]}…): "
            f"the file is corrupt or from another export"
        )
    return None


def _short_name(name: str, limit: int = 80) -> str:
    return name if len(name) <= limit else name[:limit] + "..."


# --- loading ----------------------------------------------------------------------------------------------------


def load_bundle(path: str | Path, *, verify: bool = False) -> Bundle:
    """The bundle in a folder (or named by its co2s.json), its manifest validated. Checksums are checked for the
    artefact a run loads (`verify_artefact`), or for every artefact with `verify=True`."""
    root = Path(path)
    if root.name == MANIFEST_NAME and root.is_file():
        root = root.parent
    if root.exists() and not root.is_dir():
        raise ManifestError(f"bundle {root}: expected a bundle folder (with {MANIFEST_NAME}), got a file")
    data = read_manifest(root)
    bundle = _view(root, data)
    if verify:
        bundle.verify()
    return bundle


def _view(root: Path, data: dict) -> Bundle:
    """Typed records of a validated manifest (read_manifest has checked every field read here)."""
    classes = tuple(data["dataset"]["classes"])
    palette = np.asarray(data["dataset"]["palette"] or [], dtype=np.int64).reshape(-1, 3)
    if palette.shape[0] < len(classes):
        palette = np.vstack([palette, np.asarray(DEFAULT_PALETTE[palette.shape[0] : len(classes)])])
    b = data["batch"]
    arts = []
    for a in data["artifacts"].values():
        trt = a.get("tensorrt") or {}
        dev = trt.get("device") or {}
        prof = trt.get("profile")
        arts.append(
            Artefact(
                kind=a["kind"],
                precision=a.get("precision"),
                path=root / a["path"],
                sha256=a["sha256"],
                size=a["bytes"],
                trt_version=trt.get("version"),
                device_name=dev.get("name"),
                compute_capability=_cc(dev.get("compute_capability")),
                version_compatible=bool(trt.get("version_compatible", False)),
                hardware_compatibility=trt.get("hardware_compatibility"),
                batch=BatchSpec(int(prof["min"]), int(prof["opt"]), int(prof["max"])) if prof else None,
            )
        )
    return Bundle(
        root=root,
        classes=classes,
        palette=palette.astype(np.uint8),
        tile=int(data["model"]["tile"]),
        batch=BatchSpec(int(b["min"]), int(b["opt"]), int(b["max"])),
        input_name=str(data["input"]["name"]),
        outputs=tuple(o["name"] for o in data["outputs"]),
        artefacts=tuple(arts),
        parity=data.get("parity") or {},
        data=data,
    )


def _cc(v: Any) -> tuple[int, int] | None:
    """'8.7' / 'sm_87' / [8, 7] -> (8, 7)."""
    if v is None:
        return None
    if isinstance(v, str):
        s = v.lower().removeprefix("sm_").removeprefix("sm")
        if "." in s:
            a, b = s.split(".", 1)
            return int(a), int(b)
        return int(s[:-1]), int(s[-1])
    a, b = v
    return int(a), int(b)
