"""The user's cache folder: what the runtime keeps between runs, never inside the bundle (it may be read-only).

ort-trt/<sha>-<precision>/   engines and timing caches of onnxruntime's TensorRT EP
ort-graphs/<key>/            optimised CPU graphs (graph_cache.py)
precision/<key>.json         what `--precision auto` measured on this CPU (choose.py)
"""

from __future__ import annotations

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
