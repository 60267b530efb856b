"""`co2s-export`: checkpoint -> bundle (ONNX FP32/FP16/INT8, parity report, optional engines and Triton repo).

    co2s-export --checkpoint run/best.pt --out bundles/potsdam --engine fp16
    co2s-export --untrained --preset paper --num-classes 6 --tile 512 --out bundles/plan
    co2s-export --from-bundle bundles/potsdam --engine fp16          # on the target GPU; no torch needed

Exit status (co2s.cli): 0 done; 1 error (one line `error: ...`, nothing written); 2 usage error; 3 the ONNX
bundle is complete but engines were asked for on a machine without an NVIDIA GPU (the message says the command
to run there); 4 partial: a precision failed its parity gate and was left out (the others were written; the
message says what would help); 130 interrupted.
"""

from __future__ import annotations

import logging
from pathlib import Path

import click

from co2s.bundle import formats
from co2s.cli import EXIT_DEFERRED, EXIT_OK, EXIT_PARTIAL, ListParam, log_options, remove_if_failed, renamed_option, run
from co2s.errors import Co2SInputError

_log = logging.getLogger("co2s.export").info


_HELPS = {
    "int8": "calibrate on images like the deployment's (--calib-data DIR), on more tiles (--calib-count 64), with "
    "another method (--int8-method ort-percentile)",
    "int8-cpu": "another CPU form (--cpu-int8 qdq or qoperator), calibration images like the deployment's "
    "(--calib-data DIR)",
    "fp16": "fp32 where FP16 loses labels, or the fp16 engine's own check on the target",
}


def _status(result) -> int:
    """The only place an export result becomes an exit status: partial (a precision failed its parity gate and
    was left out), engines deferred to the target GPU, or done."""
    for p, what in result.failed_precisions.items():
        _log(f"warning: {p} failed its parity gate: {what}")
    if result.engines_deferred is not None:
        click.echo(result.engines_deferred.message, err=True)
    if result.partial:
        left = [p for p, what in result.failed_precisions.items() if what.endswith("not written")]
        helps = "; ".join(f"{p}: {_HELPS[p]}" for p in left)
        click.echo(
            f"partial export: {', '.join(left)} left out of {result.bundle} (see its parity report). What may "
            f"help: {helps}; or keep it flagged as degraded with --allow-degraded.",
            err=True,
        )
        return EXIT_PARTIAL
    return EXIT_OK if result.engines_deferred is None else EXIT_DEFERRED


