"""DINOv3 student backbone: timm's `vit_base_patch16_dinov3_qkvb` (an Eva model) (docs/method.md §2.2).

Numerics follow the official DINOv3 hub model (LayerNorm eps 1e-5, fp32 RoPE periods), not the
reference's eps 1e-6 / bf16 RoPE. The `_qkvb` variant has trainable q/v biases and a k-bias fixed at zero
(a non-persistent zero buffer), which is what Meta's `LinearKMaskedBias` computes. Meta's module therefore
counts 9,216 more "attn" parameters (the k thirds of qkv.bias, multiplied by a zero mask, so they never
act): attention-only trainable is 28,339,200 here versus the reference's 28.35 M (docs/method.md §2.3).

The timm model is kept as the child `vit`, so parameter names are timm's (`vit.blocks.{i}.attn.qkv.weight`,
`attn.q_bias`, `attn.v_bias`, `attn.proj.*`); the freeze rule "name contains 'attn'" selects exactly those.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import timm
import torch
from timm.models.eva import checkpoint_filter_fn
from torch import nn

from co2s.errors import Co2SInputError

from ._checkpoint import StateDict, check_state_dict, read_state_dict, verify_loaded
from .registry import register_backbone

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class Dinov3Variant:
    embed_dim: int
    depth: int
    num_heads: int
    taps: tuple[int, ...]  # blocks whose (final-normed) outputs are returned


VARIANTS: dict[str, Dinov3Variant] = {
    "dinov3_vitb16": Dinov3Variant(embed_dim=768, depth=12, num_heads=12, taps=(2, 7, 11)),
    "dinov3_tiny": Dinov3Variant(embed_dim=64, depth=4, num_heads=2, taps=(1, 2, 3)),
}


def _meta_name(timm_key: str) -> str:
    return (
        timm_key.replace("reg_token", "storage_tokens")
        .replace("gamma_1", "ls1.gamma")
        .replace("gamma_2", "ls2.gamma")
        .replace("attn.q_bias", "attn.qkv.bias")
    )


def _meta_to_timm(sd: StateDict) -> StateDict:
    """Our own Meta -> timm mapping, used to cross-check timm's `checkpoint_filter_fn` tensor by tensor."""
    out = {}
    for k, v in sd.items():
        if k in ("mask_token", "rope_embed.periods") or k.endswith(".bias_mask"):
            continue  # pretraining-only token, recomputed RoPE periods, k-bias mask (checked separately)
        if k.endswith("attn.qkv.bias"):
            d = v.shape[0] // 3
            out[k.replace("qkv.bias", "q_bias")] = v[:d]
            out[k.replace("qkv.bias", "v_bias")] = v[2 * d :]
            continue
        k = k.replace("storage_tokens", "reg_token").replace("ls1.gamma", "gamma_1").replace("ls2.gamma", "gamma_2")
        out[k] = v
    return out


class Dinov3Backbone(nn.Module):
    """forward(x normalised with ImageNet mean/std) -> outputs of the tapped blocks after the final norm,
    without CLS/register tokens, each [B, embed_dim, H/16, W/16]."""

    patch_size = 16
    pixel_mean = IMAGENET_MEAN
    pixel_std = IMAGENET_STD

    def __init__(self, name: str, variant: Dinov3Variant, img_size: int):
        super().__init__()
        if list(variant.taps) != sorted(set(variant.taps)) or not 0 <= variant.taps[-1] < variant.depth:
            raise ValueError(f"bad taps {variant.taps} for depth {variant.depth}")
        self.name = name
        self.taps = tuple(variant.taps)
        self.out_channels = (variant.embed_dim,) * len(self.taps)
        self.text_dim = variant.embed_dim  # learnable class queries live in the backbone's width
        # pretrained=False: never download; dynamic_img_size is on in this timm variant (RoPE per input size).
        self.vit = timm.create_model(
            "vit_base_patch16_dinov3_qkvb",
            pretrained=False,
            num_classes=0,
            img_size=img_size,
            embed_dim=variant.embed_dim,
            depth=variant.depth,
            num_heads=variant.num_heads,
        )

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return self.vit.forward_intermediates(
            x, indices=list(self.taps), norm=True, output_fmt="NCHW", intermediates_only=True, stop_early=True
        )

    def load_weights(self, weights: str | os.PathLike) -> None:
        """Load Meta's official `.pth` (mapped by timm's `checkpoint_filter_fn`) or a timm state dict
        (safetensors or .pth); load strictly; verify every tensor against the file."""
        path, sd = read_state_dict(weights)
        family = f"DINOv3 ({self.name})"
        if "storage_tokens" in sd:
            self._check_meta(path, sd, family)
            src = checkpoint_filter_fn(sd, self.vit)
            source = _meta_to_timm(sd)
        elif "reg_token" in sd:
            src = source = sd
        else:
            raise Co2SInputError(
                f"{path}: not a DINOv3 checkpoint: neither 'storage_tokens' (Meta layout) nor 'reg_token' "
                f"(timm layout) is present (first key: '{next(iter(sd))}')"
            )
        check_state_dict(path, {k: v.shape for k, v in self.vit.state_dict().items()}, src, family=family)
        self.vit.load_state_dict(src, strict=True)
        verify_loaded(path, self.vit.state_dict(), source)

    def _check_meta(self, path: Path, sd: StateDict, family: str) -> None:
        """Shapes in Meta's names, then the parts timm does not load: the k-bias must be masked off (or
        zero) and the stored RoPE periods must match the ones timm computes."""
        vit = self.vit
        dim = vit.embed_dim
        expected = {_meta_name(k): v.shape for k, v in vit.state_dict().items() if not k.endswith("attn.v_bias")}
        expected = {k: (torch.Size([3 * dim]) if k.endswith("attn.qkv.bias") else s) for k, s in expected.items()}
        extras = {"mask_token": torch.Size([1, dim]), "rope_embed.periods": vit.rope.periods.shape}
        extras.update({f"blocks.{i}.attn.qkv.bias_mask": torch.Size([3 * dim]) for i in range(len(vit.blocks))})
        check_state_dict(path, {**expected, **extras}, sd, family=family, optional=extras)

        keep = torch.ones(dim)
        for i in range(len(vit.blocks)):
            bias = sd[f"blocks.{i}.attn.qkv.bias"]
            mask = sd.get(f"blocks.{i}.attn.qkv.bias_mask")
            if mask is not None:
                if not torch.equal(mask.float(), torch.cat([keep, 0 * keep, keep])):
                    raise Co2SInputError(
                        f"{path}: key 'blocks.{i}.attn.qkv.bias_mask' is not the DINOv3 k-bias mask (1/0/1)"
                    )
            elif bool(bias[dim : 2 * dim].any()):
                raise Co2SInputError(
                    f"{path}: key 'blocks.{i}.attn.qkv.bias' has a non-zero k part and no bias_mask; "
                    f"DINOv3's k-bias must be zero"
                )
        periods = sd.get("rope_embed.periods")
        # Meta stores bf16-rounded periods; we compute them in fp32 (decision), so compare loosely.
        if periods is not None and not torch.allclose(periods.float(), vit.rope.periods, rtol=1e-2):
            raise Co2SInputError(
                f"{path}: key 'rope_embed.periods' {periods.tolist()} does not match this model's RoPE "
                f"(expected about {vit.rope.periods.tolist()})"
            )


for _name, _variant in VARIANTS.items():
    register_backbone(_name, partial(Dinov3Backbone, _name, _variant))
