"""The bundle manifest `co2s.json`: schema, validation and checksum verification (stdlib + numpy only).

A bundle is a folder:

    co2s.json            this manifest (schema: co2s_manifest.schema.json beside this file)
    model.fp32.onnx      the reference graph (always)
    model.fp16.onnx      FP16 with FP32 islands            (optional)
    model.int8.onnx      INT8 Q/DQ on the FP16 graph         (optional)
    model.<p>.engine     TensorRT plans, built on the target (optional; plain plan bytes, no header)
    timing.cache         TensorRT timing cache                (optional)

`load_manifest(bundle)` is what every consumer calls first: it parses the JSON, validates it against the
schema (a small built-in validator for the subset of JSON Schema the file uses, so the runtime needs no
`jsonschema`), checks that every artefact exists with the recorded size and sha256, and returns a `Manifest`.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path

from co2s.errors import Co2SInputError
from co2s.files import umask

MANIFEST_NAME = "co2s.json"
SCHEMA_PATH = Path(__file__).with_name("co2s_manifest.schema.json")
SCHEMA_VERSION = 1
FORMAT = "co2s-bundle"


class ManifestError(Co2SInputError):
    """The bundle's manifest is missing, malformed, or does not match the files beside it."""


def load_schema() -> dict:
    return json.loads(SCHEMA_PATH.read_text())


# --------------------------------------------------------------------------------------- validation
_JSON_TYPES = {
    "object": dict,
    "array": list,
    "string": str,
    "boolean": bool,
    "null": type(None),
    "integer": int,
    "number": (int, float),
}


def _is_type(value, name: str) -> bool:
    if name in ("integer", "number") and isinstance(value, bool):
        return False
    if name == "integer" and isinstance(value, float):
        return value.is_integer()
    return isinstance(value, _JSON_TYPES[name])


def _short(x, limit: int = 60) -> str:
    """repr for a message: a fuzzed or corrupt file can hold megabyte strings where a name was expected."""
    text = repr(x)
    return text if len(text) <= limit else text[:limit] + "..."


def schema_errors(instance, schema: dict | None = None, at: str = "") -> list[str]:
    """Every violation as 'path: problem'. Supports the keywords co2s_manifest.schema.json uses; `at` prefixes
    the paths when `instance` is a part of the manifest."""
    root = schema if schema is not None else load_schema()
    errors: list[str] = []

    def resolve(s: dict) -> dict:
        while "$ref" in s:
            ref = s["$ref"]
            if not ref.startswith("#/"):
                raise ValueError(f"unsupported $ref {ref}")
            s = root
            for part in ref[2:].split("/"):
                s = s[part]
        return s

    def check(x, s: dict, path: str) -> None:
        s = resolve(s)
        where = path or "(root)"
        if "const" in s and x != s["const"]:
            errors.append(f"{where}: expected {s['const']!r}, got {_short(x)}")
            return
        if "enum" in s and x not in s["enum"]:
            errors.append(f"{where}: expected one of {s['enum']}, got {_short(x)}")
            return
        if "type" in s:
            types = s["type"] if isinstance(s["type"], list) else [s["type"]]
            if not any(_is_type(x, t) for t in types):
                errors.append(f"{where}: expected {' or '.join(types)}, got {type(x).__name__}")
                return
        if isinstance(x, (int, float)) and not isinstance(x, bool):
            if "minimum" in s and x < s["minimum"]:
                errors.append(f"{where}: {x} is below the minimum {s['minimum']}")
            if "maximum" in s and x > s["maximum"]:
                errors.append(f"{where}: {x} is above the maximum {s['maximum']}")
        if isinstance(x, str) and "pattern" in s and not re.search(s["pattern"], x):
            errors.append(f"{where}: {_short(x)} does not match {s['pattern']}")
        if isinstance(x, list):
            if len(x) < s.get("minItems", 0):
                errors.append(f"{where}: expected at least {s['minItems']} items, got {len(x)}")
            if "maxItems" in s and len(x) > s["maxItems"]:
                errors.append(f"{where}: expected at most {s['maxItems']} items, got {len(x)}")
            if "items" in s:
                for i, item in enumerate(x):
                    check(item, s["items"], f"{path}[{i}]")
        if isinstance(x, dict):
            for key in s.get("required", []):
                if key not in x:
                    errors.append(f"{where}: missing required field {key!r}")
            props = s.get("properties", {})
            extra = s.get("additionalProperties", True)
            for key, value in x.items():
                sub = f"{path}.{key}" if path else str(key)
                if key in props:
                    check(value, props[key], sub)
                elif extra is False:
                    errors.append(f"{where}: unexpected field {_short(key)}")
                elif isinstance(extra, dict):
                    check(value, extra, sub)

    check(instance, root, at)
    return errors


