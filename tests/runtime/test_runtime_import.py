"""co2s.runtime imports and runs end to end with torch, timm and open_clip made unimportable."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import numpy as np
from fakes.runtime import make_bundle
from PIL import Image

BLOCKER = textwrap.dedent("""
    import importlib.abc, sys
    BLOCKED = {"torch", "timm", "open_clip", "torchvision"}

    class Blocker(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in BLOCKED:
                raise ImportError(f"{name} is blocked: co2s.runtime must not need it")
            return None

    for name in BLOCKED:
        sys.modules[name] = None  # `import torch` now raises ImportError
    sys.meta_path.insert(0, Blocker())
""")


def _run(code: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", BLOCKER + textwrap.dedent(code)], capture_output=True, text=True, timeout=300
    )


def test_every_runtime_module_imports_without_torch():
    r = _run("""
        import pkgutil, importlib
        import co2s.runtime as rt
        names = [m.name for m in pkgutil.walk_packages(rt.__path__, "co2s.runtime.")]
        assert "co2s.runtime.cli" in names and "co2s.runtime.backends.tensorrt" in names, names
        for n in names:
            importlib.import_module(n)
        leaked = sorted(m for m in sys.modules if m and m.split(".")[0] in BLOCKED and sys.modules[m] is not None)
        assert not leaked, leaked
        print("imported", len(names))
    """)
    assert r.returncode == 0, r.stderr
    assert "imported" in r.stdout


def test_cli_runs_inference_without_torch(tmp_path):
    bundle = make_bundle(tmp_path / "b", tile=32, probs=True)
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (50, 70, 3), dtype=np.uint8)).save(tmp_path / "a.png")
    r = _run(f"""
        from co2s.runtime.cli import infer_main, bench_main
        for main, args in ((infer_main, [{str(bundle)!r}, {str(tmp_path / "a.png")!r}, "--out", {str(tmp_path / "out")!r}, "-q"]),
                           (bench_main, [{str(bundle)!r}, "--calls", "2", "--warmup", "1"])):
            try:
                main(args)
            except SystemExit as e:
                assert e.code == 0, e.code
        assert not [m for m in sys.modules if m.split(".")[0] in BLOCKED and sys.modules[m] is not None]
    """)
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "out" / "a.labels.png").is_file()
