"""Optimiser and schedule (docs/method.md §9.1): AdamW with per-part learning rates, the poly decay, mixed precision."""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext

import torch

from .config import TrainConfig
from .model import Co2S

AMP_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def build_optimizer(model: Co2S, cfg: TrainConfig) -> torch.optim.AdamW:
    """AdamW, one group per student part: backbone x backbone_lr_mult (attention only trains), head x10, guidance x1."""
    mults = {"backbone": cfg.backbone_lr_mult, "head": cfg.head_lr_mult, "guidance": 1.0}
    groups = []
    for name, student in model.students.items():
        for part, mult in mults.items():
            params = [p for p in getattr(student, part).parameters() if p.requires_grad]
            if params:
                groups.append(
                    {"params": params, "lr": cfg.lr * mult, "initial_lr": cfg.lr * mult, "name": f"{name}.{part}"}
                )
    return torch.optim.AdamW(groups, lr=cfg.lr, weight_decay=cfg.weight_decay)


def poly_lr(optimizer: torch.optim.Optimizer, iteration: int, total: int, power: float) -> float:
    """lr = lr0 * (1 - t/T)^power for every group; returns the factor (times cfg.lr: the base lr, for logging)."""
    factor = (1 - iteration / total) ** power
    for g in optimizer.param_groups:
        g["lr"] = g["initial_lr"] * factor
    return factor


class MixedPrecision:
    """`--amp bf16|fp16` on CUDA: autocast, and for fp16 a gradient scaler. On the CPU it does nothing."""

    def __init__(self, amp: str | None, device: torch.device):
        self.dtype = AMP_DTYPES.get(amp) if device.type == "cuda" else None
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.dtype is torch.float16)

    def autocast(self) -> AbstractContextManager:
        return torch.autocast("cuda", dtype=self.dtype) if self.dtype else nullcontext()

    def step(self, loss: torch.Tensor, optimizer: torch.optim.Optimizer) -> None:
        """One optimiser step on `loss` (gradients cleared first)."""
        optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.step(optimizer)
        self.scaler.update()
