"""One student: normalise -> ViT backbone -> VLG head guided by class vectors (explicit or implicit)."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from .head import VLGHead


class FrozenPrototypes(nn.Module):
    """Explicit guidance: CLIP text prototypes of the class concepts, fixed, saved with the checkpoint."""

    def __init__(self, prototypes: np.ndarray | torch.Tensor):
        super().__init__()
        protos = torch.as_tensor(np.asarray(prototypes, dtype=np.float32))
        if protos.ndim != 2:
            raise ValueError(f"prototypes must be [num_classes, dim], got shape {tuple(protos.shape)}")
        self.register_buffer("prototypes", protos)

    def forward(self) -> torch.Tensor:
        return self.prototypes


class LearnableQueries(nn.Module):
    """Implicit guidance: one trainable vector per class, N(0, 0.02) as in the reference."""

    def __init__(self, num_classes: int, dim: int):
        super().__init__()
        self.emb = nn.Embedding(num_classes, dim)
        nn.init.normal_(self.emb.weight, std=0.02)

    def forward(self) -> torch.Tensor:
        return self.emb.weight


class Student(nn.Module):
    """Images in [0, 1] (RGB, NCHW) -> per-class logits at the input size.

    The training step reads ``features`` and ``decode`` separately so the feature-perturbation stream can reuse
    one backbone pass; ``forward`` is the plain composition.
    """

    def __init__(self, backbone: nn.Module, head: VLGHead, guidance: nn.Module):
        super().__init__()
        self.backbone = backbone
        self.head = head
        self.guidance = guidance
        self.register_buffer("pixel_mean", torch.tensor(backbone.pixel_mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("pixel_std", torch.tensor(backbone.pixel_std).view(1, 3, 1, 1), persistent=False)

    @property
    def num_classes(self) -> int:
        return self.guidance().shape[0]

    def features(self, images: torch.Tensor) -> list[torch.Tensor]:
        return self.backbone((images - self.pixel_mean) / self.pixel_std)

    def decode(self, feats: list[torch.Tensor], out_size: tuple[int, int]) -> torch.Tensor:
        return self.head(feats, self.guidance(), out_size)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.decode(self.features(images), tuple(images.shape[-2:]))


def freeze_backbone_except_attention(student: Student) -> None:
    """The reference's rule (docs/method.md §2.3): only backbone parameters whose name contains 'attn' train."""
    for name, param in student.backbone.named_parameters():
        param.requires_grad = "attn" in name
