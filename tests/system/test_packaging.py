"""Packaging: every stage subpackage is listed in pyproject.toml, so a regular (non-editable) install has it."""

from __future__ import annotations

import re

import tomllib
from conftest import REPO_ROOT


def test_every_subpackage_is_declared():
    cfg = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    declared = set(cfg["packages"])
    for prefix, folder in cfg["package-dir"].items():
        for init in (REPO_ROOT / folder).rglob("__init__.py"):
            rel = init.parent.relative_to(REPO_ROOT / folder)
            name = ".".join([prefix, *rel.parts])
            assert name in declared, f"{name} ({init.parent}) is missing from [tool.setuptools] packages"


def _extra_dists(extras: dict, name: str) -> set[str]:
    """The distributions an extra installs by itself, through the co2s[...] extras it includes."""
    out = set()
    for req in extras[name]:
        dist = re.split(r"[<>=~;\[ ]", req, maxsplit=1)[0].lower().replace("_", "-")
        if dist == "co2s":
            for inner in re.search(r"\[(.*?)\]", req).group(1).split(","):
                out |= _extra_dists(extras, inner.strip())
        else:
            out.add(dist)
    return out


def test_no_extra_installs_two_onnxruntimes():
    """onnxruntime and onnxruntime-gpu install the same `onnxruntime` package folder and break each other, so the
    base install has neither and every extra at most one; onnxruntime-gpu's TensorRT provider links
    libnvinfer.so.10, so the extra that brings it pins TensorRT 10."""
    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]
    base = {re.split(r"[<>=~;\[ ]", d, maxsplit=1)[0].lower() for d in project["dependencies"]}
    assert not {d for d in base if d.startswith("onnxruntime")}, base
    extras = project["optional-dependencies"]
    for name in extras:
        dists = _extra_dists(extras, name)
        assert not {"onnxruntime", "onnxruntime-gpu"} <= dists, f"[{name}] installs both onnxruntimes"
        if "onnxruntime-gpu" in dists:
            trt = [r for r in extras[name] if r.startswith("tensorrt")]
            assert trt and all("<11" in r for r in trt), f"[{name}]: {trt} must stay on TensorRT 10"
    assert "onnxruntime" in _extra_dists(extras, "dev")  # make test runs the CPU backend
