"""The runtime's view of a bundle: what a backend and the pipeline need, read through `manifest.load_manifest`.

`manifest.py` owns the on-disk schema and its validation; this module only turns the validated manifest into
small typed records (tile, batch range, classes/palette, one artefact per precision and kind) and checks the one
artefact a run is about to load (present, checksum), so a wrong file is named before anything is deserialised.
"""

from __future__ import annotations

import hashlib
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from co2s.errors import Co2SInputError

PRECISIONS = ("fp32", "fp16", "int8")
MANIFEST_NAME = "co2s.json"


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
    """One file of the bundle: an ONNX model or a TensorRT engine of one precision."""

    kind: str  # "onnx" | "engine"
    precision: str
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


@dataclass(frozen=True)
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
    manifest: Any = None

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def has_probs(self) -> bool:
        return "probs" in self.outputs

    def precisions(self, kind: str = "onnx") -> list[str]:
        return [p for p in PRECISIONS if any(a.kind == kind and a.precision == p for a in self.artefacts)]

    def find(self, kind: str, precision: str) -> list[Artefact]:
        return [a for a in self.artefacts if a.kind == kind and a.precision == precision]

    def companions(self, art: Artefact) -> list[Artefact]:
        """External-data files an ONNX model needs (models over 2 GB)."""
        return [a for a in self.artefacts if a.kind == "onnx-data" and a.precision == art.precision]

    def onnx(self, precision: str) -> Artefact:
        found = self.find("onnx", precision)
        if not found:
            raise Co2SInputError(
                f"bundle {self.root} has no {precision} ONNX model "
                f"(it has: {', '.join(self.precisions('onnx')) or 'none'})"
            )
        return found[0]


# --- checksums --------------------------------------------------------------------------------------------------

_verified: dict[tuple[str, int, int], str] = {}
_verified_lock = threading.Lock()


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while True:
            b = f.read(chunk)
            if not b:
                break
            h.update(b)
    return h.hexdigest()


def verify_artefact(bundle: Bundle, art: Artefact) -> Path:
    """The artefact's path once it exists and matches its checksum (hashed once per file version per process)."""
    p = art.path
    try:
        st = p.stat() if p.is_file() else None
    except OSError as e:  # a name the OS refuses (too long, ...) or an unreadable folder
        raise Co2SInputError(f"bundle {bundle.root}: cannot open {p.name[:80]} ({e.strerror or e})") from None
    if st is None:
        raise Co2SInputError(
            f"bundle {bundle.root}: {art.precision} {art.kind} file {p.name} is missing "
            f"(listed in the manifest); re-export the bundle or copy the file back"
        )
    if art.size is not None and st.st_size != art.size:
        raise Co2SInputError(
            f"bundle {bundle.root}: {p.name} is {st.st_size} bytes, the manifest says {art.size}: "
            f"the file is truncated or from another export"
        )
    if art.sha256:
        key = (str(p.resolve()), st.st_size, st.st_mtime_ns)
        with _verified_lock:
            digest = _verified.get(key)
        if digest is None:
            digest = sha256_file(p)
            with _verified_lock:
                _verified[key] = digest
        if digest != art.sha256.lower():
            raise Co2SInputError(
                f"bundle {bundle.root}: checksum mismatch for {p.name} (sha256 {digest[:12]}…, "
                f"manifest says {art.sha256[:12]}…): the file is corrupt or from another export"
            )
    return p


# --- loading ----------------------------------------------------------------------------------------------------


def load_bundle(path: str | Path) -> Bundle:
    """Validated bundle from a folder (or its co2s.json). The schema is checked here; checksums are checked for
    the artefact a run loads (`verify_artefact`), not for every precision in the folder."""
    from .manifest import load_manifest

    root = Path(path)
    if root.name == MANIFEST_NAME and root.is_file():
        root = root.parent
    if root.exists() and not root.is_dir():
        raise Co2SInputError(f"bundle {root}: expected a bundle folder (with {MANIFEST_NAME}), got a file")
    return from_manifest(load_manifest(root, verify_checksums=False))


def from_manifest(m: Any) -> Bundle:
    """Typed view of a validated `manifest.Manifest`."""
    root, data = Path(m.root), m.data
    classes = tuple(m.classes)
    if len(classes) >= 255:
        raise Co2SInputError(f"bundle {root}: {len(classes)} classes do not fit uint8 labels (255 is nodata)")
    palette = np.asarray(m.palette or [], dtype=np.int64).reshape(-1, 3)
    if palette.shape[0] < len(classes):
        palette = np.vstack([palette, _default_palette(len(classes))[palette.shape[0] :]])
    b = m.batch
    batch = BatchSpec(int(b["min"]), int(b["opt"]), int(b["max"]))
    arts = []
    for _key, a in data["artifacts"].items():
        kind, prec = a.get("kind"), a.get("precision")
        if kind not in ("onnx", "engine", "onnx-data") or prec is None:
            continue
        trt = a.get("tensorrt") or {}
        dev = trt.get("device") or {}
        prof = trt.get("profile")
        arts.append(
            Artefact(
                kind=kind,
                precision=prec,
                path=root / a["path"],
                sha256=a.get("sha256"),
                size=a.get("bytes"),
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
        tile=int(m.tile),
        batch=batch,
        input_name=str(m.input["name"]),
        outputs=tuple(o["name"] for o in m.outputs),
        artefacts=tuple(arts),
        parity=data.get("parity") or {},
        manifest=m,
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


def _default_palette(n: int) -> np.ndarray:
    """Distinct colours for classes the manifest gives none for (golden-angle hues)."""
    import colorsys

    return np.array([[int(255 * c) for c in colorsys.hsv_to_rgb((i * 0.618034) % 1.0, 0.65, 0.95)] for i in range(n)])
