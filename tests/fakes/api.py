"""The recorded real API (tests/data/gpu_api.json, written by scripts/record_gpu_api.py) and the checks that keep
the fakes to it.

A fake class names the real class it stands for (`class Engine(Fake, real="ICudaEngine")`) and is bound to one
recorded API version with `bind(api, Engine)`. Binding fails (FakeApiError) when the fake has a public member the
real class lacks, a member of another kind (a method where the real one is a property), or a signature looser than
every real overload (more or other parameters, a default the real one lacks, *args/**kwargs). The bound class
checks every call at run time too: the arguments must bind to a real overload and have its parameter types, and the
return value must have its return type (a class-typed return may be None: that is how the bindings hand back a
nullptr). Attributes written on a fake must be writable properties of the real class. So a fake cannot accept a call
the real API refuses, and cannot return what the real API never returns.
"""

from __future__ import annotations

import functools
import inspect
import json
import re
import types
from pathlib import Path

import numpy as np

API_FILE = Path(__file__).resolve().parents[1] / "data" / "gpu_api.json"

# members a fake may define for its own use without a real counterpart
_PRIVATE = re.compile(r"^_(?!_)")
_CHECKED_DUNDERS = {"__init__", "__int__", "__index__", "__call__", "__enter__", "__exit__", "__len__", "__getitem__"}


class FakeApiError(AssertionError):
    """A fake is looser than the real API, or was used in a way the real API refuses."""


@functools.cache
def recorded() -> dict:
    return json.loads(API_FILE.read_text())


def api_keys(prefix: str) -> list[str]:
    """Recorded versions of one API, e.g. api_keys("tensorrt") -> ["tensorrt-10.3", "tensorrt-11.4"]."""
    return sorted(k for k in recorded()["apis"] if k.startswith(prefix + "-"))


class Api:
    """One recorded API version: module-level names, classes (members looked up through recorded bases)."""

    def __init__(self, key: str):
        self.key = key
        self.data = recorded()["apis"][key]
        self.family = key.rsplit("-", 1)[0]
        self.classes = self.data["classes"]

    def __repr__(self) -> str:
        return f"Api({self.key})"

    def module_member(self, name: str) -> dict | None:
        """{"kind": "class"|"function"|"value"|"class_alias"|"exception", ...} for a module-level name."""
        if name in self.classes:
            return {"kind": "class", "class": name}
        if name in self.data["functions"]:
            return {"kind": "function", "signatures": self.data["functions"][name]}
        return self.data["values"].get(name)

    def member(self, cls: str, name: str) -> dict | None:
        seen = set()
        todo = [cls]
        while todo:
            c = todo.pop(0)
            if c in seen or c not in self.classes:
                continue
            seen.add(c)
            m = self.classes[c]["members"].get(name)
            if m is not None:
                return m
            todo += self.classes[c]["bases"]
        return None

    def ancestors(self, cls: str) -> set[str]:
        out, todo = set(), [cls]
        while todo:
            c = todo.pop()
            if c not in out:
                out.add(c)
                todo += self.classes.get(c, {}).get("bases", [])
        return out

    def is_enum(self, cls: str) -> bool:
        c = self.classes.get(cls)
        return bool(c) and any(m.get("kind") == "value" and m.get("type") == cls for m in c["members"].values())


# --------------------------------------------------------------------------------------------- type checks
_INT = {"int", "typing.SupportsInt", "SupportsInt", "unsigned long long", "unsigned int", "long"}
_FLOAT = {"float", "typing.SupportsFloat", "SupportsFloat"}
_BUFFER = {"buffer", "typing_extensions.Buffer", "collections.abc.Buffer"}
# TensorRT registers implicit conversions from Python sequences to Dims (pybind11 implicitly_convertible)
_IMPLICIT = {"Dims": (tuple, list)}


def real_name(value) -> str | None:
    return getattr(type(value), "_real", None)


