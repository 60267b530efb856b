"""The user's cache folder: what the runtime keeps between runs, never inside the bundle (it may be read-only).

ort-trt/<sha>-<precision>/   engines and timing caches of onnxruntime's TensorRT EP
ort-graphs/<key>/            optimised CPU graphs (graph_cache.py)
precision/<key>.json         what `--precision auto` measured on this CPU (choose.py)
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path


def cache_dir() -> Path:
    """$CO2S_CACHE_DIR, else $XDG_CACHE_HOME/co2s, else ~/.cache/co2s."""
    base = os.environ.get("CO2S_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"), "co2s"
    )
    return Path(base)


def shown(path: Path) -> str:
    """`path` as messages print it: ~/… under the home folder."""
    home, s = os.path.expanduser("~"), str(path)
    return "~" + s[len(home) :] if home not in ("", "/") and s.startswith(home + os.sep) else s


def key_digest(key: dict) -> str:
    """A file name for a cache key (a JSON-able dict): the key itself is stored inside and checked on reading."""
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:24]


def read_record(path: Path, schema: str, key: dict) -> tuple[dict | None, str | None]:
    """The JSON record at `path` made for `key`: (record, None); (None, None) when there is none yet (or no cache
    folder: writing it says so); (None, why) when the file is there but unusable: unreadable, not JSON, another
    schema, or another key (the why names what differs)."""
    try:
        text = path.read_text(encoding="utf-8")
    except (FileNotFoundError, NotADirectoryError):
        return None, None
    except (OSError, UnicodeDecodeError) as e:
        return None, f"cannot read {path.name} ({getattr(e, 'strerror', None) or e})"
    try:
        record = json.loads(text)
    except json.JSONDecodeError as e:
        return None, f"{path.name} is not valid JSON ({e.msg}, line {e.lineno})"
    if not isinstance(record, dict) or record.get("schema") != schema:
        return None, f"{path.name} is not a {schema} record"
    if record.get("key") != key:
        return None, f"{path.name} {_differences(record.get('key'), key)}"
    return record, None


def _differences(old, new: dict) -> str:
    """'was made for onnxruntime '1.20.0', this run has '1.22.0'': only the parts of the key that differ."""
    if not isinstance(old, dict):
        return "records no key"
    diff = [k for k in new if old.get(k) != new[k]] or sorted(set(old) - set(new))
    was = ", ".join(f"{k} {old.get(k)!r}" for k in diff)
    now = ", ".join(f"{k} {new.get(k)!r}" for k in diff)
    return f"was made for {was}, this run has {now}"
