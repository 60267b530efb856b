"""Packaging: every stage subpackage is listed in pyproject.toml, so a regular (non-editable) install has it."""

from __future__ import annotations

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
