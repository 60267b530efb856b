"""Which members of the GPU libraries our source uses, found by reading it (ast), typed through the recorded API.

Names `trt`/`cuda`/`cudart`/`ort` (and `self._trt`, ...) are the modules. From there every attribute and call is
followed through the recorded return and property types: `trt.Runtime(...)` is a Runtime, its
`deserialize_cuda_engine(...)` an ICudaEngine, assigned to `self.engine`, whose `get_tensor_shape` ... Attributes of
our own classes are typed from their `self.x = ...` assignments and from parameter annotations (`slot: _Slot`).
Each use is checked in every recorded version of its library; a member one version lacks is accepted only where
the file tests for it with `hasattr(..., "NAME")`.
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass, field
from pathlib import Path

from .api import Api, api_keys

ROOTS = {"trt": "tensorrt", "cuda": "pycuda", "cudart": "cudart", "ort": "onnxruntime"}


@dataclass(frozen=True)
class T:
    """A static type: kind is module | class | instance | function | method | list | tuple."""

    kind: str
    family: str = ""
    name: str = ""
    items: tuple = ()


@dataclass
class Use:
    file: str
    line: int
    family: str
    owner: str  # the class, or "" for the module
    member: str
    store: bool = False


@dataclass
class Report:
    uses: list[Use] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)


def parse_type(family: str, typ: str | None) -> T | None:
    """A recorded type string as a T (None when it names nothing we can follow)."""
    if not typ:
        return None
    typ = typ.strip()
    m = re.match(r"^(?:List|list|typing\.List|Sequence|typing\.Sequence)\[(.*)\]$", typ)
    if m:
        inner = parse_type(family, m.group(1))
        return T("list", family, items=(inner,)) if inner else None
    m = re.match(r"^tuple\[(.*)\]$", typ)
    if m:
        return T("tuple", family, items=tuple(parse_type(family, t) for t in m.group(1).split(", ")))
    api = Api(api_keys(family)[-1])
    if typ in api.classes:
        return T("instance", family, typ)
    return None


class Checker(ast.NodeVisitor):
    def __init__(self, path: Path, report: Report):
        self.path, self.report = path, report
        self.tree = ast.parse(path.read_text())
        self.guarded = {
            n.args[1].value
            for n in ast.walk(self.tree)
            if isinstance(n, ast.Call)
            and getattr(n.func, "id", None) == "hasattr"
            and len(n.args) == 2
            and isinstance(n.args[1], ast.Constant)
        }
        self.local_classes = {n.name: n for n in ast.walk(self.tree) if isinstance(n, ast.ClassDef)}
        self.attrs: dict[str, dict[str, T]] = {c: {} for c in self.local_classes}  # self.x types per class
        self.apis = {f: [Api(k) for k in api_keys(f)] for f in ROOTS.values()}
        # argument types seen at calls of our own classes and methods: (class, function) -> {parameter: type}
        self.call_args: dict[tuple[str, str], dict[str, T]] = {}

    # ------------------------------------------------------------------ lookup
    def member(self, family: str, owner: str, name: str, node: ast.AST, store: bool = False) -> dict | None:
        """The recorded member (from the newest version), after checking it exists in every version."""
        found = None
        for api in self.apis[family]:
            m = api.module_member(name) if owner == "" else api.member(owner, name)
            if m is None:
                if name not in self.guarded:
                    where = f"{self.path.name}:{node.lineno}"
                    self.report.missing.append(f"{where}: {api.key} has no {owner + '.' if owner else ''}{name}")
            elif store and (m.get("kind") != "property" or not m.get("writable")):
                self.report.missing.append(f"{self.path.name}:{node.lineno}: {api.key} {owner}.{name} is not writable")
            else:
                found = m
        self.report.uses.append(Use(self.path.name, node.lineno, family, owner, name, store))
        return found

    def attribute(self, base: T | None, name: str, node: ast.AST, store: bool = False) -> T | None:
        if base is None:
            return None
        if base.kind == "local":
            return self.attrs.get(base.name, {}).get(name)
        if base.kind == "module":
            m = self.member(base.family, "", name, node, store)
            if m is None:
                return None
            if m["kind"] == "class":
                return T("class", base.family, m["class"])
            if m["kind"] == "class_alias":
                return T("class", base.family, m["class"])
            if m["kind"] == "function":
                return T("function", base.family, name, (tuple(m["signatures"]),))
            if m["kind"] == "value":
                return parse_type(base.family, m.get("type"))
            return None
        if base.kind in ("class", "instance"):
            m = self.member(base.family, base.name, name, node, store)
            if m is None:
                return None
            if m["kind"] in ("method", "static"):
                return T("method", base.family, base.name, (tuple(m.get("signatures", ())),))
            if m["kind"] == "class":
                return T("class", base.family, m["class"])
            return parse_type(base.family, m.get("type"))
        return None

    # ------------------------------------------------------------------ expressions
    def expr(self, node: ast.AST | None, env: dict) -> T | None:
        if node is None:
            return None
        if isinstance(node, ast.Name):
            if node.id in ROOTS:
                return T("module", ROOTS[node.id])
            return env.get(node.id)
        if isinstance(node, ast.Attribute):
            if node.attr.startswith("_") and node.attr.lstrip("_") in ROOTS:  # self._trt, backend._cuda
                return T("module", ROOTS[node.attr.lstrip("_")])
            return self.attribute(self.expr(node.value, env), node.attr, node, isinstance(node.ctx, ast.Store))
        if isinstance(node, (ast.Tuple, ast.List)) and isinstance(node.ctx, ast.Load):
            items = tuple(self.expr(e.value if isinstance(e, ast.Starred) else e, env) for e in node.elts)
            if isinstance(node, ast.Tuple):
                return T("tuple", items=items)
            return T("list", items=(next((i for i in items if i is not None), None),))
        if isinstance(node, ast.Call):
            if getattr(node.func, "id", None) == "getattr" and len(node.args) >= 2:
                if isinstance(node.args[1], ast.Constant):
                    return self.attribute(self.expr(node.args[0], env), node.args[1].value, node)
            f = self.expr(node.func, env)
            args = [self.expr(a, env) for a in node.args]
            kwargs = {k.arg: self.expr(k.value, env) for k in node.keywords}
            self.note_call(node.func, env, args, kwargs)
            if f is None:
                return None
            if f.kind == "class":
                return T("instance", f.family, f.name)
            if f.kind in ("function", "method") and f.items and f.items[0]:
                ret = f.items[0][0].get("returns")
                if ret == "self":
                    return self.expr(node.func.value, env) if isinstance(node.func, ast.Attribute) else None
                return parse_type(f.family, ret)
            return None
        if isinstance(node, ast.Subscript):
            base = self.expr(node.value, env)
            self.expr(node.slice, env)
            if base is None:
                return None
            if base.kind == "list":
                return base.items[0]
            if base.kind == "tuple" and isinstance(node.slice, ast.Constant) and isinstance(node.slice.value, int):
                return base.items[node.slice.value] if node.slice.value < len(base.items) else None
            return None
        if isinstance(node, (ast.ListComp, ast.GeneratorExp, ast.SetComp)):
            inner = dict(env)
            for gen in node.generators:
                self.bind_target(gen.target, self.element(self.expr(gen.iter, inner)), inner)
                for cond in gen.ifs:
                    self.expr(cond, inner)
            elt = self.expr(node.elt, inner)
            return T("list", items=(elt,)) if elt else None
        if isinstance(node, ast.DictComp):
            inner = dict(env)
            for gen in node.generators:
                self.bind_target(gen.target, self.element(self.expr(gen.iter, inner)), inner)
            self.expr(node.key, inner)
            self.expr(node.value, inner)
            return None
        if isinstance(node, ast.Lambda):
            self.expr(node.body, dict(env))
            return None
        for child in ast.iter_child_nodes(node):
            self.expr(child, env)
        return None

    def note_call(self, func: ast.AST, env: dict, args: list, kwargs: dict) -> None:
        """Remember argument types passed to our own classes (their __init__) and to `self.method(...)`."""
        if isinstance(func, ast.Name) and func.id in self.local_classes:
            key = (func.id, "__init__")
        elif isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name):
            base = env.get(func.value.id)
            if base is None or base.kind != "local":
                return
            key = (base.name, func.attr)
        else:
            return
        fn = next(
            (
                n
                for n in self.local_classes[key[0]].body
                if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)) and n.name == key[1]
            ),
            None,
        )
        if fn is None:
            return
        params = [a.arg for a in fn.args.posonlyargs + fn.args.args][1:]
        seen = self.call_args.setdefault(key, {})
        for name, t in [*zip(params, args), *kwargs.items()]:
            if t is not None:
                seen[name] = t

    @staticmethod
    def element(t: T | None) -> T | None:
        return t.items[0] if t is not None and t.kind == "list" and t.items else None

    def bind_target(self, target: ast.AST, t: T | None, env: dict, cls: str | None = None) -> None:
        if isinstance(target, ast.Name):
            if t is not None:
                env[target.id] = t
            else:
                env.pop(target.id, None)
        elif isinstance(target, (ast.Tuple, ast.List)):
            for i, elt in enumerate(target.elts):
                item = t.items[i] if t is not None and t.kind == "tuple" and i < len(t.items) else None
                self.bind_target(elt.value if isinstance(elt, ast.Starred) else elt, item, env, cls)
        elif isinstance(target, ast.Attribute):
            if isinstance(target.value, ast.Name) and target.value.id == "self" and cls:
                if t is not None:
                    self.attrs[cls][target.attr] = t
            else:
                self.expr(target, env)
        else:
            self.expr(target, env)

    def annotation(self, node: ast.AST | None) -> T | None:
        if node is None:
            return None
        text = ast.unparse(node).replace('"', "").replace("'", "")
        m = re.match(r"^(?:list|List|Iterable)\[(\w+)\]", text)
        if m and m.group(1) in self.local_classes:
            return T("list", items=(T("local", name=m.group(1)),))
        name = text.split(" | ")[0]
        return T("local", name=name) if name in self.local_classes else None

    # ------------------------------------------------------------------ statements
    def block(self, body: list[ast.stmt], env: dict, cls: str | None) -> None:
        for stmt in body:
            self.statement(stmt, env, cls)

    def statement(self, stmt: ast.stmt, env: dict, cls: str | None) -> None:
        if isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef)):
            inner = dict(env)
            if cls:
                inner["self"] = T("local", name=cls)
            passed = self.call_args.get((cls or "", stmt.name), {})
            for a in stmt.args.posonlyargs + stmt.args.args + stmt.args.kwonlyargs:
                if a.arg in ROOTS:
                    continue
                t = self.annotation(a.annotation) or passed.get(a.arg)
                if t is not None:
                    inner[a.arg] = t
            for d in stmt.args.defaults + stmt.args.kw_defaults:
                self.expr(d, env)
            self.block(stmt.body, inner, cls)
        elif isinstance(stmt, ast.ClassDef):
            self.block(stmt.body, {k: v for k, v in env.items() if k != "self"}, stmt.name)
        elif isinstance(stmt, ast.Assign):
            t = self.expr(stmt.value, env)
            for target in stmt.targets:
                self.bind_target(target, t, env, cls)
        elif isinstance(stmt, ast.AnnAssign):
            t = self.expr(stmt.value, env) if stmt.value else None
            self.bind_target(stmt.target, t or self.annotation(stmt.annotation), env, cls)
        elif isinstance(stmt, ast.AugAssign):
            self.expr(stmt.value, env)
            self.expr(stmt.target, env)
        elif isinstance(stmt, ast.For):
            self.bind_target(stmt.target, self.element(self.expr(stmt.iter, env)), env, cls)
            self.block(stmt.body, env, cls)
            self.block(stmt.orelse, env, cls)
        elif isinstance(stmt, ast.With):
            for item in stmt.items:
                t = self.expr(item.context_expr, env)
                if item.optional_vars is not None:
                    self.bind_target(item.optional_vars, t, env, cls)
            self.block(stmt.body, env, cls)
        elif isinstance(stmt, ast.Try):
            self.block(stmt.body, env, cls)
            for h in stmt.handlers:
                self.expr(h.type, env)
                self.block(h.body, env, cls)
            self.block(stmt.orelse, env, cls)
            self.block(stmt.finalbody, env, cls)
        elif isinstance(stmt, (ast.If, ast.While)):
            self.expr(stmt.test, env)
            self.block(stmt.body, env, cls)
            self.block(stmt.orelse, env, cls)
        elif isinstance(stmt, (ast.Import, ast.ImportFrom)):
            pass
        else:
            for child in ast.iter_child_nodes(stmt):
                if isinstance(child, ast.expr):
                    self.expr(child, env)

    def run(self) -> None:
        # twice: the second pass sees `self.x` types assigned in methods defined after their first use; the uses
        # and findings of the first pass are dropped (the second sees all of them, better typed)
        start, found = len(self.report.uses), len(self.report.missing)
        self.block(self.tree.body, {}, None)
        del self.report.uses[start:], self.report.missing[found:]
        self.block(self.tree.body, {}, None)
        self.report.missing[found:] = list(dict.fromkeys(self.report.missing[found:]))


def check_files(paths: list[Path]) -> Report:
    report = Report()
    for p in paths:
        Checker(p, report).run()
    return report
