"""The bundle manifest `co2s.json`: its schema, reading (parse + validation) and writing (stdlib only).

A bundle is a folder: this manifest (schema: co2s_manifest.schema.json beside this file) and the artefacts it
lists, one row of `formats.FORMATS` each (`co2s-export --list-formats`): `model.<p>.onnx` (fp32 always),
external weights beside a model over 2 GB, TensorRT plans `model.<p>.engine` and `timing.cache` built on the
target.

`read_manifest` parses the JSON and validates it (a small built-in validator for the subset of JSON Schema the
file uses, so the runtime needs no `jsonschema`, then the cross-field rules the schema cannot say); `view.py`
turns the result into the typed `Bundle`. Checksums are checked there, per artefact.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from co2s.errors import Co2SInputError
from co2s.files import atomic_write

from .checksum import sha256_file
from .formats import Format, get_format

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
# these are the fields the runtime reads from it (the typed view in view.py, the TensorRT backend's compatibility
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


def validate_manifest(data) -> list[str]:
    """Every problem of a parsed manifest as 'field: problem' ([] when it is valid): the schema first, then what
    a schema-valid manifest still needs: fields that agree with each other (the stitcher sizes its buffers from
    the class list, the model from num_classes), artefacts that are rows of the formats table under their own
    key, and well-formed TensorRT records."""
    errors = schema_errors(data)
    if errors:
        return errors
    n, classes = data["model"]["num_classes"], data["dataset"]["classes"]
    if len(classes) != n:
        errors.append(f"dataset.classes: {len(classes)} names, but model.num_classes is {n}")
    b = data["batch"]
    if not b["min"] <= b["opt"] <= b["max"]:
        errors.append(f"batch: expected min <= opt <= max, got {b['min']}, {b['opt']}, {b['max']}")
    for key, art in data["artifacts"].items():
        where = f"artifacts.{key if len(key) <= 60 else key[:60] + '...'}"
        kind, precision = art["kind"], art.get("precision")
        try:
            fmt = get_format(kind, precision)
        except KeyError:
            errors.append(f"{where}: no bundle format has kind {kind!r} and precision {precision!r}")
            continue
        if key != fmt.key:
            errors.append(f"{where}: kind {kind!r} with precision {precision!r} is stored under the key {fmt.key!r}")
        if "tensorrt" in art:
            errors += schema_errors(art["tensorrt"], TENSORRT_SCHEMA, at=f"{where}.tensorrt")
    return errors


def read_manifest(bundle: str | Path) -> dict:
    """The manifest of the bundle folder `bundle`, parsed and validated; ManifestError names the file and field."""
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
    if isinstance(data, dict) and data.get("schema_version") not in (None, SCHEMA_VERSION):
        raise ManifestError(
            f"{path}: schema_version {_short(data.get('schema_version'))}; this co2s reads version {SCHEMA_VERSION}"
        )
    errors = validate_manifest(data)
    if errors:
        more = f" (and {len(errors) - 5} more)" if len(errors) > 5 else ""
        raise ManifestError(f"{path}: does not match the manifest schema: {'; '.join(errors[:5])}{more}")
    return data


def artefact_record(root: str | Path, fmt: Format, *, source: str | None = None, **extra) -> dict:
    """The manifest record of `fmt`'s file in `root` (checksummed from `source`, a temporary name it is about to be
    renamed from, when given); `extra` adds fields such as nodes, opset or the TensorRT build record."""
    p = Path(root) / (source or fmt.filename)
    record = {"path": fmt.filename, "sha256": sha256_file(p), "bytes": p.stat().st_size, "kind": fmt.kind}
    if fmt.precision is not None:
        record["precision"] = fmt.precision
    return {**record, **extra}


def write_manifest(root: str | Path, data: dict, *, what: str = "cannot write the manifest") -> Path:
    """Validate, then write atomically, so readers never see half a file; a write failure is a Co2SOutputError
    reading `<root>/co2s.json: <what>: <reason>`."""
    errors = validate_manifest(data)
    if errors:
        raise ValueError(f"refusing to write an invalid manifest: {'; '.join(errors[:5])}")
    path = Path(root) / MANIFEST_NAME
    atomic_write(path, lambda f: f.write((json.dumps(data, indent=2) + "\n").encode("utf-8")), what=what)
    return path