def matches(api: Api, value, typ: str | None, *, returned: bool = False) -> bool:
    """Whether `value` could be a `typ` of this API (unknown or unrecordable types accept anything)."""
    if typ is None or typ in ("object", "Any", "typing.Any"):
        return True
    typ = typ.strip()
    if " | " in typ:
        return any(matches(api, value, t, returned=returned) for t in typ.split(" | "))
    if typ == "None":
        return value is None
    if typ in _INT:
        if isinstance(value, bool):
            return typ not in ("unsigned long long",)
        if isinstance(value, (int, np.integer)):
            return True
        # Boost.Python (pycuda) converts a DeviceAllocation to CUdeviceptr implicitly; pybind11 takes __index__
        return hasattr(type(value), "__index__") or api.family == "pycuda" and hasattr(type(value), "__int__")
    if typ in _FLOAT:
        return isinstance(value, (int, float, np.floating)) and not isinstance(value, bool)
    if typ == "bool":
        return isinstance(value, (bool, np.bool_))
    if typ == "str":
        return isinstance(value, str)
    if typ == "bytes":
        return isinstance(value, bytes)
    if typ in _BUFFER:
        try:
            memoryview(value)
            return True
        except TypeError:
            return False
    if typ == "tuple":
        return isinstance(value, tuple)
    if typ == "list":
        return isinstance(value, list)
    if typ == "numpy.ndarray":
        return isinstance(value, np.ndarray)
    m = re.match(r"^(tuple|list|List|typing\.List|Sequence|typing\.Sequence)\[(.*)\]$", typ)
    if m:
        if not isinstance(value, (tuple, list)):
            return False
        inner = [t.strip() for t in _split(m.group(2))]
        if m.group(1) == "tuple" and "..." not in inner:
            return len(inner) == len(value) and all(matches(api, v, t, returned=returned) for v, t in zip(value, inner))
        return all(matches(api, v, inner[0], returned=returned) for v in value)
    if typ in api.classes:
        if returned and value is None and not api.is_enum(typ):
            return True  # pybind11 returns None for a nullptr: how TensorRT reports most failures
        name = real_name(value)
        if name is not None:
            return typ in api.ancestors(name)
        if typ in _IMPLICIT and isinstance(value, _IMPLICIT[typ]):
            return all(isinstance(v, (int, np.integer)) for v in value)
        # cuda-python handle types (cudaStream_t, cudaGraph_t, ...) are built from a plain int address
        return api.family == "cudart" and typ.endswith("_t") and not api.is_enum(typ) and isinstance(value, int)
    return True  # a type the recorder could not name precisely (os.PathLike, Sequence[...] of unions, ...)


def _split(text: str) -> list[str]:
    out, depth, cur = [], 0, ""
    for ch in text:
        depth += {"[": 1, "]": -1}.get(ch, 0)
        if ch == "," and depth == 0:
            out.append(cur)
            cur = ""
        else:
            cur += ch
    return out + [cur]


# --------------------------------------------------------------------------------------------- signatures
def _bind(sig: dict, args: tuple, kwargs: dict) -> dict | None:
    """Bind a call to one recorded overload as the bindings would; None if it does not bind."""
    params = sig["params"]
    positional_only = "/" in [p[0] for p in params]
    names = [p for p in params if p[0] not in ("/", "*")]
    star = next((p for p in names if p[0].startswith("*") and not p[0].startswith("**")), None)
    dstar = next((p for p in names if p[0].startswith("**")), None)
    plain = [p for p in names if not p[0].startswith("*")]
    kw_only_from = next((i for i, p in enumerate(params) if p[0] == "*"), None)
    n_positional = len(plain) if kw_only_from is None else len([p for p in params[:kw_only_from] if p[0] != "/"])
    if len(args) > n_positional and star is None:
        return None
    bound = {}
    for p, v in zip(plain, args):
        bound[p[0]] = v
    for k, v in kwargs.items():
        target = next((p for p in plain if p[0] == k), None)
        if target is None or positional_only and target[0].startswith("arg"):
            if dstar is None:
                return None
            continue
        if k in bound:
            return None
        bound[k] = v
    for p in plain:
        if p[0] not in bound and p[2] is None:
            return None
    return bound


def check_call(api: Api, where: str, overloads: list[dict], args: tuple, kwargs: dict) -> dict:
    """The overload a call binds to, with argument types checked; FakeApiError if none accepts it."""
    why = []
    for sig in overloads:
        bound = _bind(sig, args, kwargs)
        if bound is None:
            why.append("does not bind")
            continue
        types_ = {p[0]: p[1] for p in sig["params"]}
        bad = [k for k, v in bound.items() if not matches(api, v, types_.get(k))]
        if not bad:
            return sig
        why.append(", ".join(f"{k}={bound[k]!r} is not {types_[k]}" for k in bad))
    shown = "; ".join(_show(s) for s in overloads)
    raise FakeApiError(
        f"{api.key} {where}{_call(args, kwargs)}: the real API refuses this call ({'; '.join(why)}); it takes {shown}"
    )


def check_return(api: Api, where: str, sig: dict, value, instance=None):
    typ = sig.get("returns")
    if typ == "self":
        if value is not instance:
            raise FakeApiError(f"{api.key} {where} returns the instance itself, the fake returned {value!r}")
        return value
    if not matches(api, value, typ, returned=True):
        raise FakeApiError(f"{api.key} {where} returns {typ}, the fake returned {value!r}")
    return value


