"""The deploy module: a trained Co2S pair with everything constant at inference folded, as one graph.

    images uint8 [B, H, W, 3] (RGB, NHWC, 0-255)
      -> per student: (x - 255*mean) / (255*std) as one Mul+Add (each student has its own normalisation)
      -> backbone (DINOv3 RoPE sin/cos baked for the tile; CLIP block 11's regular path is never computed)
      -> VLG head with the class vectors folded (normalised, pushed through text_proj: two constants)
      -> softmax per student -> fusion (mean | max-confidence) -> labels uint8 [B,H,W], confidence f32 [B,H,W]
         (+ probs f16 [B,N,H,W] for overlapped-tile blending when asked)

Folding is done here, on the export side, by wrapping or patching modules of a model built only for export;
the training code is not changed except for the head's `fold_text`/`decode_folded` split.
"""

from __future__ import annotations

import types
from dataclasses import dataclass

import torch
from torch import nn

from co2s.bundle.formats import FUSIONS, PATCH_SIZE, check_patch_multiple
from co2s.errors import Co2SInputError
from co2s.train.model import Co2S, Student, fuse_probabilities

INPUT_NAME = "images"
OUTPUT_NAMES = ("labels", "confidence")
PROBS_NAME = "probs"
PROBS_DTYPE = torch.float16  # half the copy-back of float32; plenty for blending weights


@dataclass(frozen=True)
class DeployConfig:
    students: tuple[str, ...]  # names inside Co2S.students, in graph order
    fusion: str = "mean"
    tile: int = 512
    probs: bool = False

    def __post_init__(self) -> None:
        if self.fusion not in FUSIONS:
            raise Co2SInputError(f"--fusion must be one of {', '.join(FUSIONS)}, got {self.fusion!r}")
        check_patch_multiple(self.tile, "--tile")

    @property
    def output_names(self) -> tuple[str, ...]:
        return OUTPUT_NAMES + ((PROBS_NAME,) if self.probs else ())


def bake_rope(module: nn.Module, grid: tuple[int, int]) -> int:
    """Replace every RoPE module's `get_embed` with a constant computed once for this grid.

    timm's DINOv3 Eva (dynamic_img_size=True) rebuilds sin/cos from H, W on every call: arange, meshgrid,
    periods, sin/cos. Traced as is that becomes Range/Tile (and If with dynamic shapes), which TensorRT
    rejects or miscompiles (NVIDIA/TensorRT 4558, 4742). The buffer holds exactly what `get_embed` returns
    in eval mode, so this is numerically a no-op. Returns how many modules were baked.
    """
    baked = 0
    for sub in module.modules():
        if not (callable(getattr(sub, "get_embed", None)) and type(sub).__name__.startswith("RotaryEmbedding")):
            continue
        was_training = sub.training
        sub.eval()  # no coordinate augmentation
        with torch.no_grad():
            emb = sub.get_embed(shape=list(grid)).detach().clone()
        sub.train(was_training)
        sub.register_buffer("baked_embed", emb, persistent=False)

        def get_embed(self, shape=None, dtype=None, _grid=tuple(grid)):
            if shape is not None and tuple(int(s) for s in shape) != _grid:
                raise RuntimeError(f"RoPE was baked for grid {_grid}, asked for {tuple(shape)}")
            return self.baked_embed if dtype is None else self.baked_embed.to(dtype)

        sub.get_embed = types.MethodType(get_embed, sub)
        baked += 1
    return baked


def explicit_attention(module: nn.Module) -> int:
    """Attention as matmul-softmax-matmul (timm's `fused_attn=False`): the pattern TensorRT fuses into MHA
    and the one whose score MatMul/Softmax the FP16 pass keeps in FP32. SDPA would be decomposed anyway."""
    n = 0
    for sub in module.modules():
        if getattr(sub, "fused_attn", None) is True:
            sub.fused_attn = False
            n += 1
    return n


class DeployStudent(nn.Module):
    """uint8-range NCHW float -> logits [B, N, H, W]; normalisation and class vectors folded."""

    def __init__(self, student: Student, tile: int):
        super().__init__()
        self.backbone = student.backbone
        self.head = student.head
        mean = torch.as_tensor(student.backbone.pixel_mean, dtype=torch.float32).view(1, 3, 1, 1)
        std = torch.as_tensor(student.backbone.pixel_std, dtype=torch.float32).view(1, 3, 1, 1)
        # (x/255 - mean)/std == x * scale + shift
        self.register_buffer("scale", 1.0 / (255.0 * std))
        self.register_buffer("shift", -mean / std)
        with torch.no_grad():
            text, text_feats = student.head.fold_text(student.guidance())
        self.register_buffer("text", text.detach().clone())
        self.register_buffer("text_feats", text_feats.detach().clone())
        grid = (tile // PATCH_SIZE, tile // PATCH_SIZE)
        self.rope_baked = bake_rope(self.backbone, grid)
        self.explicit_attention = explicit_attention(self.backbone)

    def forward(self, x255: torch.Tensor) -> torch.Tensor:
        feats = self.backbone(x255 * self.scale + self.shift)
        return self.head.decode_folded(feats, self.text, self.text_feats, tuple(x255.shape[-2:]))


class DeployModel(nn.Module):
    """The exported graph: uint8 NHWC tile(s) in, labels/confidence(/probs) out."""

    def __init__(self, model: Co2S, config: DeployConfig):
        super().__init__()
        missing = [s for s in config.students if s not in model.students]
        if missing:
            raise Co2SInputError(
                f"--students: this checkpoint has no student {missing[0]!r} (it has {', '.join(model.students)})"
            )
        self.config = config
        self.students = nn.ModuleDict(
            {name: DeployStudent(model.students[name], config.tile) for name in config.students}
        )
        self.eval()

    def forward(self, images: torch.Tensor):
        x = images.permute(0, 3, 1, 2).float()  # NHWC uint8 -> NCHW float, values 0..255
        logits = [s(x) for s in self.students.values()]
        probs = fuse_probabilities(logits, self.config.fusion)
        confidence, labels = probs.max(dim=1)
        out = (labels.to(torch.uint8), confidence)
        if self.config.probs:
            out = out + (probs.to(PROBS_DTYPE),)
        return out

    def folded_summary(self) -> list[str]:
        notes = [
            "input normalisation (per-student mean/std) as one Mul+Add in the graph",
            "class vectors L2-normalised and projected by head.text_proj (constants)",
        ]
        for name, s in self.students.items():
            if s.rope_baked:
                notes.append(
                    f"{name}: RoPE sin/cos baked for {self.config.tile // PATCH_SIZE}x{self.config.tile // PATCH_SIZE} patches"
                )
            if s.explicit_attention:
                notes.append(f"{name}: explicit matmul-softmax attention in {s.explicit_attention} blocks")
            if hasattr(s.backbone, "taps") and hasattr(s.backbone, "visual"):
                notes.append(f"{name}: ordinary path of the last tapped block (CLS-only) not computed")
        return notes


@torch.no_grad()
def reference_predict(model: Co2S, students: tuple[str, ...], fusion: str, images_u8) -> dict:
    """PyTorch reference on the *unfolded* training model: what the deploy graph must reproduce."""
    import numpy as np

    x = torch.as_tensor(np.ascontiguousarray(images_u8)).permute(0, 3, 1, 2).float() / 255.0
    logits = [model.students[name](x) for name in students]
    probs = fuse_probabilities(logits, fusion)
    confidence, labels = probs.max(dim=1)
    return {"labels": labels.to(torch.uint8).numpy(), "confidence": confidence.numpy(), "probs": probs.numpy()}
