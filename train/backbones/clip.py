"""CLIP student backbone: open_clip's ViT vision tower with MaskCLIP value-path taps (docs/method.md §2.1).

Numerics follow the original OpenAI CLIP (QuickGELU, LayerNorm eps 1e-5), not the reference's exact
GELU / eps 1e-6. Inputs are normalised with CLIP's own mean/std; the reference fed
ImageNet-normalised pixels to CLIP instead (docs/method.md §10.1).

The module keeps open_clip's vision tower as the child `visual`, so parameter names are open_clip's
(`visual.transformer.resblocks.{i}.attn.in_proj_weight`, ...): the freeze rule "name contains 'attn'"
selects exactly in_proj/out_proj, and OpenAI/open_clip checkpoints map one to one.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from functools import partial

import open_clip
import torch
import torch.nn.functional as F
from open_clip.model import CLIPTextCfg, CLIPVisionCfg, _build_text_tower, _build_vision_tower
from torch import nn

from co2s.errors import Co2SInputError

from ._checkpoint import check_state_dict, read_state_dict, verify_loaded
from .registry import register_backbone

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)

# Top-level key prefixes of the text tower inside a full OpenAI/open_clip CLIP state dict.
_TEXT_KEYS = ("token_embedding.", "positional_embedding", "transformer.", "ln_final.", "text_projection")


@dataclass(frozen=True)
class ClipVariant:
    vision: dict  # CLIPVisionCfg fields (image_size is replaced by the crop size)
    text: dict  # CLIPTextCfg fields, for the prototype text tower
    embed_dim: int  # joint image-text embedding size (the last tap's channels)
    taps: tuple[int, ...]  # value-path taps; the last one yields the dense embedding


def _vitb16() -> ClipVariant:
    cfg = open_clip.get_model_config("ViT-B-16")  # bundled JSON, no network
    return ClipVariant(vision=cfg["vision_cfg"], text=cfg["text_cfg"], embed_dim=cfg["embed_dim"], taps=(0, 4, 11))


VARIANTS: dict[str, ClipVariant] = {
    "clip_vitb16": _vitb16(),
    "clip_tiny": ClipVariant(
        vision=dict(layers=4, width=64, head_width=32, patch_size=16),
        text=dict(context_length=77, vocab_size=49408, width=64, heads=2, layers=2),
        embed_dim=64,
        taps=(0, 1, 3),
    ),
}


def resize_pos_embed(pos: torch.Tensor, old_hw: tuple[int, int], new_hw: tuple[int, int]) -> torch.Tensor:
    """Bicubic resize (align_corners=False, no antialias, as mmseg) of a [1+h*w, C] grid; class token kept."""
    cls_pos, grid = pos[:1], pos[1:]
    c = pos.shape[-1]
    grid = grid.reshape(1, old_hw[0], old_hw[1], c).permute(0, 3, 1, 2)
    grid = F.interpolate(grid.float(), size=new_hw, mode="bicubic", align_corners=False).to(pos.dtype)
    grid = grid.permute(0, 2, 3, 1).reshape(new_hw[0] * new_hw[1], c)
    return torch.cat([cls_pos, grid], dim=0)


def value_path(block: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """MaskCLIP value path of one open_clip ResidualAttentionBlock: attention where every token attends
    only to itself. ln_1 -> v third of in_proj -> out_proj -> + input -> + mlp(ln_2(.)).

    Written with plain slicing and linear (no tensor_split, no in-place ops) so it exports to ONNX.
    """
    attn = block.attn
    d = x.shape[-1]
    v = F.linear(block.ln_1(x), attn.in_proj_weight[2 * d :], attn.in_proj_bias[2 * d :])
    x = x + block.ls_1(attn.out_proj(v))
    return x + block.ls_2(block.mlp(block.ln_2(x)))


class ClipBackbone(nn.Module):
    """forward(x normalised with CLIP mean/std) -> [v-path map of each tap but the last ([B,width,h,w]),
    L2-normalised dense embedding of the last tap's v-path ([B,embed_dim,h,w])], h = H/16, w = W/16.

    Blocks after the last tap, and the ordinary path of the last tapped block (it only fed the unused
    CLS embedding), are not computed.
    """

    patch_size = 16
    pixel_mean = CLIP_MEAN
    pixel_std = CLIP_STD

    def __init__(self, name: str, variant: ClipVariant, img_size: int):
        super().__init__()
        vision = CLIPVisionCfg(**{**variant.vision, "image_size": img_size})
        if list(variant.taps) != sorted(set(variant.taps)) or not 0 <= variant.taps[-1] < vision.layers:
            raise ValueError(f"bad taps {variant.taps} for {vision.layers} layers")
        self.name = name
        self.taps = tuple(variant.taps)
        self.out_channels = (vision.width,) * (len(self.taps) - 1) + (variant.embed_dim,)
        self.text_dim = variant.embed_dim
        # quick_gelu=True + open_clip's LayerNorm (eps 1e-5) = the original OpenAI CLIP numerics.
        self.visual = _build_vision_tower(variant.embed_dim, vision, quick_gelu=True)
        self.grid_size: tuple[int, int] = tuple(self.visual.grid_size)

    def _pos_embed(self, hw: tuple[int, int]) -> torch.Tensor:
        pos = self.visual.positional_embedding
        if hw != self.grid_size:  # other input sizes: resize the stored grid again, as the reference does
            pos = resize_pos_embed(pos, self.grid_size, hw)
        return pos

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        vis = self.visual
        b = x.shape[0]
        x = vis.conv1(x)  # [B, C, h, w]
        hw = (x.shape[2], x.shape[3])
        x = x.flatten(2).transpose(1, 2)  # [B, hw, C]
        cls = vis.class_embedding.to(x.dtype).expand(b, 1, -1)
        x = torch.cat([cls, x], dim=1) + self._pos_embed(hw).to(x.dtype)
        x = vis.ln_pre(x)

        outs = []
        blocks = vis.transformer.resblocks
        for i in range(self.taps[-1]):
            if i in self.taps:
                outs.append(value_path(blocks[i], x))
            x = blocks[i](x)
        y = vis.ln_post(value_path(blocks[self.taps[-1]], x)) @ vis.proj
        outs.append(F.normalize(y, dim=-1))
        # Drop the class token and go to NCHW.
        return [t[:, 1:].transpose(1, 2).reshape(b, t.shape[-1], hw[0], hw[1]) for t in outs]

    def load_weights(self, weights: str | os.PathLike) -> None:
        """Load an OpenAI CLIP TorchScript archive, an open_clip checkpoint (`visual.*` keys) or a bare
        vision-tower state dict; resize the position grid to this model's; load strictly; verify."""
        path, sd = read_state_dict(weights)
        prefix = "visual." if any(k.startswith("visual.") for k in sd) else ""
        src = {k[len(prefix) :]: v for k, v in sd.items() if k.startswith(prefix)}

        expected = {k: v.shape for k, v in self.visual.state_dict().items()}
        pos = src.get("positional_embedding")
        want = expected["positional_embedding"]
        if pos is not None and pos.ndim == 2 and pos.shape[1] == want[1] and pos.shape != want:
            g = math.isqrt(pos.shape[0] - 1)
            if g * g != pos.shape[0] - 1:
                raise Co2SInputError(
                    f"{path}: key '{prefix}positional_embedding' has shape {list(pos.shape)}, "
                    f"not 1 + a square grid of tokens"
                )
            src["positional_embedding"] = resize_pos_embed(pos.float(), (g, g), self.grid_size)

        check_state_dict(path, expected, src, family=f"CLIP vision tower ({self.name})", prefix=prefix)
        self.visual.load_state_dict(src, strict=True)
        verify_loaded(path, self.visual.state_dict(), src)


def build_text_tower(
    name: str = "clip_vitb16", weights: str | os.PathLike | None = None, *, seed: int = 0
) -> nn.Module:
    """open_clip TextTransformer matching a CLIP variant (QuickGELU, eps 1e-5), in eval mode.

    With `weights` (the same file as the vision tower, OpenAI or open_clip layout) the text keys are loaded
    strictly and verified; without, the tower is randomly initialised from `seed`, which is only
    meaningful for tests and demos.
    """
    if name not in VARIANTS:
        raise Co2SInputError(f"unknown CLIP variant {name!r}; available: {', '.join(sorted(VARIANTS))}")
    variant = VARIANTS[name]
    with torch.random.fork_rng(devices=[]):  # seeded init without disturbing the caller's RNG
        torch.manual_seed(seed)
        text = _build_text_tower(variant.embed_dim, CLIPTextCfg(**variant.text), quick_gelu=True)
    if weights is not None:
        path, sd = read_state_dict(weights)
        if "token_embedding.weight" not in sd:
            raise Co2SInputError(
                f"{path}: no CLIP text tower in this file (key 'token_embedding.weight' missing); "
                f"pass a full OpenAI or open_clip CLIP checkpoint"
            )
        src = {k: v for k, v in sd.items() if k.startswith(_TEXT_KEYS)}
        expected = {k: v.shape for k, v in text.state_dict().items()}
        check_state_dict(path, expected, src, family=f"CLIP text tower ({name})")
        text.load_state_dict(src, strict=True)
        verify_loaded(path, text.state_dict(), src)
    return text.eval()


for _name, _variant in VARIANTS.items():
    register_backbone(_name, partial(ClipBackbone, _name, _variant))
