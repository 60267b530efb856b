"""`co2s-train`: train (the default command), evaluate, make class prototypes, inspect model sizes."""

from __future__ import annotations

import os
import time
from pathlib import Path

import click

from co2s.bundle.formats import FUSIONS
from co2s.cli import log_options, remove_if_failed, renamed_option, run, show_progress

CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 110}
_LOG_FLAGS = ("-q", "--quiet", "-v", "--verbose")


class _DefaultGroup(click.Group):
    """`co2s-train --dataset X ...` means `co2s-train fit --dataset X ...`; named subcommands work as usual. The
    group's help lists fit's options too: they are what most users came for."""

    default_command = "fit"

    def parse_args(self, ctx, args):
        at = next((i for i, a in enumerate(args) if a not in _LOG_FLAGS), len(args))  # -q/-v may come first
        if at < len(args) and args[at] not in self.commands and args[at] not in ctx.help_option_names:
            args = [*args[:at], self.default_command, *args[at:]]
        return super().parse_args(ctx, args)

    def format_help(self, ctx, formatter) -> None:
        super().format_help(ctx, formatter)
        fit = self.commands[self.default_command]
        shown = {p.name for p in self.get_params(ctx)}  # -q, -v, -h: listed above already
        records = [r for p in fit.get_params(ctx) if p.name not in shown and (r := p.get_help_record(ctx))]
        with formatter.section(f"Training options ({self.default_command}, the default command)"):
            formatter.write_dl(records)


@click.group(cls=_DefaultGroup, context_settings=CONTEXT)
@log_options
def cli() -> None:
    """Train the Co2S student pair (default command: fit), evaluate checkpoints, make class prototypes.

    \b
    co2s-train --dataset synthetic --preset tiny --out runs/demo
    co2s-train evaluate runs/demo/best.pt --dataset synthetic
    """


def _rank0() -> bool:
    return int(os.environ.get("RANK", "0")) == 0


@cli.command()
@log_options
@click.option("--dataset", required=True, help="whdld, loveda, potsdam, gid, mer, msl, dubai, synthetic or a YAML file")
@click.option("--preset", default="paper", show_default=True, help="paper (ViT-B/16 pair) or tiny")
@click.option("--clip-weights", type=click.Path(dir_okay=False), help="CLIP checkpoint with a text tower")
@click.option("--out", required=True, type=click.Path(dir_okay=False), help="output .npy")
@click.option("--template", default="a photo of a {}", show_default=True)
def prototypes(dataset: str, preset: str, clip_weights: str | None, out: str, template: str) -> None:
    """CLIP text prototypes of each class's concepts (mean of concept embeddings, L2-normalised)."""
    from .data import get_dataset_info
    from .model import get_preset
    from .prototypes import save_prototypes, text_prototypes

    info = get_dataset_info(dataset)
    remove_if_failed(Path(out).parent)
    protos = text_prototypes(
        info.concepts, clip=get_preset(preset).backbones["clip"], weights=clip_weights, template=template
    )
    save_prototypes(out, protos, info.classes)
    click.echo(f"wrote {out}: {protos.shape[0]} classes x {protos.shape[1]} dims")