# The schema file only says an artefact's "tensorrt" record is an object (the exporter adds build details freely);
# these are the fields the runtime reads from it (bundle.from_manifest, the TensorRT backend's compatibility
# check), so a hand-edited or damaged record is named here instead of failing later as a KeyError.
TENSORRT_SCHEMA = {
    "type": "object",
    "properties": {
        "version": {"type": ["string", "null"]},
        "version_compatible": {"type": "boolean"},
        "hardware_compatibility": {"type": ["string", "null"]},
        "profile": {
            "type": ["object", "null"],
            "required": ["min", "opt", "max"],
            "properties": {k: {"type": "integer", "minimum": 1} for k in ("min", "opt", "max")},
        },
        "device": {
            "type": ["object", "null"],
            "properties": {
                "name": {"type": ["string", "null"]},
                # "8.7", "87", "sm_87" or [8, 7] (\Z, not $: "87\n" would pass $ and then fail to parse)
                "compute_capability": {
                    "type": ["string", "array", "null"],
                    "pattern": r"^([sS][mM]_?)?([0-9]+[.][0-9]+|[0-9]{2,})\Z",
                    "minItems": 2,
                    "maxItems": 2,
                    "items": {"type": "integer", "minimum": 0},
                },
            },
        },
    },
}


def runtime_errors(data: dict) -> list[str]:
    """What a schema-valid manifest still needs before the runtime can use it: fields that agree with each other
    (the stitcher sizes its buffers from the class list, the model from num_classes) and well-formed TensorRT
    records."""
    errors = []
    n, classes = data["model"]["num_classes"], data["dataset"]["classes"]
    if len(classes) != n:
        errors.append(f"dataset.classes: {len(classes)} names, but model.num_classes is {n}")
    b = data["batch"]
    if not b["min"] <= b["opt"] <= b["max"]:
        errors.append(f"batch: expected min <= opt <= max, got {b['min']}, {b['opt']}, {b['max']}")
    for key, art in data.get("artifacts", {}).items():
        if "tensorrt" in art:
            errors += schema_errors(art["tensorrt"], TENSORRT_SCHEMA, at=f"artifacts.{key}.tensorrt")
    return errors


# ----------------------------------------------------------------------------------------- checksums
def sha256_file(path: Path, chunk: int = 1 << 22) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def artifact_record(root: Path, rel: str, kind: str, **extra) -> dict:
    p = Path(root) / rel
    return {"path": rel, "sha256": sha256_file(p), "bytes": p.stat().st_size, "kind": kind, **extra}


def verify_artifacts(root: Path, data: dict) -> list[str]:
    problems = []
    for key, art in data.get("artifacts", {}).items():
        p = Path(root) / art["path"]
        try:  # is_file() itself raises for a name the OS refuses (too long, say), not only for a missing file
            if not p.is_file():
                problems.append(f"artefact {_short(key)}: file {art['path']} is missing")
            elif p.stat().st_size != art["bytes"]:
                problems.append(
                    f"artefact {_short(key)}: {art['path']} is {p.stat().st_size} bytes, manifest says {art['bytes']}"
                )
            elif sha256_file(p) != art["sha256"]:
                problems.append(
                    f"artefact {_short(key)}: {art['path']} sha256 does not match the manifest (corrupt or replaced)"
                )
        except OSError as e:
            problems.append(f"artefact {_short(key)}: cannot read {_short(art['path'])} ({e.strerror or e})")
    return problems


