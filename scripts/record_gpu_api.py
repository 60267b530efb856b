"""Record the real Python API of TensorRT, pycuda, cuda-python and onnxruntime into tests/data/gpu_api.json.

The tests never run this: they read the JSON it wrote, so that the TensorRT/pycuda/cuda-python fakes in
tests/fakes/ cannot offer a member, or accept a call, that the real API does not (and so that a test can fail on
our code using something the real API lacks). Rerun it when a supported version changes or the code starts using
a class that is not recorded yet; commit the JSON it writes.

What it reads, and how, without a GPU:

* TensorRT 10.3 (JetPack 6.2's) and the newest 11.x: the PyPI wheels `tensorrt-cu12-bindings==10.3.*` and
  `tensorrt-cu13-bindings` (`pip download --no-deps`). Their `tensorrt.so` links three native libraries
  (libnvinfer, libnvonnxparser, libnvinfer_plugin) that are not in the wheel; the script compiles empty stand-ins
  with those sonames (`gcc -shared`, one no-op C function per symbol the bindings import, read with `nm -D`), so
  the module imports. Nothing is ever called: it only reads each member's pybind11 signature (`__doc__`, one line
  per overload) in a child process with LD_LIBRARY_PATH pointing at the stand-ins.
* pycuda: the sdist (`pip download --no-deps --no-binary pycuda pycuda`); the members come from its Boost.Python
  wrapper source (src/wrapper/wrap_cudadrv.cpp: `py::class_`, `.def`, `py::arg`, `add_property`, `py::def`,
  `staticmethod`), return types from the C++ declarations in src/cpp/cuda.hpp, and the Python-level additions
  from pycuda/driver.py. `#if CUDAPP_CUDA_VERSION >= N` blocks are kept for CUDA 12 (JetPack 6.2 has 12.6).
* cuda-python's runtime bindings (`cuda.bindings.runtime`, used for CUDA graphs): the installed cuda-bindings 13.x
  and the wheel `cuda-python==12.6.*` (JetPack 6.2's CUDA 12.6; it still has the old `cuda.cudart` path too): signatures from the Cython `__text_signature__`/doc and
  the numpydoc "Returns" section (every call returns a tuple: the error code, then the outputs).
* onnxruntime: the installed package (InferenceSession, SessionOptions, OrtValue, IOBinding, NodeArg, ...).

Usage:  python scripts/record_gpu_api.py [--work /tmp/co2s-gpu-api] [--out tests/data/gpu_api.json]
Needs network access to PyPI (pip download), gcc and nm (binutils). Downloads go to --work, never the repo.
"""

from __future__ import annotations

import argparse
import ast
import ctypes
import glob
import inspect
import json
import os
import re
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "tests" / "data" / "gpu_api.json"
FORMAT = 1

TENSORRT_WHEELS = {"tensorrt-10.3": "tensorrt-cu12-bindings==10.3.*", "tensorrt-11": "tensorrt-cu13-bindings"}
CUDA_BINDINGS_WHEEL = "cuda-python==12.6.*"  # before 12.8 the bindings shipped inside cuda-python itself
PYCUDA_SDIST = "pycuda"

# cuda.bindings.runtime is large (hundreds of functions, thousands of enum values): record what a CUDA-graph
# path can use, and the enums those take or return
CUDART_FUNCTIONS = (
    "cudaGetErrorName",
    "cudaGetErrorString",
    "cudaGetDeviceProperties",
    "cudaStreamCreateWithFlags",
    "cudaStreamDestroy",
    "cudaStreamSynchronize",
    "cudaStreamBeginCapture",
    "cudaStreamEndCapture",
    "cudaStreamIsCapturing",
    "cudaStreamGetCaptureInfo",
    "cudaThreadExchangeStreamCaptureMode",
    "cudaGraphInstantiate",
    "cudaGraphInstantiateWithFlags",
    "cudaGraphLaunch",
    "cudaGraphExecDestroy",
    "cudaGraphDestroy",
    "cudaGraphUpload",
    "cudaDeviceSynchronize",
)
CUDART_CLASSES = (
    "cudaError_t",
    "cudaStreamCaptureMode",
    "cudaStreamCaptureStatus",
    "cudaGraphInstantiateFlags",
    "cudaStream_t",
    "cudaGraph_t",
    "cudaGraphExec_t",
    "cudaDeviceProp",
)
CUDART_VALUES = ("cudaStreamNonBlocking", "cudaStreamDefault")

ORT_NAMES = (
    "__version__",
    "get_available_providers",
    "get_all_providers",
    "get_device",
    "preload_dlls",
    "InferenceSession",
    "SessionOptions",
    "RunOptions",
    "GraphOptimizationLevel",
    "ExecutionMode",
    "OrtValue",
    "IOBinding",
    "NodeArg",
    "SessionIOBinding",
)


