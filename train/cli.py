"""`co2s-train`: train (the default command), evaluate, make class prototypes, inspect model sizes."""

from __future__ import annotations

import sys
import time

import click

from co2s.errors import Co2SInputError


class _DefaultGroup(click.Group):
    """`co2s-train --dataset X ...` means `co2s-train fit --dataset X ...`; named subcommands work as usual."""

    default_command = "fit"

    def parse_args(self, ctx, args):
        if args and args[0] not in self.commands and args[0] not in ("--help", "-h"):
            args = [self.default_command, *args]
        return super().parse_args(ctx, args)


@click.group(cls=_DefaultGroup)
def cli() -> None:
    """Train the Co2S student pair (default command: fit), evaluate checkpoints, make class prototypes."""


@cli.command()
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
    protos = text_prototypes(info.concepts, clip=get_preset(preset).backbones["clip"], weights=clip_weights,
                             template=template)
    save_prototypes(out, protos, info.classes)
    click.echo(f"wrote {out}: {protos.shape[0]} classes x {protos.shape[1]} dims")


@cli.command()
@click.option("--preset", default="paper", show_default=True)
@click.option("--num-classes", default=6, show_default=True)
@click.option("--tile", type=int, help="input size (default: the preset's tile)")
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
    model = build_co2s(num_classes, preset=preset, img_size=tile,
                       prototypes=np.random.default_rng(0).standard_normal((num_classes, text_dim)).astype(np.float32))
    model.eval()
    x = torch.rand(1, 3, tile, tile)
    click.echo(f"preset {preset}, {num_classes} classes, tile {tile}")
    for name, student in model.students.items():
        parts = {"backbone": student.backbone, "head": student.head, "guidance": student.guidance}
        line = ", ".join(
            f"{k} {sum(q.numel() for q in m.parameters()) / 1e6:.3f} M" for k, m in parts.items()
        )
        total = sum(q.numel() for q in student.parameters())
        trainable = sum(q.numel() for q in student.parameters() if q.requires_grad)
        bb_trainable = sum(q.numel() for q in student.backbone.parameters() if q.requires_grad)
        msg = (f"  {name}: {total:,} parameters ({line}); trainable {trainable:,} "
               f"(backbone attention {bb_trainable:,})")
        if timed:
            with torch.no_grad():
                student(x)  # warm-up
                t0 = time.perf_counter()
                student(x)
                msg += f"; forward {1000 * (time.perf_counter() - t0):.0f} ms"
        click.echo(msg)


def main() -> None:
    try:
        cli(standalone_mode=False)
    except Co2SInputError as e:
        click.echo(f"error: {e}", err=True)
        sys.exit(2)
    except click.exceptions.Abort:
        sys.exit(130)
    except click.ClickException as e:
        e.show()
        sys.exit(e.exit_code)