# -------------------------------------------------------------------------------------------- access
@dataclass(frozen=True)
class Manifest:
    root: Path
    data: dict

    @property
    def classes(self) -> list[str]:
        return self.data["dataset"]["classes"]

    @property
    def palette(self) -> list[list[int]]:
        return self.data["dataset"]["palette"]

    @property
    def tile(self) -> int:
        return self.data["model"]["tile"]

    @property
    def num_classes(self) -> int:
        return self.data["model"]["num_classes"]

    @property
    def input(self) -> dict:
        return self.data["input"]

    @property
    def outputs(self) -> list[dict]:
        return self.data["outputs"]

    @property
    def batch(self) -> dict:
        return self.data["batch"]

    def onnx_path(self, precision: str = "fp32") -> Path:
        return self._path(f"onnx_{precision}", f"no {precision} ONNX in this bundle")

    def engine_path(self, precision: str = "fp16") -> Path:
        return self._path(
            f"engine_{precision}",
            f"no {precision} TensorRT engine in this bundle (build it with "
            f"`co2s-export --from-bundle {self.root} --engine {precision}`)",
        )

    def engine_info(self, precision: str = "fp16") -> dict:
        self.engine_path(precision)
        return self.data["artifacts"][f"engine_{precision}"].get("tensorrt", {})

    def has(self, key: str) -> bool:
        return key in self.data["artifacts"]

    def _path(self, key: str, missing: str) -> Path:
        art = self.data["artifacts"].get(key)
        if art is None:
            raise ManifestError(f"{self.root}: {missing}")
        return self.root / art["path"]


def read_manifest_json(bundle: str | Path) -> tuple[Path, dict]:
    root = Path(bundle)
    path = root / MANIFEST_NAME
    if not root.is_dir():
        raise ManifestError(f"{root}: bundle folder not found")
    if not path.is_file():
        raise ManifestError(f"{path}: manifest not found (is {root} a co2s bundle?)")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as e:
        raise ManifestError(f"{path}: cannot read ({e.strerror or e})") from None
    except RecursionError:
        raise ManifestError(f"{path}: not valid JSON (nested too deeply to be a manifest)") from None
    except ValueError as e:  # JSONDecodeError, bad UTF-8, and integers past Python's 4300-digit limit
        raise ManifestError(f"{path}: not valid JSON ({str(e)[:200]})") from None
    return root, data


def load_manifest(bundle: str | Path, *, verify_checksums: bool = True) -> Manifest:
    """Parse, validate against the schema, verify every artefact's size and sha256; raise ManifestError."""
    root, data = read_manifest_json(bundle)
    path = root / MANIFEST_NAME
    if isinstance(data, dict) and data.get("schema_version") not in (None, SCHEMA_VERSION):
        raise ManifestError(
            f"{path}: schema_version {data.get('schema_version')!r}; this co2s reads version {SCHEMA_VERSION}"
        )
    errors = schema_errors(data) or runtime_errors(data)
    if errors:
        more = f" (and {len(errors) - 5} more)" if len(errors) > 5 else ""
        raise ManifestError(f"{path}: does not match the manifest schema: {'; '.join(errors[:5])}{more}")
    if verify_checksums:
        problems = verify_artifacts(root, data)
        if problems:
            raise ManifestError(f"{root}: {'; '.join(problems)}")
    return Manifest(root, data)


def write_manifest(root: Path, data: dict) -> Path:
    """Validate, then write atomically (temporary name, then rename) so readers never see half a file."""
    import os
    import tempfile

    errors = schema_errors(data)
    if errors:
        raise ValueError(f"refusing to write an invalid manifest: {'; '.join(errors[:5])}")
    root = Path(root)
    fd, tmp = tempfile.mkstemp(prefix=".co2s.json.", suffix=".tmp", dir=root)
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(data, f, indent=2)
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~umask())  # mkstemp makes it private; the manifest is read by other users/services
        os.replace(tmp, root / MANIFEST_NAME)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return root / MANIFEST_NAME