# --------------------------------------------------------------------------------------------------- signatures
def split_top(text: str, sep: str = ",") -> list[str]:
    """Split at `sep` outside brackets and quotes (pybind defaults and types nest: `List[int]`, `<X.A: 0>`)."""
    out, depth, cur, quote = [], 0, [], None
    for ch in text:
        if quote:
            cur.append(ch)
            if ch == quote:
                quote = None
            continue
        if ch in "'\"":
            quote = ch
        elif ch in "([{<":
            depth += 1
        elif ch in ")]}>":
            depth -= 1
        elif ch == sep and depth == 0:
            out.append("".join(cur).strip())
            cur = []
            continue
        cur.append(ch)
    if "".join(cur).strip():
        out.append("".join(cur).strip())
    return out


class Names:
    """Turns the module paths in recorded type names into the names the JSON uses (`tensorrt_bindings.tensorrt.X`,
    `nvinfer1::X` -> `X`), so every version of one API spells its own classes the same way."""

    def __init__(self, prefixes: tuple[str, ...]):
        self.prefixes = prefixes

    def __call__(self, t: str) -> str:
        t = t.strip()
        for p in self.prefixes:
            t = re.sub(rf"(?<![\w.]){re.escape(p)}", "", t)
        t = re.sub(r"\bnvinfer1::", "", t)
        t = re.sub(r"\bnvonnxparser::", "", t)
        return {"NoneType": "None"}.get(t, t)


def parse_params(text: str, names: Names, drop_first: bool) -> list[list]:
    """`a: int, b: str = 'x'` -> [["a", "int", None], ["b", "str", "'x'"]]; `*args`/`**kwargs` keep their stars."""
    params = []
    for i, part in enumerate(split_top(text)):
        if drop_first and i == 0:
            continue
        if part in ("*", "/"):
            params.append([part, None, None])
            continue
        default = None
        if "=" in part and not part.startswith("**"):
            bits = split_top(part, "=")
            if len(bits) == 2:
                part, default = bits[0].strip(), bits[1].strip()
        name, _, typ = part.partition(":")
        params.append([name.strip(), names(typ) if typ.strip() else None, default])
    return params


def pybind_signatures(func, name: str, names: Names, method: bool) -> list[dict]:
    """Every overload pybind11 documents for `func`: `[1. ]name(self: C, a: T = d) -> R`."""
    doc = getattr(func, "__doc__", None) or ""
    sigs = []
    pattern = re.compile(rf"^(?:\d+\. )?{re.escape(name)}\((.*)\) -> (.*)$")
    for line in doc.splitlines():
        m = pattern.match(line.strip())
        if m is None or m.group(1) == "*args, **kwargs" and "Overloaded function." in doc:
            continue
        sigs.append({"params": parse_params(m.group(1), names, drop_first=method), "returns": names(m.group(2))})
    return sigs


def property_type(prop, names: Names) -> str | None:
    doc = (getattr(prop.fget, "__doc__", None) or "").strip().splitlines()
    m = re.match(r"^\((.*)\) -> (.*)$", doc[0]) if doc else None
    return names(m.group(2)) if m else None


def python_signature(func, names: Names, method: bool) -> list[dict]:
    try:
        sig = inspect.signature(func)
    except (TypeError, ValueError):
        return []
    params = []
    for i, p in enumerate(sig.parameters.values()):
        if method and i == 0 and p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD):
            continue  # the instance, whatever it is called (`this` in tensorrt's __enter__)
        star = {p.VAR_POSITIONAL: "*", p.VAR_KEYWORD: "**"}.get(p.kind, "")
        if p.kind is p.KEYWORD_ONLY and not any(q[0].startswith("*") for q in params):
            params.append(["*", None, None])
        ann = (
            None if p.annotation is p.empty else (p.annotation if isinstance(p.annotation, str) else repr(p.annotation))
        )
        default = None if p.default is p.empty else repr(p.default)
        params.append([star + p.name, names(ann) if ann else None, default])
    ret = sig.return_annotation
    returns = None if ret is sig.empty else names(ret if isinstance(ret, str) else getattr(ret, "__name__", repr(ret)))
    return [{"params": params, "returns": returns}]


# --------------------------------------------------------------------------------------------- pybind11 modules
def describe_pybind_class(cls, names: Names, qual: str, classes: dict) -> None:
    members: dict = {}
    for key, value in cls.__dict__.items():
        kind = type(value).__name__
        if key.startswith(("__pybind11", "_pybind11")) or key in (
            "__doc__",
            "__module__",
            "__entries",
            "__dict__",
            "__weakref__",
        ):
            continue
        if isinstance(value, property):
            members[key] = {"kind": "property", "type": property_type(value, names), "writable": value.fset is not None}
        elif kind == "pybind11_static_property":
            members[key] = {"kind": "static_property"}
        elif isinstance(value, staticmethod):
            f = value.__func__
            sigs = pybind_signatures(f, key, names, method=False) or python_signature(f, names, method=False)
            members[key] = {"kind": "static", "signatures": sigs}
        elif kind == "instancemethod" or inspect.isfunction(value):
            sigs = pybind_signatures(value, key, names, method=True) or python_signature(value, names, method=True)
            members[key] = {"kind": "method", "signatures": sigs}
        elif isinstance(value, type):
            sub = f"{qual}.{key}"
            members[key] = {"kind": "class", "class": sub}
            if sub not in classes:
                describe_pybind_class(value, names, sub, classes)
        elif kind == "wrapper_descriptor":
            continue  # inherited slot (e.g. __init__ of a class without a Python constructor)
        elif type(value) is cls or type(value).__qualname__ in (cls.__qualname__,):
            members[key] = {"kind": "value", "type": qual}
        else:
            members[key] = {"kind": "value", "type": names(type(value).__qualname__)}
    bases = [names(f"{b.__module__}.{b.__qualname__}") for b in cls.__bases__ if b.__module__ != "pybind11_builtins"]
    classes[qual] = {"bases": [b for b in bases if b != "object"], "members": dict(sorted(members.items()))}


