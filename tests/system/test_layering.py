"""The layers run one way and no module imports itself in a circle.

`co2s` core (errors, files, bundle, metrics, cli) <- `co2s.runtime` and `co2s.train`; `co2s.export` is the only
stage that sees both. The runtime also never imports torch, timm or open_clip (it installs on a Jetson without
them). Read from the source with `ast`, so a lazy import inside a function counts too. (The console entry points
in `co2s.cli` name their stage by string, through importlib, so that the core imports no stage.)
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
from conftest import REPO_ROOT

PACKAGE_DIRS = {"co2s": "co2s_pkg", "co2s.train": "train", "co2s.export": "export", "co2s.runtime": "runtime"}
STAGES = ("co2s.train", "co2s.export", "co2s.runtime")
# what each layer may import from the project (besides itself)
ALLOWED = {
    "co2s": set(),
    "co2s.train": {"co2s"},
    "co2s.runtime": {"co2s"},
    "co2s.export": {"co2s", "co2s.train", "co2s.runtime"},
}
RUNTIME_FORBIDDEN = ("torch", "torchvision", "timm", "open_clip")


def _modules() -> dict[str, Path]:
    mods = {}
    for pkg, folder in PACKAGE_DIRS.items():
        base = REPO_ROOT / folder
        for path in base.rglob("*.py"):
            rel = path.relative_to(base).with_suffix("")
            parts = [p for p in rel.parts if p != "__init__"]
            name = ".".join([pkg, *parts])
            if pkg == "co2s" and parts and f"co2s.{parts[0]}" in PACKAGE_DIRS:
                continue  # a stage folder nested in the core folder would be a packaging error, not ours to judge
            mods[name] = path
    return mods


MODULES = _modules()


def _layer(module: str) -> str:
    for stage in STAGES:
        if module == stage or module.startswith(stage + "."):
            return stage
    return "co2s"


def _imports(module: str, path: Path, *, top_level_only: bool) -> list[str]:
    """Absolute names of what `module` imports (resolving relative imports; `from pkg import sub` gives `pkg.sub`
    when `sub` is a module)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    is_pkg = path.name == "__init__.py"
    base = module.split(".") if is_pkg else module.split(".")[:-1]
    nodes = tree.body if top_level_only else list(ast.walk(tree))
    if top_level_only:  # module level, including inside if/try blocks, but not inside functions or classes
        nodes, stack = [], list(tree.body)
        while stack:
            n = stack.pop()
            nodes.append(n)
            if isinstance(n, (ast.If, ast.Try, ast.With)):
                stack.extend(ast.iter_child_nodes(n))
    out = []
    for n in nodes:
        if isinstance(n, ast.Import):
            out += [a.name for a in n.names]
        elif isinstance(n, ast.ImportFrom):
            if n.level:
                prefix = base[: len(base) - (n.level - 1)]
                target = ".".join(prefix + ([n.module] if n.module else []))
            else:
                target = n.module or ""
            out.append(target)
            out += [f"{target}.{a.name}" for a in n.names if f"{target}.{a.name}" in MODULES]
    return out


def _project(name: str) -> bool:
    return name == "co2s" or name.startswith("co2s.")


def test_the_package_folders_were_found():
    assert {"co2s.errors", "co2s.files", "co2s.train.cli", "co2s.export.cli", "co2s.runtime.cli"} <= set(MODULES)


@pytest.mark.parametrize("module", sorted(MODULES))
def test_imports_run_one_way(module):
    layer = _layer(module)
    bad = []
    for name in _imports(module, MODULES[module], top_level_only=False):
        if _project(name) and _layer(name) != layer and _layer(name) not in ALLOWED[layer]:
            bad.append(name)
        if layer == "co2s.runtime" and name.split(".")[0] in RUNTIME_FORBIDDEN:
            bad.append(name)
        if layer == "co2s" and name.split(".")[0] in RUNTIME_FORBIDDEN:
            bad.append(name)
    assert not bad, f"{module} ({layer}) imports {sorted(set(bad))}, against the layering"


def test_no_import_circles():
    graph = {
        m: {n for n in _imports(m, p, top_level_only=False) if n in MODULES and n != m} for m, p in MODULES.items()
    }
    # lazy imports count: a circle hidden inside a function is still two modules that cannot be read one at a time
    index, low, on_stack, stack, cycles, counter = {}, {}, set(), [], [], [0]

    def visit(v):  # Tarjan's strongly connected components
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                cycles.append(sorted(comp))

    for v in graph:
        if v not in index:
            visit(v)
    assert not cycles, "import circles: " + "; ".join(" <-> ".join(c) for c in cycles)
