"""Model presets: which backbones and head width make a student pair. Training schedules live with the trainer."""

from __future__ import annotations

from dataclasses import dataclass, field

from co2s.bundle.formats import PRESET_NAMES
from co2s.errors import Co2SInputError


@dataclass(frozen=True)
class ModelPreset:
    name: str
    backbones: dict[str, str]  # student kind -> backbone registry name
    head: dict = field(default_factory=dict)  # VLGHead keyword arguments (the reference's widths when empty)
    tile: int = 512  # default crop / export tile


PRESETS: dict[str, ModelPreset] = {
    "paper": ModelPreset("paper", {"clip": "clip_vitb16", "dinov3": "dinov3_vitb16"}, {}, 512),
    # Same code path at a width a 2-core CPU trains in minutes: for tests, the demo and CI.
    "tiny": ModelPreset(
        "tiny",
        {"clip": "clip_tiny", "dinov3": "dinov3_tiny"},
        dict(channels=32, text_channels=32, up_channels=(16, 8), skip_channels=(8, 4), num_heads=2),
        128,
    ),
}

if tuple(PRESETS) != PRESET_NAMES:  # the CLIs offer PRESET_NAMES: each name needs its preset here
    raise RuntimeError(f"presets defined {tuple(PRESETS)} differ from co2s.bundle.formats.PRESET_NAMES {PRESET_NAMES}")


def get_preset(name: str) -> ModelPreset:
    try:
        return PRESETS[name]
    except KeyError:
        raise Co2SInputError(f"unknown preset {name!r}; expected one of {sorted(PRESETS)}") from None