def describe_tensorrt(module_name: str) -> dict:
    mod = __import__(module_name)
    names = Names((f"{module_name}.tensorrt.", f"{module_name}.", "tensorrt."))
    classes: dict = {}
    functions: dict = {}
    values: dict = {}
    for key in sorted(dir(mod)):
        value = getattr(mod, key)
        if key != "__version__" and key.startswith("_") or inspect.ismodule(value):
            continue
        if isinstance(value, type):
            if value.__name__ != key:  # an alias of a class recorded under its own name
                values[key] = {"kind": "class_alias", "class": names(value.__qualname__)}
            elif key not in classes:
                describe_pybind_class(value, names, key, classes)
        elif callable(value):
            sigs = pybind_signatures(value, key, names, method=False) or python_signature(value, names, method=False)
            functions[key] = sigs
        else:
            values[key] = {"kind": "value", "type": names(type(value).__qualname__)}
    return {
        "module": "tensorrt",
        "version": mod.__version__,
        "functions": functions,
        "values": values,
        "classes": dict(sorted(classes.items())),
    }


# --------------------------------------------------------------------------------------------- cuda-python
def numpydoc_section(doc: str, title: str, names: Names) -> list[tuple[str, str]]:
    """(name, type) of each entry of a numpydoc section; types joined with `|` (`CUstream or cudaStream_t`)."""
    lines = doc.splitlines()
    try:
        start = next(i for i, ln in enumerate(lines) if ln.strip() == title) + 2
    except StopIteration:
        return []
    out = []
    indent = len(lines[start - 2]) - len(lines[start - 2].lstrip())
    for ln in lines[start:]:
        if not ln.strip():
            continue
        if len(ln) - len(ln.lstrip()) > indent:
            continue  # description of the previous entry
        if ln.strip() in ("Returns", "Parameters", "See Also", "Notes", "Examples"):
            break
        name, _, typ = ln.strip().rpartition(" : ") if " : " in ln else ("", "", ln.strip())
        typ = re.sub(r":py:obj:`~?\.?([\w.]+)`", r"\1", typ).strip()
        typ = re.sub(r"\.cudaSuccess$", "", typ)
        out.append((name.strip(), " | ".join(names(t.strip()) for t in typ.split(" or "))))
    return out


def describe_cudart() -> dict:
    try:
        from cuda.bindings import runtime as rt

        module = "cuda.bindings.runtime"
    except ImportError:
        from cuda import cudart as rt  # type: ignore[no-redef]

        module = "cuda.cudart"
    import cuda.bindings

    names = Names(("cuda.bindings.runtime.", "cuda.cudart."))
    functions = {}
    for key in CUDART_FUNCTIONS:
        f = getattr(rt, key, None)
        if f is None:
            continue
        sigs = python_signature(f, names, method=False)
        documented = dict(numpydoc_section(f.__doc__ or "", "Parameters", names))
        for s in sigs:
            for p in s["params"]:
                p[1] = p[1] or documented.get(p[0])
            s["returns"] = "tuple[" + ", ".join(t for _, t in numpydoc_section(f.__doc__ or "", "Returns", names)) + "]"
        functions[key] = sigs
    classes = {}
    for key in CUDART_CLASSES:
        cls = getattr(rt, key, None)
        if cls is None:
            continue
        members = {}
        if hasattr(cls, "__members__"):  # an IntEnum: its values, and what every member has (int, name, value)
            members = {m: {"kind": "value", "type": key} for m in cls.__members__}
            for m in ("__init__", "__int__", "__index__"):
                if hasattr(cls, m):
                    members[m] = {"kind": "method", "signatures": python_signature(getattr(cls, m), names, method=True)}
            for m, typ in (("name", "str"), ("value", "int")):
                if hasattr(next(iter(cls)), m):
                    members[m] = {"kind": "property", "type": typ, "writable": False}
        else:
            for m in dir(cls):
                if m.startswith("_") and m not in ("__init__", "__int__", "__index__"):
                    continue
                v = inspect.getattr_static(cls, m)
                kind = "method" if callable(v) else "property"
                members[m] = {"kind": kind}
                if kind == "method":
                    members[m]["signatures"] = python_signature(getattr(cls, m), names, method=True)
        classes[key] = {"bases": [], "members": dict(sorted(members.items()))}
    values = {k: {"kind": "value", "type": names(type(getattr(rt, k)).__qualname__)} for k in CUDART_VALUES}
    try:
        from cuda import cudart  # noqa: F401 - the pre-12.6 import path, still there on some releases

        also = ["cuda.cudart"] if module != "cuda.cudart" else []
    except ImportError:
        also = []
    return {
        "module": module,
        "also_importable_as": also,
        "version": cuda.bindings.__version__,
        "functions": functions,
        "values": values,
        "classes": classes,
    }


