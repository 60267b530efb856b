"""Students, head and the Co2S pair (`co2s.train.model`)."""

from __future__ import annotations

import os
from collections import Counter

import numpy as np
import torch

from co2s.errors import Co2SInputError

from .co2s import Co2S, fuse_probabilities
from .head import VLGHead
from .presets import PRESETS, ModelPreset, get_preset
from .student import (
    FrozenPrototypes,
    LearnableQueries,
    Student,
    freeze_backbone_except_attention,
)

STUDENT_KINDS = ("clip", "dinov3")

__all__ = [
    "Co2S",
    "FrozenPrototypes",
    "LearnableQueries",
    "ModelPreset",
    "PRESETS",
    "STUDENT_KINDS",
    "Student",
    "VLGHead",
    "build_co2s",
    "build_student",
    "co2s_from_state",
    "freeze_backbone_except_attention",
    "fuse_probabilities",
    "get_preset",
    "student_names",
]


def build_student(
    kind: str,
    num_classes: int,
    *,
    preset: str = "paper",
    prototypes: np.ndarray | None = None,
    weights: str | os.PathLike | None = None,
    img_size: int | None = None,
    freeze: bool = True,
) -> Student:
    """A CLIP student (explicit guidance: frozen text prototypes) or a DINOv3 student (learnable queries)."""
    from ..backbones import build_backbone  # open_clip/timm load only when a model is built

    p = get_preset(preset)
    if kind not in STUDENT_KINDS:
        raise Co2SInputError(f"unknown student {kind!r}; expected one of {STUDENT_KINDS}")
    backbone = build_backbone(p.backbones[kind], weights, img_size=img_size or p.tile)
    if kind == "clip":
        if prototypes is None:
            raise Co2SInputError("the CLIP student needs class prototypes (make them with `co2s-train prototypes`)")
        prototypes = np.asarray(prototypes, dtype=np.float32)
        if prototypes.shape != (num_classes, backbone.text_dim):
            raise Co2SInputError(
                f"prototypes have shape {prototypes.shape}, expected ({num_classes}, {backbone.text_dim}) "
                f"for {num_classes} classes and backbone {p.backbones[kind]}"
            )
        guidance = FrozenPrototypes(prototypes)
    else:
        guidance = LearnableQueries(num_classes, backbone.text_dim)
    head = VLGHead(backbone.out_channels[-1], tuple(backbone.out_channels[:-1][::-1]), backbone.text_dim, **p.head)
    student = Student(backbone, head, guidance)
    if freeze:
        freeze_backbone_except_attention(student)
    return student


def student_names(kinds: tuple[str, ...]) -> list[str]:
    """Kinds -> unique module names: ('clip', 'dinov3') stay as they are, ('dinov3', 'dinov3') -> dinov3_a/_b."""
    counts, seen, names = Counter(kinds), Counter(), []
    for k in kinds:
        names.append(k if counts[k] == 1 else f"{k}_{'abcdefgh'[seen[k]]}")
        seen[k] += 1
    return names


def build_co2s(
    num_classes: int,
    *,
    preset: str = "paper",
    students: tuple[str, ...] = STUDENT_KINDS,
    prototypes: np.ndarray | None = None,
    clip_weights: str | os.PathLike | None = None,
    dinov3_weights: str | os.PathLike | None = None,
    img_size: int | None = None,
) -> Co2S:
    weights = {"clip": clip_weights, "dinov3": dinov3_weights}
    return Co2S(
        {
            name: build_student(
                kind, num_classes, preset=preset, prototypes=prototypes, weights=weights[kind], img_size=img_size
            )
            for name, kind in zip(student_names(tuple(students)), students)
        }
    )


def co2s_from_state(config: dict, state_dict: dict[str, torch.Tensor]) -> Co2S:
    """Rebuild a trained pair from a checkpoint's model config and state dict (prototypes travel in the state)."""
    protos = next((v for k, v in state_dict.items() if k.endswith("guidance.prototypes")), None)
    model = build_co2s(
        config["num_classes"],
        preset=config["preset"],
        students=tuple(config["students"]),
        prototypes=None if protos is None else protos.float().numpy(),
        img_size=config.get("img_size"),
    )
    model.load_state_dict(state_dict)
    return model