@click.command(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@log_options
@click.option("--checkpoint", type=click.Path(path_type=Path), help="co2s checkpoint written by co2s-train")
@click.option("--untrained", is_flag=True, help="export a randomly initialised model (plan latency before training)")
@click.option(
    "--from-bundle",
    "from_bundle",
    type=click.Path(path_type=Path),
    help="existing bundle: only build --engine / write --triton-repo (torch-free)",
)
@click.option("--out", type=click.Path(path_type=Path), help="bundle folder to write (atomically)")
@click.option("--force", is_flag=True, help="replace a non-empty --out / Triton model folder")
@click.option("--preset", type=click.Choice(formats.PRESET_NAMES), help="model size for --untrained (default paper)")
@click.option(
    "--num-classes",
    type=click.IntRange(min=1),
    help="class count for --untrained (or checked against the checkpoint)",
)
@click.option("--dataset", help="dataset name or YAML: classes/palette, checked against the checkpoint's class count")
@click.option("--students", type=click.Choice(["both", "clip", "dinov3"]), default="both", show_default=True)
@click.option("--fusion", type=click.Choice(formats.FUSIONS), default="mean", show_default=True)
@click.option("--tile", type=int, help="tile size, a multiple of 16 (default: the training crop / preset tile)")
@click.option("--batch", type=click.IntRange(min=1), help="fixed batch size (default 1)")
@click.option("--dynamic-batch", help="dynamic batch MIN:OPT:MAX, e.g. 1:4:8 (TensorRT optimisation profile)")
@click.option(
    "--precision",
    "precisions",
    type=ListParam(formats.PRECISIONS, keywords=("all",)),
    default="all",
    show_default=True,
    help="ONNX precisions to write, comma separated (fp32 is always written: it is the parity reference)",
)
@renamed_option("--precisions", "--precision", "a comma-separated list, as in every co2s tool")
@click.option(
    "--engine",
    "engines",
    type=ListParam(formats.ENGINE_PRECISIONS),
    multiple=True,
    help="also build TensorRT engines of these precisions, comma separated (repeatable)",
)
@click.option(
    "--calib-data",
    type=click.Path(path_type=Path),
    help="folder of images for INT8 calibration and parity (default: the synthetic scene set)",
)
@click.option(
    "--calib-count",
    type=click.IntRange(min=1),
    help="calibration/parity tiles (default 32 up to 256² tiles, the same pixels in fewer larger tiles: 8 at 512²)",
)
@click.option(
    "--int8-method",
    type=click.Choice(formats.INT8_METHODS),
    default="auto",
    show_default=True,
    help="auto = modelopt-max when nvidia-modelopt is installed, else ort-minmax",
)
@click.option(
    "--cpu-int8",
    "cpu_int8_form",
    type=click.Choice(formats.CPU_INT8_FORMS),
    default="dynamic",
    show_default=True,
    help="form of the int8-cpu model (onnxruntime CPU kernels): dynamic needs no calibration; qoperator/qdq are "
    "calibrated (U8 activations, S8 weights)",
)
@click.option(
    "--probs/--no-probs",
    default=True,
    show_default=True,
    help="a float16 `probs` output [B,N,H,W]: the runtime blends tile overlaps on it (seamless maps); "
    "--no-probs leaves only labels and confidence (blending then uses per-tile votes, with visible seams)",
)
@click.option(
    "--workspace",
    "workspace_gib",
    type=click.FloatRange(min=0, min_open=True),
    default=4.0,
    show_default=True,
    help="TensorRT workspace, GiB",
)
@click.option("--triton-repo", type=click.Path(path_type=Path), help="also write a Triton model repository here")
@click.option(
    "--allow-degraded",
    is_flag=True,
    help="keep a precision under its parity threshold, flagged degraded (default: leave it out, exit status 4)",
)
@click.option("--list-formats", is_flag=True, help="print the table of formats and exit")
def cli(**kw) -> int:
    """Export a Co2S checkpoint to a deployable bundle."""
    if kw["list_formats"]:
        click.echo(formats.table())
        return 0
    engines = formats.parse_precisions(
        [p for group in kw["engines"] for p in group], "--engine", formats.ENGINE_PRECISIONS
    )
    if kw["triton_repo"] is not None:
        remove_if_failed(kw["triton_repo"])
    if kw["from_bundle"] is not None:
        return _from_bundle(kw, engines)
    if kw["checkpoint"] is not None and kw["untrained"]:
        raise Co2SInputError("--checkpoint and --untrained are exclusive")
    if kw["out"] is None:
        raise Co2SInputError("--out BUNDLE is required")

    from .options import ExportOptions
    from .pipeline import export_bundle, parse_batch

    remove_if_failed(kw["out"])  # the bundle itself appears atomically; this is about the folders above it

    opts = ExportOptions(
        out=kw["out"],
        checkpoint=kw["checkpoint"],
        untrained=kw["untrained"],
        preset=kw["preset"],
        num_classes=kw["num_classes"],
        dataset=kw["dataset"],
        students=kw["students"],
        fusion=kw["fusion"],
        tile=kw["tile"],
        batch=parse_batch(kw["batch"], kw["dynamic_batch"]),
        precisions=formats.PRECISIONS
        if kw["precisions"] == ("all",)
        else formats.parse_precisions(kw["precisions"], "--precision"),
        engines=engines,
        calib_data=kw["calib_data"],
        calib_count=kw["calib_count"],
        int8_method=kw["int8_method"],
        cpu_int8_form=kw["cpu_int8_form"],
        probs=kw["probs"],
        workspace_gib=kw["workspace_gib"],
        triton_repo=kw["triton_repo"],
        allow_degraded=kw["allow_degraded"],
        force=kw["force"],
        log=_log,
    )
    if opts.preset and not opts.untrained:
        raise Co2SInputError("--preset applies to --untrained (a checkpoint records its own preset)")
    return _status(export_bundle(opts))


def _from_bundle(kw: dict, engines: tuple[str, ...]) -> int:
    """Torch-free: only the manifest, the format table, TensorRT and (optionally) tritonclient are imported."""
    ignored = [
        k for k in ("checkpoint", "out", "calib_data", "dataset", "tile", "batch", "dynamic_batch") if kw[k] is not None
    ] + (["untrained"] if kw["untrained"] else [])
    if ignored:
        raise Co2SInputError(f"--from-bundle takes the model from the bundle; drop --{ignored[0].replace('_', '-')}")
    if not engines and kw["triton_repo"] is None:
        raise Co2SInputError("--from-bundle needs --engine PRECISION and/or --triton-repo DIR")
    from co2s.bundle import load_bundle

    from .engines import add_engines, clean_leftovers

    bundle = kw["from_bundle"]
    if Path(bundle).is_dir():  # a killed engine build may have left the bundle inconsistent: repair it first
        for message in clean_leftovers(Path(bundle)):
            _log(message)
    manifest = load_bundle(bundle, verify=True)
    code = EXIT_OK
    if engines:
        code = _status(add_engines(bundle, engines, workspace_gib=kw["workspace_gib"], log=_log))
    if kw["triton_repo"] is not None:
        from .triton import write_triton_repo

        info = write_triton_repo(
            load_bundle(bundle, verify=True) if engines else manifest, kw["triton_repo"], force=kw["force"]
        )
        _log(f"wrote Triton model {info['path']} ({info['platform']}, {info['precision']})")
    return code


def main(argv: list[str] | None = None) -> None:
    run(cli, argv, prog="co2s-export", extra="export")


if __name__ == "__main__":
    main()