# --------------------------------------------------------------------------------------------- onnxruntime
def describe_onnxruntime() -> dict:
    import onnxruntime as ort

    names = Names(
        ("onnxruntime.capi.onnxruntime_pybind11_state.", "onnxruntime.capi._pybind_state.", "onnxruntime.", "C.")
    )
    functions, values, classes = {}, {}, {}
    for key in ORT_NAMES:
        value = getattr(ort, key, None)
        if value is None:
            continue
        if isinstance(value, type):
            members: dict = {}
            for cls in value.__mro__:
                if cls is object or cls.__module__ == "pybind11_builtins":
                    continue
                for m, v in cls.__dict__.items():
                    if m in members or m.startswith("_") and m != "__init__":
                        continue
                    if isinstance(v, property):
                        members[m] = {
                            "kind": "property",
                            "type": property_type(v, names),
                            "writable": v.fset is not None,
                        }
                    elif isinstance(v, (staticmethod, classmethod)):
                        f, bound = v.__func__, isinstance(v, classmethod)
                        sigs = pybind_signatures(f, m, names, bound) or python_signature(f, names, bound)
                        members[m] = {"kind": "static", "signatures": sigs}
                    elif callable(v) and not isinstance(v, type):
                        sigs = pybind_signatures(v, m, names, True) or python_signature(v, names, True)
                        members[m] = {"kind": "method", "signatures": sigs}
                    elif type(v) is value:
                        members[m] = {"kind": "value", "type": key}
            classes[key] = {"bases": [], "members": dict(sorted(members.items()))}
        elif callable(value):
            functions[key] = pybind_signatures(value, key, names, False) or python_signature(value, names, False)
        else:
            values[key] = {"kind": "value", "type": type(value).__name__}
    return {
        "module": "onnxruntime",
        "version": ort.__version__,
        "functions": functions,
        "values": values,
        "classes": classes,
    }


# --------------------------------------------------------------------------------------------- pycuda (source)
CPP_TYPES = {
    "void": "None",
    "bool": "bool",
    "int": "int",
    "unsigned": "int",
    "unsigned int": "int",
    "size_t": "int",
    "intptr_t": "int",
    "CUdeviceptr": "int",
    "float": "float",
    "std::string": "str",
    "py::tuple": "tuple",
    "py::object": "object",
    "py::list": "list",
    "py::handle<>": "object",
    "PyObject": "object",
}
CPP_CLASSES = {
    "device": "Device",
    "context": "Context",
    "stream": "Stream",
    "event": "Event",
    "device_allocation": "DeviceAllocation",
    "module": "Module",
    "function": "Function",
    "array": "Array",
    "host_pointer": "HostPointer",
    "pointer_holder_base": "PointerHolderBase",
}


def cpp_type(decl: str) -> str:
    decl = re.sub(r"\b(inline|static|const|virtual|explicit|friend)\b", "", decl).replace("&", "").strip()
    decl = re.sub(r"^(boost::)?shared_ptr<\s*(\w+)\s*>$", r"\2", decl).replace("*", "").strip()
    decl = re.sub(r"\s+", " ", decl)
    if decl in CPP_TYPES:
        return CPP_TYPES[decl]
    if decl.startswith("CU") or decl.startswith("unsigned"):
        return "int"  # CUDA enums and flags: Boost.Python takes an int or the wrapped enum
    return CPP_CLASSES.get(decl.split("::")[-1], "object")


