"""Student backbones: `build_backbone(name, weights, img_size=...)` returns a module whose forward maps a
normalised [B,3,H,W] image to the list of [B,C_i,H/16,W/16] feature maps the decode head consumes.

Every backbone has: `name`, `out_channels` (per map), `text_dim` (size of the class vectors the head
compares with the last map), `patch_size`, `pixel_mean`/`pixel_std` (normalise [0,1] RGB with these) and
`taps`. Families: `clip` (CLIP ViT-B/16, MaskCLIP value path) and `dinov3` (DINOv3 ViT-B/16).
"""

from __future__ import annotations

from . import clip, dinov3  # noqa: F401  (importing registers the variants)
from .registry import build_backbone, count_parameters, list_backbones

__all__ = ["build_backbone", "count_parameters", "list_backbones"]