def _show(sig: dict) -> str:
    return (
        "("
        + ", ".join(p[0] + (f": {p[1]}" if p[1] else "") + (f" = {p[2]}" if p[2] else "") for p in sig["params"])
        + ")"
    )


def _call(args, kwargs) -> str:
    return "(" + ", ".join([repr(a) for a in args] + [f"{k}={v!r}" for k, v in kwargs.items()]) + ")"


def signature_problem(func, overloads: list[dict], *, drop_first: bool) -> str | None:
    """Why the fake's own signature is looser than every real overload (None when one overload is as strict)."""
    params = list(inspect.signature(func).parameters.values())
    if drop_first:
        params = params[1:]
    fake = [(p.name, p.kind, p.default is not p.empty) for p in params]
    if any(k in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD) for _, k, _ in fake):
        if not any(p[0].startswith("*") and p[0] != "*" for s in overloads for p in s["params"]):
            return "takes *args/**kwargs, the real one does not"
    problems = []
    for sig in overloads:
        names = [p[0] for p in sig["params"]]
        if any(n.startswith("**") for n in names) and any(n[:1] == "*" and n[1:2] not in ("*", "") for n in names):
            return None  # the real one takes anything (*args, **kwargs): a fake cannot be looser
        real = [p for p in sig["params"] if p[0] not in ("/", "*") and not p[0].startswith("*")]
        fake_plain = [f for f in fake if f[1] not in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)]
        if len(fake_plain) != len(real):
            problems.append(f"{len(fake_plain)} parameters where {_show(sig)} has {len(real)}")
            continue
        wrong = [
            f"{f[0]} (real: {r[0]})"
            for f, r in zip(fake_plain, real)
            if f[0] != r[0] and not re.fullmatch(r"arg\d+", r[0])  # unnamed in the bindings: any name
        ]
        if wrong:
            problems.append(f"parameter names {', '.join(wrong)}")
            continue
        loose = [f[0] for f, r in zip(fake_plain, real) if f[2] and r[2] is None]
        if loose:
            problems.append(f"a default for {', '.join(loose)}, which {_show(sig)} requires")
            continue
        return None
    return "; ".join(problems) or "no recorded overload"


# --------------------------------------------------------------------------------------------- fakes
class Fake:
    """Base of every fake class: `real=` names the recorded class; `bind` checks and wraps it for one version."""

    _real: str | None = None
    _api: Api | None = None

    def __init_subclass__(cls, real: str | None = None, **kw):
        super().__init_subclass__(**kw)
        if real is not None:
            cls._real = real

    def __setattr__(self, name: str, value) -> None:
        api = type(self)._api
        if api is not None and not _PRIVATE.match(name):
            m = api.member(self._real, name)
            if m is None or m["kind"] != "property" or not m.get("writable"):
                raise FakeApiError(f"{api.key} {self._real}.{name} cannot be set (real member: {m})")
            if not matches(api, value, m.get("type")):
                raise FakeApiError(f"{api.key} {self._real}.{name} takes {m.get('type')}, got {value!r}")
        object.__setattr__(self, name, value)

    @classmethod
    def _make(cls, *args, **kwargs):
        """Build an instance the way the library does internally (classes without a Python constructor)."""
        obj = cls.__new__(cls)
        obj._setup(*args, **kwargs)
        return obj

    def _setup(self, *args, **kwargs) -> None:
        pass


def fake_members(cls: type) -> dict[str, object]:
    """The members a fake class defines (its own and its fake bases'), public ones and the checked dunders."""
    out = {}
    for klass in reversed(cls.__mro__):
        if klass in (object, Fake) or not issubclass(klass, Fake):
            continue
        for name, value in vars(klass).items():
            if name in ("_real", "_api", "__module__", "__qualname__", "__doc__", "__dict__", "__weakref__"):
                continue
            if name.startswith("__") and name not in _CHECKED_DUNDERS:
                continue
            if _PRIVATE.match(name):
                continue
            out[name] = value
    return out