class CppSource:
    """Declarations in pycuda's C++ source: return and parameter types of a wrapped function or method."""

    def __init__(self, *texts: str):
        self.text = "\n".join(re.sub(r"//[^\n]*", "", t) for t in texts)

    def class_body(self, cpp_class: str) -> str:
        m = re.search(rf"\bclass {cpp_class}\b[^;{{]*{{", self.text)
        if m is None:
            return ""
        depth, i = 0, m.end() - 1
        for j in range(i, len(self.text)):
            depth += {"{": 1, "}": -1}.get(self.text[j], 0)
            if depth == 0:
                return self.text[i:j]
        return self.text[i:]

    def decl(self, func: str, cpp_class: str | None) -> tuple[str, list[str]] | None:
        """(return type, parameter types) of `&cl::name` (in `cpp_class`) or of the free function `name`."""
        member = func.startswith("&cl::") or func.startswith("cl::")
        name = re.sub(r"<.*", "", func.split("::")[-1].lstrip("&"))
        scope = self.class_body(cpp_class) if member and cpp_class else self.text
        pat = rf"(?:^|[;{{}}\n])\s*((?:template\s*<[^>]*>\s*)?[\w:<>,\s*&]+?)\s*\b{re.escape(name)}\s*\(([^()]*(?:\([^()]*\)[^()]*)*)\)\s*(?:const\s*)?[{{;]"
        for m in re.finditer(pat, scope):
            ret = re.sub(r"template\s*<[^>]*>", "", m.group(1)).strip()
            if ret in ("return", "else", "new", "") or ret.endswith("::"):
                continue
            params = [p.strip() for p in split_top(m.group(2)) if p.strip() and p.strip() != "void"]
            types = [cpp_type(re.sub(r"(?<=[\s&*])\w+$", "", re.sub(r"\s*=.*$", "", p))) for p in params]
            return cpp_type(ret), types
        return None


def signature_from(func: str, cpp_class: str | None, src: CppSource, names_text: str, method: bool) -> dict:
    """A recorded signature: parameter names from `py::arg`/`py::args` (Boost.Python calls unnamed ones arg1, arg2,
    ... and then takes them by position only), types and count from the C++ declaration."""
    found = src.decl(func, cpp_class)
    named = py_args(names_text)
    returns = "self" if "return_self" in names_text else (found[0] if found else "object")
    if found is None:
        return {"params": named, "returns": returns}
    types = found[1]
    if method and not func.startswith(("&cl::", "cl::")):
        types = types[1:]  # a free function wrapped as a method: its first parameter is the instance
    if named and len(named) >= len(types):
        for p, t in zip(named, types):
            p[1] = t
        return {"params": named, "returns": returns}
    params = [[f"arg{i + 2 if method else i + 1}", t, None] for i, t in enumerate(types)]
    return {"params": params + ([["/", None, None]] if params else []), "returns": returns}


def preprocess(src: str, cuda_version: int = 12060, py_hex: int = 0x030B0000) -> str:
    """Keep what `#if CUDAPP_CUDA_VERSION ...` keeps for `cuda_version`; other conditions count as true."""
    out, stack = [], [True]
    for line in src.splitlines():
        s = line.strip()
        if s.startswith("#if"):
            cond, ok = s[3:].strip(), True
            if not cond.startswith(("def", "ndef")):
                expr = cond.replace("&&", " and ").replace("||", " or ").replace("!", " not ")
                expr = expr.replace("CUDAPP_CUDA_VERSION", str(cuda_version)).replace("PY_VERSION_HEX", str(py_hex))
                expr = re.sub(r"defined\s*\(\s*\w+\s*\)", "True", expr)
                try:
                    ok = bool(eval(expr, {"__builtins__": {}}, {"True": True}))  # digits and operators only
                except Exception:  # noqa: BLE001 - any other macro: keep the block
                    ok = True
            stack.append(stack[-1] and ok)
            out.append("")
        elif s.startswith("#else"):
            stack[-1] = stack[-2] and not stack[-1]
            out.append("")
        elif s.startswith("#endif"):
            stack.pop()
            out.append("")
        else:
            out.append(line if stack[-1] else "")
    return "\n".join(out)


def py_args(text: str) -> list[list]:
    """`(py::args("self", "name"), py::arg("flags")=0)` -> [["name", None, None], ["flags", None, "0"]]."""
    params = []
    for m in re.finditer(r"py::args?\(([^()]*)\)(\s*=\s*([^,()]+(?:\(\))?))?", text):
        for n in re.findall(r'"(\w+)"', m.group(1)):
            params.append([n, None, None])
        if m.group(3) is not None and params:
            default = m.group(3).strip()
            params[-1][2] = {"py::object()": "None", '"C"': "'C'"}.get(default, default)
    return [p for p in params if p[0] != "self"]


