"""tests/runtime/: the shared helpers one folder up (runtime_fakes, ...) are importable from here as well."""

import sys
from pathlib import Path

HELPERS = str(Path(__file__).resolve().parents[1])
if HELPERS not in sys.path:
    sys.path.insert(0, HELPERS)
