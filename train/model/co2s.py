"""The Co2S pair: students that share no weights, fused per pixel at prediction time."""

from __future__ import annotations

import torch
from torch import nn

from co2s.bundle.formats import FUSIONS

from .student import Student


def _max_confidence(probs: torch.Tensor) -> torch.Tensor:
    best = probs.amax(dim=2, keepdim=True).argmax(dim=0, keepdim=True)  # [1, B, 1, H, W]
    return torch.gather(probs, 0, best.expand(1, *probs.shape[1:])).squeeze(0)


_FUSE = {"mean": lambda probs: probs.mean(0), "max-confidence": _max_confidence}
if tuple(_FUSE) != FUSIONS:  # the CLIs offer FUSIONS: each name needs its implementation here
    raise RuntimeError(f"fusion modes implemented {tuple(_FUSE)} differ from co2s.bundle.formats.FUSIONS {FUSIONS}")


def fuse_probabilities(logits: list[torch.Tensor], mode: str = "mean") -> torch.Tensor:
    """Per-pixel fusion of class probabilities from several students' logits [B, N, H, W].

    ``mean`` averages the softmaxes (CLIP's global context and DINOv3's local detail both vote); ``max-confidence``
    takes, at each pixel, the distribution of the student whose top probability is highest.
    """
    if mode not in _FUSE:
        raise ValueError(f"fusion must be one of {FUSIONS}, got {mode!r}")
    return _FUSE[mode](torch.stack([torch.softmax(x.float(), dim=1) for x in logits]))  # stacked: [S, B, N, H, W]


class Co2S(nn.Module):
    """Holds the students by name ('clip', 'dinov3'; baselines may hold one, or two of a kind)."""

    def __init__(self, students: dict[str, Student]):
        super().__init__()
        if not students:
            raise ValueError("Co2S needs at least one student")
        self.students = nn.ModuleDict(students)

    @property
    def num_classes(self) -> int:
        return next(iter(self.students.values())).num_classes

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """Logits of every student, each [B, N, H, W] at the input size."""
        return {name: student(images) for name, student in self.students.items()}

    @torch.no_grad()
    def predict(self, images: torch.Tensor, fusion: str = "mean") -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(labels [B,H,W] int64, confidence [B,H,W], fused probabilities [B,N,H,W])."""
        probs = fuse_probabilities(list(self(images).values()), fusion)
        confidence, labels = probs.max(dim=1)
        return labels, confidence, probs