def describe_pycuda(sdist: Path) -> dict:
    src = preprocess((sdist / "src/wrapper/wrap_cudadrv.cpp").read_text())
    cpp = CppSource((sdist / "src/cpp/cuda.hpp").read_text(), src)
    classes: dict = {}
    functions: dict = {}
    cpp_class = None
    # Boost.Python chains `.def(...)` calls into one statement per class: split at statement ends
    for stmt in re.split(r";\s*\n", re.sub(r"//[^\n]*", "", src)):
        td = re.search(r"typedef\s+([\w:]+)\s+cl\s*$", stmt.strip())
        if td:
            cpp_class = td.group(1)
            continue
        m = re.search(r'py::class_<([^;]*?)>\s*(?:\w+\s*)?\(\s*"(\w+)"', stmt)
        if m:
            name = m.group(2)
            bases = re.findall(r"py::bases<\s*(\w+)\s*>", m.group(1))
            cls = classes.setdefault(name, {"bases": [CPP_CLASSES.get(b, b) for b in bases], "members": {}})
            members = cls["members"]
            init = re.search(r'"\w+"\s*,\s*py::init<', stmt[m.start() :])
            if init:
                at = m.start() + init.end() - 1
                targs, rest = angle(stmt, at), stmt[at:]
                call = balanced(rest, rest.index(">" * 1, len(targs)) + 1) if "(" in rest else ""
                opt = re.findall(r"py::optional<\s*([^>]*)>", targs)
                types = [cpp_type(t) for t in split_top(re.sub(r"py::optional<\s*([^>]*)>", r"\1", targs)) if t]
                params = py_args(call) or [[f"arg{i + 2}", t, None] for i, t in enumerate(types)]
                for p, t in zip(params, types):
                    p[1] = p[1] or t
                if opt and params:
                    params[-1][2] = params[-1][2] or "<optional>"
                members["__init__"] = {"kind": "method", "signatures": [{"params": params, "returns": "None"}]}
            for d in re.finditer(
                r"\.(def|DEF_SIMPLE_METHOD|add_property|def_readonly|def_readwrite|staticmethod)\(", stmt
            ):
                body, kind = balanced(stmt, d.end() - 1), d.group(1)
                if kind == "DEF_SIMPLE_METHOD":
                    members[body.strip()] = {
                        "kind": "method",
                        "signatures": [signature_from("&cl::" + body.strip(), cpp_class, cpp, "", True)],
                    }
                elif kind == "def":
                    mm = re.match(r'\s*"(\w+)"\s*,\s*([^,]+)(.*)$', body, re.S)
                    if mm is None:
                        continue  # operators (py::self == py::self)
                    member, fn, rest = mm.group(1), mm.group(2).strip(), mm.group(3)
                    if "make_constructor" in fn:
                        ctor = re.search(r"make_constructor\((\w+)", fn).group(1)
                        sig = signature_from(ctor, None, cpp, "", False)
                        sig["returns"] = "None"
                        members.setdefault("__init__", {"kind": "method", "signatures": []})["signatures"].append(sig)
                        continue
                    if "py::init<" in fn:
                        continue
                    fn = re.sub(r"^\(.*?\)\s*", "", fn)  # a cast selecting one overload
                    members[member] = {"kind": "method", "signatures": [signature_from(fn, cpp_class, cpp, rest, True)]}
                elif kind == "staticmethod":
                    member = body.strip().strip('"')
                    if member in members:
                        members[member]["kind"] = "static"
                        for sig in members[member]["signatures"]:  # a static has no instance to drop
                            again = signature_from("&cl::" + member, cpp_class, cpp, "", False)
                            if not any(p[0] != "/" and not p[0].startswith("arg") for p in sig["params"]):
                                sig["params"] = again["params"]
                elif kind == "add_property":
                    mm = re.match(r'\s*"(\w+)"\s*,\s*([^,]+)(,.*)?$', body, re.S)
                    found = cpp.decl(mm.group(2).strip(), cpp_class)
                    members[mm.group(1)] = {
                        "kind": "property",
                        "type": found[0] if found else "object",
                        "writable": bool(mm.group(3)),
                    }
                else:
                    mm = re.match(r'\s*"(\w+)"', body)
                    members[mm.group(1)] = {"kind": "property", "type": None, "writable": kind == "def_readwrite"}
            continue
        for f in re.finditer(r'(?:py::|boost::python::)def\(\s*"(\w+)"\s*,\s*([\w:<>]+)(.*)', stmt, re.S):
            sig = signature_from(f.group(2), None, cpp, f.group(3), False)
            if f.group(2).startswith("numpy_empty<"):
                sig["returns"] = "numpy.ndarray"  # a py::handle<> to the array it allocates
            functions[f.group(1)] = [sig]
        for f in re.finditer(r"DEF_SIMPLE_FUNCTION(?:_WITH_ARGS)?\((\w+)(?:,\s*(\([^)]*\)))?", stmt):
            text = (f.group(2) or "").replace("(", "py::args(", 1)
            functions[f.group(1).removeprefix("py_")] = [signature_from(f.group(1), None, cpp, text, False)]
    for enum_m in re.finditer(r'py::enum_<\w+>\("(\w+)"\)((?:\s*\.value\("\w+",[^)]*\))*)', src):
        values = re.findall(r'\.value\("(\w+)"', enum_m.group(2))
        classes[enum_m.group(1)] = {
            "bases": [],
            "members": {v: {"kind": "value", "type": enum_m.group(1)} for v in values},
        }
    for c in classes.values():
        c["members"] = dict(sorted(c["members"].items()))
    values = {"Error": {"kind": "exception", "base": "Exception"}}
    for e in re.findall(r"DECLARE_EXC\((\w+),", src):
        if e != "Error" and e != "NAME":
            values[e] = {"kind": "exception", "base": "Error"}
    values["HostAllocation"] = {"kind": "class_alias", "class": "PagelockedHostAllocation"}
    add_driver_py(sdist / "pycuda/driver.py", classes, functions)
    version = re.search(r"^Version:\s*(\S+)", (sdist / "PKG-INFO").read_text(), re.M).group(1)
    return {
        "module": "pycuda.driver",
        "version": version,
        "functions": dict(sorted(functions.items())),
        "values": dict(sorted(values.items())),
        "classes": dict(sorted(classes.items())),
    }