def problems(api: Api, cls: type) -> list[str]:
    """Everything in fake `cls` that is looser than the recorded class (empty when it keeps to the real API)."""
    real = cls._real
    if real not in api.classes:
        return [f"{api.key} has no class {real}"]
    out = []
    for name, value in fake_members(cls).items():
        m = api.member(real, name)
        where = f"{api.key} {real}.{name}"
        if m is None:
            out.append(f"{where}: the real class has no such member")
            continue
        kind = m["kind"]
        if isinstance(value, staticmethod):
            if kind != "static":
                out.append(f"{where}: the fake is a staticmethod, the real member is a {kind}")
            elif why := signature_problem(value.__func__, m["signatures"], drop_first=False):
                out.append(f"{where}: {why}")
        elif inspect.isfunction(value):
            if kind not in ("method",):
                out.append(f"{where}: the fake is a method, the real member is a {kind}")
            elif why := signature_problem(value, m["signatures"], drop_first=True):
                out.append(f"{where}: {why}")
        elif isinstance(value, property):
            if kind != "property":
                out.append(f"{where}: the fake is a property, the real member is a {kind}")
            elif value.fset is not None and not m.get("writable"):
                out.append(f"{where}: the fake property is writable, the real one is read-only")
        else:
            if kind not in ("property", "value", "static_property"):
                out.append(f"{where}: the fake is a value, the real member is a {kind}")
            elif kind == "property" and not matches(api, value, m.get("type")):
                out.append(f"{where}: the fake value {value!r} is not a {m.get('type')}")
    return out


def bind(api: Api, cls: type) -> type:
    """A subclass of fake `cls` checked against `api`: FakeApiError now if it is looser, at each call if misused."""
    found = problems(api, cls)
    if found:
        raise FakeApiError("; ".join(found))
    ns: dict = {"_api": api, "__module__": cls.__module__, "__qualname__": cls.__qualname__}
    for name, value in fake_members(cls).items():
        m = api.member(cls._real, name)
        if isinstance(value, staticmethod):
            ns[name] = staticmethod(_checked(api, f"{cls._real}.{name}", value.__func__, m["signatures"], False))
        elif inspect.isfunction(value):
            ns[name] = _checked(api, f"{cls._real}.{name}", value, m["signatures"], True)
        elif isinstance(value, property) and m.get("type"):
            ns[name] = property(_checked_getter(api, f"{cls._real}.{name}", value.fget, m["type"]), value.fset)
    return type(cls.__name__, (cls,), ns)


def _checked(api: Api, where: str, func, overloads: list[dict], method: bool):
    @functools.wraps(func)
    def call(*args, **kwargs):
        given = args[1:] if method else args
        sig = check_call(api, where, overloads, given, kwargs)
        return check_return(api, where, sig, func(*args, **kwargs), args[0] if method else None)

    return call


def _checked_getter(api: Api, where: str, fget, typ: str):
    def get(self):
        value = fget(self)
        if not matches(api, value, typ, returned=True):
            raise FakeApiError(f"{api.key} {where} is a {typ}, the fake gave {value!r}")
        return value

    return get


def enum(api: Api, name: str) -> type:
    """A stand-in for a recorded enum class: one instance per recorded value, int-convertible, built from the file."""
    members = [k for k, m in api.classes[name]["members"].items() if m.get("kind") == "value" and m.get("type") == name]
    short = name.rsplit(".", 1)[-1]

    class Enum(Fake, real=name):
        def __init__(self, value):
            object.__setattr__(self, "_value", int(value))

        def __int__(self):
            return self._value

        def __index__(self):
            return self._value

        def __repr__(self):
            return f"<{short}.{self._name}: {self._value}>"

        def __eq__(self, other):
            return type(other) is type(self) and other._value == self._value

        def __hash__(self):
            return hash((short, self._value))

        @property
        def name(self):
            return self._name

        @property
        def value(self):
            return self._value

    for dunder in ("__int__", "__index__"):
        if api.member(name, dunder) is None:  # recorded without it (onnxruntime's enums): int(x) fails, as there
            delattr(Enum, dunder)
    Enum.__name__ = Enum.__qualname__ = short
    Enum.__eq__ = Enum.__eq__  # keep: pybind enums compare by value
    cls = type(short, (Enum,), {"_real": name, "_api": api})
    for i, key in enumerate(members):
        inst = cls.__new__(cls)
        object.__setattr__(inst, "_value", i)
        object.__setattr__(inst, "_name", key)
        type.__setattr__(cls, key, inst)
    return cls


class FakeModule(types.ModuleType):
    """A stand-in module: only names the recorded module has can be set; functions set on it are call-checked."""

    def __init__(self, api: Api, name: str):
        super().__init__(name)
        object.__setattr__(self, "_api_", api)

    def __setattr__(self, name: str, value) -> None:
        api = self._api_
        m = api.module_member(name)
        if m is None:
            raise FakeApiError(f"{api.key}: module {api.data['module']} has no {name}")
        if m["kind"] == "function" and callable(value) and not isinstance(value, type):
            value = _checked(api, name, value, m["signatures"], False)
        super().__setattr__(name, value)
