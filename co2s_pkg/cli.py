"""The one CLI policy of every co2s tool (co2s-train, co2s-export, co2s-infer, co2s-bench, co2s-stream).

Exit status (the README's table is checked against EXIT_STATUSES):

    0    ok
    1    failure or bad input: one `error: <message>` line (a Co2SError), or a run with failed inputs
    2    usage error: unknown option, missing argument, a value of the wrong type, not among the choices or out
         of range (click's message, with the usage line)
    3    co2s-export: the ONNX bundle is complete, the TensorRT engines are deferred to the target GPU
    4    co2s-export: partial bundle: a precision failed its parity gate and was not written (the others were)
    130  interrupted (Ctrl-C); nothing half-written is left behind
    143  co2s-stream: terminated (SIGTERM, e.g. systemd stopping the flight service): the frame in flight is
         finished and the summary written, as for Ctrl-C (128 + the signal number, the shell's convention)

Logging: one `co2s` logger on stderr; `-q` shows only warnings and errors (no progress bars), `-v` adds debug
detail and the traceback of an unexpected error. Progress bars draw only when stderr is a terminal: in a log file
they would flood it. A run that fails removes the output folders it created, when they are still empty.

The console scripts point at the entry points at the end of this module: they import their stage only when they
run, so a runtime-only install (`pip install co2s`) says which extra `co2s-train` needs instead of a traceback.
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import os
import sys
import threading
import traceback
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import NoReturn

import click

from .errors import Co2SError

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_DEFERRED = 3
EXIT_PARTIAL = 4
EXIT_INTERRUPTED = 130
EXIT_TERMINATED = 143
EXIT_STATUSES = {
    EXIT_OK: "ok",
    EXIT_FAILED: "failure or bad input",
    EXIT_USAGE: "usage error",
    EXIT_DEFERRED: "engines deferred to the target",
    EXIT_PARTIAL: "partial export: a precision failed its parity gate",
    EXIT_INTERRUPTED: "interrupted (Ctrl-C)",
    EXIT_TERMINATED: "terminated (SIGTERM)",
}

log = logging.getLogger("co2s")

# Import names of each extra's packages (pyproject.toml [project.optional-dependencies]); `export` includes `train`.
EXTRA_MODULES = {
    "train": ("torch", "torchvision", "timm", "open_clip", "yaml", "tensorboard", "safetensors"),
    "export": ("onnx", "onnxscript"),
    "geo": ("rasterio", "pyproj", "pyogrio", "shapely"),
    "cpu": ("onnxruntime",),
    "gpu": ("tensorrt", "pycuda"),
    "video": ("av",),
}
_EXTRA_INCLUDES = {"export": ("train",)}
_CHATTY_LIBRARIES = ("rasterio",)  # their INFO/WARNING lines are GDAL's, not the user's business unless -v


# ------------------------------------------------------------------------------------------------ logging
class _StderrHandler(logging.Handler):
    """`warning: ...` / `error: ...` (info lines as they are) on stderr, through tqdm so a bar is not broken."""

    def emit(self, record: logging.LogRecord) -> None:
        msg = record.getMessage()
        if record.levelno >= logging.WARNING:
            msg = f"{record.levelname.lower()}: {msg}"
        if record.exc_info and log.isEnabledFor(logging.DEBUG):
            msg += "\n" + "".join(traceback.format_exception(*record.exc_info)).rstrip()
        try:
            from tqdm import tqdm

            tqdm.write(msg, file=sys.stderr)
        except Exception:  # noqa: BLE001 - logging must never be the thing that fails
            print(msg, file=sys.stderr)


_state = {"progress": True}


def setup_logging(*, quiet: bool = False, verbose: bool = False) -> None:
    """Level of the `co2s` logger: warnings (-q), info (default) or debug (-v); progress bars off with -q."""
    log.handlers[:] = [_StderrHandler()]
    log.setLevel(logging.WARNING if quiet else logging.DEBUG if verbose else logging.INFO)
    log.propagate = False
    for name, child in logging.root.manager.loggerDict.items():  # co2s.runtime, ...: -q/-v decide for them too
        if name.startswith("co2s.") and isinstance(child, logging.Logger):
            child.setLevel(logging.NOTSET)
    _state["progress"] = not quiet
    for name in _CHATTY_LIBRARIES:
        logging.getLogger(name).setLevel(logging.DEBUG if verbose else logging.ERROR)


def is_verbose() -> bool:
    return log.isEnabledFor(logging.DEBUG)


def _verbosity(ctx: click.Context, param: click.Parameter, value: bool) -> None:
    if not value:
        return
    given = ctx.meta.setdefault("co2s.verbosity", param.name)
    if given != param.name:
        raise click.UsageError("-q/--quiet and -v/--verbose are exclusive", ctx)
    setup_logging(quiet=param.name == "quiet", verbose=param.name == "verbose")


def log_options(f: Callable) -> Callable:
    """-q/--quiet and -v/--verbose, the same on every tool (read the result with is_verbose())."""
    for short, long, help in (
        ("-v", "--verbose", "more detail: debug messages, and the traceback of an unexpected error"),
        ("-q", "--quiet", "only warnings and errors: no progress lines or bars"),
    ):
        flag = click.option(
            short, long, is_flag=True, expose_value=False, is_eager=True, callback=_verbosity, help=help
        )
        f = flag(f)
    return f


# ------------------------------------------------------------------------------------------------ progress
def show_progress() -> bool:
    """Progress bars draw when not -q and stderr is a terminal (in a log file every redraw would be a line)."""
    try:
        return _state["progress"] and sys.stderr.isatty()
    except (AttributeError, ValueError):  # replaced or closed stderr
        return False


def progress_bar(iterable: Iterable | None = None, *, enabled: bool = True, **kw):
    """tqdm on stderr, drawn only when show_progress() (and `enabled`); same arguments as tqdm otherwise."""
    from tqdm import tqdm

    kw.setdefault("leave", False)
    kw.setdefault("dynamic_ncols", True)
    return tqdm(iterable, file=sys.stderr, disable=not (enabled and show_progress()), **kw)


class StepProgress:
    """A bar over the named steps of one long job (co2s-export: the ONNX export, each precision conversion,
    calibration, parity). One step can run for minutes without reporting anything, so a thread redraws the bar
    every second: the elapsed time shows the job is alive."""

    def __init__(self, total: int, desc: str):
        self.bar = progress_bar(total=total, desc=desc, bar_format="{desc}: {n_fmt}/{total_fmt} [{elapsed}] {postfix}")
        self._started = False
        self._stop = threading.Event()
        self._ticker = None
        if not self.bar.disable:
            self._ticker = threading.Thread(target=self._tick, name="co2s-progress", daemon=True)
            self._ticker.start()

    def _tick(self) -> None:
        while not self._stop.wait(1.0):
            self.bar.refresh()

    def next(self, name: str) -> None:
        """The previous step is done; `name` runs now."""
        if self._started:
            self.bar.update(1)
        self._started = True
        self.bar.set_postfix_str(name)

    def close(self) -> None:
        self._stop.set()
        if self._ticker is not None:
            self._ticker.join()
        self.bar.close()


@contextlib.contextmanager
def step_progress(total: int, desc: str) -> Iterator[StepProgress]:
    steps = StepProgress(total, desc)
    try:
        yield steps
    finally:
        steps.close()


# ------------------------------------------------------------------------------------------------ options
class ListParam(click.ParamType):
    """A comma-separated list (`--precision fp16,int8`, `--batch 1,4`): each item one of `choices` (lower-cased),
    or an integer >= `min` when `choices` is None. A `keyword` (e.g. auto, all) stands alone. Gives a tuple."""

    name = "list"

    def __init__(self, choices: Sequence[str] | None = None, *, keywords: Sequence[str] = (), min: int = 1):
        self.choices, self.keywords, self.min = tuple(choices or ()), tuple(keywords), min

    def get_metavar(self, param, ctx=None) -> str:
        if not self.choices:
            return "N[,N...]"
        return "|".join(self.keywords + (",".join(self.choices),))

    def convert(self, value, param, ctx) -> tuple:
        if isinstance(value, tuple):
            return value
        items = [v.strip().lower() for v in str(value).split(",") if v.strip()]
        if not items:
            self.fail("expected a comma-separated list", param, ctx)
        if len(items) == 1 and items[0] in self.keywords:
            return (items[0],)
        if not self.choices:
            try:
                numbers = tuple(int(v) for v in items)
            except ValueError:
                self.fail(f"{value!r}: expected comma-separated integers like 1,4", param, ctx)
            if min(numbers) < self.min:
                self.fail(f"{value!r}: every value must be >= {self.min}", param, ctx)
            return numbers
        expected = ", ".join(self.choices) + (f" (or alone: {', '.join(self.keywords)})" if self.keywords else "")
        for v in items:
            if v not in self.choices:
                self.fail(f"{v!r} is not one of {expected}", param, ctx)
        return tuple(dict.fromkeys(items))


def renamed_option(old: str, new: str, why: str = ""):
    """A hidden `old` option that only says it is now `new` (usage error): scripts learn the new name at once."""

    def refuse(ctx, param, value):
        if value is not None:
            raise click.UsageError(f"{old} is now {new}{f' ({why})' if why else ''}", ctx)

    name = "renamed_" + old.lstrip("-").replace("-", "_")  # its own name: `--precisions` is `--precision`'s dest
    return click.option(old, name, hidden=True, expose_value=False, callback=refuse, help=f"renamed {new}")


# ------------------------------------------------------------------------------------------------ outputs
_created: list[Path] = []


def remove_if_failed(folder: str | os.PathLike) -> None:
    """`folder` and the parents this run is about to create are removed again, if still empty, when the run fails
    (call before creating it). A failed run leaves nothing behind, not even an empty --out."""
    folder = Path(folder).absolute()
    _created.extend(p for p in (folder, *folder.parents) if not p.exists() and p not in _created)


def _remove_created() -> None:
    for p in sorted(_created, key=lambda p: len(p.parts), reverse=True):  # deepest first
        with contextlib.suppress(OSError):  # not empty (or already gone): keep
            p.rmdir()
    _created.clear()


# ------------------------------------------------------------------------------------------------ running
def missing_extra(err: ModuleNotFoundError, tool_extra: str | None) -> str | None:
    """The extra that provides the module `err` misses (`tool_extra` when that one includes it), else None."""
    top = (err.name or "").split(".")[0]
    for extra, modules in EXTRA_MODULES.items():
        if top in modules:
            return tool_extra if tool_extra and extra in (tool_extra, *_EXTRA_INCLUDES.get(tool_extra, ())) else extra
    return None


def _error_line(err: BaseException, prog: str, tool_extra: str | None) -> str:
    if isinstance(err, Co2SError):
        return f"error: {err}"
    if isinstance(err, ModuleNotFoundError) and (extra := missing_extra(err, tool_extra)):
        return f"error: {prog} needs {err.name}, which is not installed: pip install 'co2s[{extra}]'"
    return f"error: unexpected {type(err).__name__}: {err} (run with -v for the traceback)"


def run(command: click.Command, argv: Sequence[str] | None = None, *, prog: str, extra: str | None = None) -> NoReturn:
    """Run a click command under the policy above and exit with its status. `extra` names the pip extra the tool
    needs (train, export), so a missing dependency is reported as the command that installs it."""
    setup_logging()
    _created.clear()
    try:
        status = command.main(args=list(argv) if argv is not None else None, prog_name=prog, standalone_mode=False)
        status = EXIT_OK if status is None else int(status)
    except (click.exceptions.Abort, KeyboardInterrupt):  # click turns Ctrl-C into Abort
        click.echo("interrupted: nothing half-written was left behind", err=True)
        status = EXIT_INTERRUPTED
    except click.exceptions.Exit as e:
        status = e.exit_code
    except click.ClickException as e:
        e.show()
        status = EXIT_USAGE if isinstance(e, click.UsageError) else EXIT_FAILED
    except Exception as e:  # noqa: BLE001 - the policy: one line for anything, the traceback with -v
        if is_verbose() and not isinstance(e, Co2SError):
            traceback.print_exc()
        click.echo(_error_line(e, prog, extra), err=True)
        status = EXIT_FAILED
    if status != EXIT_OK:
        _remove_created()
    sys.exit(status)


def _launch(target: str, prog: str, extra: str | None, argv: Sequence[str] | None) -> NoReturn:
    """Import the tool's CLI module (`module:function`) only now, and run the function with `argv`."""
    module, function = target.split(":")
    try:
        main = getattr(importlib.import_module(module), function)
    except ModuleNotFoundError as e:
        if missing_extra(e, extra) is None:
            raise
        click.echo(_error_line(e, prog, extra), err=True)
        sys.exit(EXIT_FAILED)
    main(argv)
    sys.exit(EXIT_OK)  # main exits itself; this only keeps the NoReturn promise


# The console scripts ([project.scripts]); the stages are named by string so this core module imports none of them.
def train_main(argv: Sequence[str] | None = None) -> NoReturn:
    _launch("co2s.train.cli:main", "co2s-train", "train", argv)


def export_main(argv: Sequence[str] | None = None) -> NoReturn:
    _launch("co2s.export.cli:main", "co2s-export", "export", argv)


def infer_main(argv: Sequence[str] | None = None) -> NoReturn:
    _launch("co2s.runtime.cli:infer_main", "co2s-infer", None, argv)


def bench_main(argv: Sequence[str] | None = None) -> NoReturn:
    _launch("co2s.runtime.cli:bench_main", "co2s-bench", None, argv)


def stream_main(argv: Sequence[str] | None = None) -> NoReturn:
    _launch("co2s.runtime.stream_cli:stream_main", "co2s-stream", "video", argv)