def angle(text: str, open_at: int) -> str:
    """The text inside the `<...>` that opens at `open_at` (nested template arguments included)."""
    depth = 0
    for i in range(open_at, len(text)):
        depth += {"<": 1, ">": -1}.get(text[i], 0)
        if depth == 0:
            return text[open_at + 1 : i]
    return text[open_at + 1 :]


def balanced(text: str, open_at: int) -> str:
    depth = 0
    for i in range(open_at, len(text)):
        if text[i] == "(":
            depth += 1
        elif text[i] == ")":
            depth -= 1
            if depth == 0:
                return text[open_at + 1 : i]
    return text[open_at + 1 :]


def add_driver_py(path: Path, classes: dict, functions: dict) -> None:
    """pycuda/driver.py: module functions, and the methods `_add_functionality` attaches to the C++ classes."""
    tree = ast.parse(path.read_text())
    names = Names(())
    for node in tree.body:
        if isinstance(node, ast.FunctionDef) and not node.name.startswith("_"):
            functions[node.name] = [{"params": ast_params(node), "returns": None}]
        if isinstance(node, ast.FunctionDef) and node.name == "_add_functionality":
            local = {n.name: n for n in node.body if isinstance(n, ast.FunctionDef)}
            for stmt in ast.walk(node):
                if isinstance(stmt, ast.Assign) and isinstance(stmt.targets[0], ast.Attribute):
                    t = stmt.targets[0]
                    if isinstance(t.value, ast.Name) and t.value.id in classes:
                        fn = local.get(getattr(stmt.value, "id", None))
                        params = ast_params(fn)[1:] if fn else []
                        classes[t.value.id]["members"].setdefault(
                            t.attr, {"kind": "method", "signatures": [{"params": params, "returns": None}]}
                        )
    del names


def ast_params(fn: ast.FunctionDef) -> list[list]:
    a = fn.args
    pos = a.posonlyargs + a.args
    defaults = [None] * (len(pos) - len(a.defaults)) + [ast.unparse(d) for d in a.defaults]
    params = [[p.arg, None, d] for p, d in zip(pos, defaults)]
    if a.vararg:
        params.append(["*" + a.vararg.arg, None, None])
    elif a.kwonlyargs:
        params.append(["*", None, None])
    for p, d in zip(a.kwonlyargs, a.kw_defaults):
        params.append([p.arg, None, None if d is None else ast.unparse(d)])
    if a.kwarg:
        params.append(["**" + a.kwarg.arg, None, None])
    return params


# --------------------------------------------------------------------------------------------- orchestration
def pip_download(spec: str, dest: Path, *, sdist: bool = False) -> Path:
    dest.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "-d", str(dest), spec]
    if sdist:
        cmd[4:4] = ["--no-binary", spec.split("=")[0]]
    else:
        cmd[4:4] = ["--only-binary=:all:", "--python-version", f"{sys.version_info.major}.{sys.version_info.minor}"]
        cmd[4:4] = ["--platform", "manylinux_2_28_x86_64", "--platform", "manylinux_2_17_x86_64"]
    before = set(dest.iterdir())
    subprocess.run(cmd, check=True)
    name = spec.split("=")[0].replace("-", "_").lower()
    found = [p for p in dest.iterdir() if p.name.lower().replace("-", "_").startswith(name)]
    new = [p for p in found if p not in before] or found
    return max(new, key=lambda p: p.stat().st_mtime)


def stand_in_libraries(binding: Path, libdir: Path) -> None:
    """Empty shared libraries with the sonames `binding` needs and is not given here, exporting every undefined
    symbol the process cannot resolve (no-op functions: nothing is called, the loader only wants them to exist)."""
    libdir.mkdir(parents=True, exist_ok=True)
    needed = re.findall(r"\(NEEDED\)\s+Shared library: \[(.+?)\]", run_text(["readelf", "-d", str(binding)]))
    undefined = [
        ln.split()[-1]
        for ln in run_text(["nm", "-D", "--undefined-only", str(binding)]).splitlines()
        if ln.split()[0] == "U" and "@" not in ln.split()[-1]
    ]
    here = ctypes.CDLL(None)
    missing_syms = sorted(s for s in undefined if not s.startswith(("Py", "_Py")) and not hasattr(here, s))
    source = libdir / "stand_in.c"
    source.write_text("".join(f"void {s}(void) {{}}\n" for s in missing_syms))
    for soname in needed:
        try:
            ctypes.CDLL(soname)
            continue
        except OSError:
            pass
        subprocess.run(
            ["gcc", "-shared", "-fPIC", "-o", str(libdir / soname), f"-Wl,-soname,{soname}", str(source)], check=True
        )