@cli.command()
@log_options
@click.option("--preset", default="paper", show_default=True)
@click.option("--num-classes", default=6, show_default=True, type=click.IntRange(min=1))
@click.option("--tile", type=click.IntRange(min=16), help="input size (default: the preset's tile)")
@click.option("--time", "timed", is_flag=True, help="also time one forward pass per student (batch 1, CPU)")
def info(preset: str, num_classes: int, tile: int | None, timed: bool) -> None:
    """Parameter counts (total / trainable) of each student of a preset, optionally with forward time."""
    import numpy as np
    import torch

    from .model import build_co2s, get_preset

    p = get_preset(preset)
    tile = tile or p.tile
    torch.manual_seed(0)
    # Random prototypes of the right shape: only sizes and timings are reported here.
    from .backbones import build_backbone

    text_dim = build_backbone(p.backbones["clip"], img_size=tile).text_dim
    model = build_co2s(
        num_classes,
        preset=preset,
        img_size=tile,
        prototypes=np.random.default_rng(0).standard_normal((num_classes, text_dim)).astype(np.float32),
    )
    model.eval()
    x = torch.rand(1, 3, tile, tile)
    click.echo(f"preset {preset}, {num_classes} classes, tile {tile}")
    for name, student in model.students.items():
        parts = {"backbone": student.backbone, "head": student.head, "guidance": student.guidance}
        line = ", ".join(f"{k} {sum(q.numel() for q in m.parameters()) / 1e6:.3f} M" for k, m in parts.items())
        total = sum(q.numel() for q in student.parameters())
        trainable = sum(q.numel() for q in student.parameters() if q.requires_grad)
        bb_trainable = sum(q.numel() for q in student.backbone.parameters() if q.requires_grad)
        msg = f"  {name}: {total:,} parameters ({line}); trainable {trainable:,} (backbone attention {bb_trainable:,})"
        if timed:
            with torch.no_grad():
                student(x)  # warm-up
                t0 = time.perf_counter()
                student(x)
                msg += f"; forward {1000 * (time.perf_counter() - t0):.0f} ms"
        click.echo(msg)


@cli.command()
@log_options
@click.option("--dataset", required=True, help="whdld, loveda, potsdam, gid, mer, msl, dubai, synthetic or a YAML file")
@click.option("--data-root", type=click.Path(file_okay=False), help="dataset folder (dubai: default shared data)")
@click.option("--split", default="1_8", show_default=True, help="labelled fraction, as the reference names it")
@click.option("--out", required=True, type=click.Path(file_okay=False), help="run folder")
@click.option(
    "--preset",
    default="paper",
    show_default=True,
    help="paper (ViT-B/16 pair, the paper's schedule: docs/method.md §9) or tiny (small students, CPU)",
)
@click.option(
    "--method",
    default="co2s",
    show_default=True,
    type=click.Choice(["co2s", "supervised", "unimatch-clip", "unimatch-dinov3", "homogeneous"]),
)
@click.option("--iters", type=click.IntRange(min=1), help="training iterations in all (default: from the preset)")
@click.option("--batch-size", type=click.IntRange(min=1), help="images per process for each of labelled / unlabelled")
@click.option("--eval-every", type=click.IntRange(min=1), help="iterations between val evaluations (and last.pt)")
@click.option("--crop", type=int, help="training crop = model input = evaluation window")
@click.option("--seed", default=0, show_default=True)
@click.option(
    "--lr", default=1e-4, show_default=True, type=click.FloatRange(min=0, min_open=True), help="base lr (head x10)"
)
@click.option(
    "--backbone-lr-mult",
    type=click.FloatRange(min=0),
    help="backbone lr multiplier (default: paper 0.01, tiny 1)",
)
@click.option(
    "--sta-grad/--no-sta-grad",
    default=True,
    show_default=True,
    help="L_sta trains the learning student (off: the reference's detached term)",
)
@click.option("--amp", type=click.Choice(["bf16", "fp16"]), help="mixed precision on CUDA")
@click.option("--clip-weights", type=click.Path(dir_okay=False), help="CLIP checkpoint")
@click.option("--dinov3-weights", type=click.Path(dir_okay=False), help="DINOv3 checkpoint")
@click.option(
    "--prototypes",
    "prototypes_file",
    type=click.Path(dir_okay=False),
    help=".npy from `co2s-train prototypes` (default: computed from the CLIP weights)",
)
@click.option("--num-labeled", type=click.IntRange(min=1), help="synthetic: labelled scenes")
@click.option("--num-unlabeled", type=click.IntRange(min=1), help="synthetic: unlabelled scenes")
@click.option("--num-val", type=click.IntRange(min=1), help="synthetic: val scenes")
@click.option("--image-size", type=click.IntRange(min=1), help="synthetic: scene size; dubai: patch size")
@click.option("--workers", type=click.IntRange(min=0), help="data-loading processes (default: from the preset)")
@click.option(
    "--fusion",
    default="mean",
    show_default=True,
    type=click.Choice(FUSIONS),
    help="how the fused prediction (and best.pt) is scored",
)
@click.option("--resume", is_flag=True, help="continue from OUT/last.pt (same data order, schedule and RNG)")
@click.option("--stop-after", type=click.IntRange(min=1), help="end this invocation after N iterations (saves last.pt)")
@click.option("--device", help="cpu or cuda (default: cuda when available)")
def fit(
    dataset,
    data_root,
    split,
    out,
    preset,
    method,
    iters,
    batch_size,
    eval_every,
    crop,
    seed,
    lr,
    backbone_lr_mult,
    sta_grad,
    amp,
    clip_weights,
    dinov3_weights,
    prototypes_file,
    num_labeled,
    num_unlabeled,
    num_val,
    image_size,
    workers,
    fusion,
    resume,
    stop_after,
    device,
) -> None:
    """Train a Co2S pair (or a baseline) semi-supervised; works under torchrun."""
    from .config import TrainConfig
    from .trainer import fit as run_fit

    cfg = TrainConfig(
        dataset=dataset,
        out=out,
        data_root=data_root,
        split=split,
        preset=preset,
        method=method,
        iters=iters,
        batch_size=batch_size,
        eval_every=eval_every,
        crop=crop,
        seed=seed,
        lr=lr,
        backbone_lr_mult=backbone_lr_mult,
        sta_grad=sta_grad,
        amp=amp,
        clip_weights=clip_weights,
        dinov3_weights=dinov3_weights,
        prototypes=prototypes_file,
        num_labeled=num_labeled,
        num_unlabeled=num_unlabeled,
        num_val=num_val,
        image_size=image_size,
        workers=workers,
        fusion=fusion,
    )
    remove_if_failed(out)
    result = run_fit(cfg, resume=resume, stop_after=stop_after, device=device, progress=show_progress())
    if _rank0():
        click.echo(
            f"done at iteration {result['iteration']}: best fused val mIoU {result['best_miou']:.2f} "
            f"(iteration {result['best_iteration']}); checkpoints in {out}"
        )


