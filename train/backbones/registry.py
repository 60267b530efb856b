"""Name -> backbone factory registry (timm style); the family modules register their variants on import."""

from __future__ import annotations

import os
from collections.abc import Callable

from torch import nn

from co2s.bundle.formats import check_patch_multiple
from co2s.errors import Co2SInputError

_FACTORIES: dict[str, Callable[[int], nn.Module]] = {}


def register_backbone(name: str, factory: Callable[[int], nn.Module]) -> None:
    """Register `factory(img_size) -> module`; the module must provide `load_weights(path)`."""
    if name in _FACTORIES:
        raise ValueError(f"backbone {name!r} is already registered")
    _FACTORIES[name] = factory


def list_backbones() -> list[str]:
    return sorted(_FACTORIES)


def build_backbone(name: str, weights: str | os.PathLike | None = None, *, img_size: int = 512) -> nn.Module:
    """Build a backbone; `weights` (a local file) is loaded after all initialisation and verified.

    `img_size` is the training crop: CLIP stores its position embedding for this grid (other input
    sizes still work, by resizing at run time); DINOv3 uses RoPE and accepts any multiple of 16.
    """
    if name not in _FACTORIES:
        raise Co2SInputError(f"unknown backbone {name!r}; available: {', '.join(list_backbones())}")
    check_patch_multiple(img_size, "img_size")
    model = _FACTORIES[name](img_size)
    if weights is not None:
        model.load_weights(weights)  # after every init, so nothing can overwrite it (docs/method.md §2.4)
    return model


def count_parameters(module: nn.Module) -> tuple[int, int]:
    """(total, trainable) parameter counts."""
    params = list(module.parameters())
    return sum(p.numel() for p in params), sum(p.numel() for p in params if p.requires_grad)