def run_text(cmd: list[str]) -> str:
    return subprocess.run(cmd, check=True, capture_output=True, text=True).stdout


def child(kind: str, path: str | None, env_extra: dict) -> dict:
    """Describe one API in a fresh interpreter (each TensorRT build is the same module name; stand-ins via env)."""
    env = {**os.environ, **env_extra}
    cmd = [sys.executable, __file__, "--describe", kind] + ([path] if path else [])
    if kind == "tensorrt":
        cmd.insert(1, "-S")  # no site-packages: an installed tensorrt must not shadow the wheel being read
    return json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True, env=env).stdout)


def extract(archive: Path, dest: Path) -> Path:
    dest.mkdir(parents=True, exist_ok=True)
    if archive.suffix == ".whl":
        with zipfile.ZipFile(archive) as z:
            z.extractall(dest)
        return dest
    with tarfile.open(archive) as t:
        t.extractall(dest, filter="data")
    return next(p for p in dest.iterdir() if p.is_dir())


def record(work: Path) -> dict:
    apis = {}
    for key, spec in TENSORRT_WHEELS.items():
        wheel = pip_download(spec, work / "downloads")
        root = extract(wheel, work / wheel.stem)
        so = next(Path(p) for p in glob.glob(str(root / "tensorrt_bindings" / "tensorrt*.so")))
        libs = work / f"stand-ins-{key}"
        stand_in_libraries(so, libs)
        env = {"LD_LIBRARY_PATH": f"{libs}:{os.environ.get('LD_LIBRARY_PATH', '')}", "PYTHONPATH": str(root)}
        api = child("tensorrt", None, env)
        api["source"] = (
            f"{wheel.name} (PyPI), imported over stand-in {', '.join(sorted(p.name for p in libs.glob('lib*')))}"
        )
        apis[f"tensorrt-{'.'.join(api['version'].split('.')[:2])}"] = api
    sdist = extract(pip_download(PYCUDA_SDIST, work / "downloads", sdist=True), work / "pycuda-src")
    api = describe_pycuda(sdist)
    api["source"] = f"{sdist.name} sdist: src/wrapper/wrap_cudadrv.cpp, src/cpp/cuda.hpp, pycuda/driver.py"
    apis[f"pycuda-{api['version']}"] = api
    api = child("cudart", None, {})
    api["source"] = f"installed cuda-bindings {api['version']}"
    apis[f"cudart-{api['version'].split('.')[0]}"] = api
    wheel = pip_download(CUDA_BINDINGS_WHEEL, work / "downloads")
    root = extract(wheel, work / wheel.stem)
    api = child("cudart", None, {"PYTHONPATH": str(root)})
    api["source"] = f"{wheel.name} (PyPI)"
    apis[f"cudart-{api['version'].split('.')[0]}"] = api
    api = child("onnxruntime", None, {})
    api["source"] = f"installed onnxruntime {api['version']}"
    apis[f"onnxruntime-{'.'.join(api['version'].split('.')[:2])}"] = api
    return {"format": FORMAT, "generated_by": "scripts/record_gpu_api.py", "apis": dict(sorted(apis.items()))}


def dump(data: dict) -> str:
    """JSON with one line per member (readable diffs when a version changes), nested objects above that level."""

    def emit(value, depth: int) -> str:
        if depth >= 6 or not isinstance(value, dict) or not value:
            return json.dumps(value, separators=(", ", ": "))
        pad = " " * (depth + 1)
        items = [f"{pad}{json.dumps(k)}: {emit(v, depth + 1)}" for k, v in value.items()]
        return "{\n" + ",\n".join(items) + "\n" + " " * depth + "}"

    return emit(data, 0) + "\n"


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--work", type=Path, default=Path("/tmp/co2s-gpu-api"), help="downloads and stand-ins go here")
    ap.add_argument("--out", type=Path, default=OUT)
    ap.add_argument("--describe", nargs="+", help=argparse.SUPPRESS)  # child mode: print one API as JSON
    args = ap.parse_args(argv)
    if args.describe:
        kind = args.describe[0]
        if kind == "tensorrt":
            api = describe_tensorrt("tensorrt_bindings")
        elif kind == "cudart":
            if os.environ.get("PYTHONPATH"):  # the wheel's `cuda` package first, not the installed one
                sys.path.insert(0, os.environ["PYTHONPATH"])
                for m in [m for m in sys.modules if m == "cuda" or m.startswith("cuda.")]:
                    del sys.modules[m]
            api = describe_cudart()
        else:
            api = describe_onnxruntime()
        json.dump(api, sys.stdout)
        return
    data = record(args.work)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(dump(data))
    for key, api in data["apis"].items():
        n = sum(len(c["members"]) for c in api["classes"].values())
        print(f"{key}: {len(api['classes'])} classes, {n} members, {len(api['functions'])} functions -> {args.out}")


if __name__ == "__main__":
    main()