def _fraction(ctx, param, value):
    if value in ("val", "labeled"):  # the old meaning of evaluate --split
        raise click.BadParameter(f"{value!r}: --split is the labelled fraction (1_8); choose the part with --part")
    return value


@cli.command()
@log_options
@click.argument("checkpoint", type=click.Path(dir_okay=False))
@click.option("--dataset", required=True, help="any dataset with the checkpoint's classes (name or YAML)")
@click.option("--data-root", type=click.Path(file_okay=False))
@click.option(
    "--part",
    default="val",
    show_default=True,
    type=click.Choice(["val", "labeled"]),
    help="which part to score: the dataset's val split, or the labelled part of --split",
)
@click.option(
    "--split",
    callback=_fraction,
    help="labelled fraction, as in training, for --part labeled (default: the training run's)",
)
@renamed_option("--ratio", "--split", "the labelled fraction, as co2s-train fit names it")
@click.option("--fusion", default="mean", show_default=True, type=click.Choice(FUSIONS))
@click.option("--num-val", type=click.IntRange(min=1), help="synthetic: val scenes (default: the training run's)")
@click.option(
    "--image-size",
    type=click.IntRange(min=1),
    help="synthetic: scene size; dubai: patch size (default: the training run's)",
)
@click.option("--seed", type=int, help="synthetic/dubai split seed (default: the training run's)")
@click.option("--device", help="cpu or cuda (default: cuda when available)")
def evaluate(checkpoint, dataset, data_root, part, split, fusion, num_val, image_size, seed, device) -> None:
    """Sliding-window mIoU of every student and of the fused prediction; prints the per-class table.

    The dataset may be another one than the checkpoint was trained on (another region: domain shift), as long as
    it has the same classes.
    """
    from .trainer import evaluate_checkpoint

    given = {"split": split, "num_val": num_val, "image_size": image_size, "seed": seed}
    result = evaluate_checkpoint(
        checkpoint,
        dataset,
        data_root=data_root,
        part=part,
        fusion=fusion,
        device=device,
        progress=show_progress(),
        **{k: v for k, v in given.items() if v is not None},
    )
    if _rank0():
        click.echo(result.table())


def main(argv: list[str] | None = None) -> None:
    run(cli, argv, prog="co2s-train", extra="train")
