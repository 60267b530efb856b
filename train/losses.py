"""Loss terms of one Co2S student (docs/method.md §7).

Every loss takes its denominator from the caller (`den`) instead of counting locally: under DDP the trainer passes
the count summed over all ranks (times the world size, because DDP averages gradients), so a 2-process run takes
exactly the step of one process holding both halves of the batch. Single-process callers pass the local count.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
import torch.nn.functional as F

from co2s.bundle.formats import IGNORE_INDEX


class Targets(NamedTuple):
    """Per-pixel pseudo-label targets of an unlabelled view, each [B, H, W]."""

    label: torch.Tensor  # class index
    conf: torch.Tensor  # softmax probability of that class
    ignore: torch.Tensor  # IGNORE_INDEX where the crop is padding


def supervised_ce(logits: torch.Tensor, labels: torch.Tensor, den: torch.Tensor) -> torch.Tensor:
    """Cross-entropy averaged over non-ignored pixels (nn.CrossEntropyLoss(ignore_index=255) for one process)."""
    ce = F.cross_entropy(logits.float(), labels.long(), ignore_index=IGNORE_INDEX, reduction="sum")
    return ce / den.clamp(min=1)


def confidence_weighted_ce(logits: torch.Tensor, targets: Targets, tau: float, den: torch.Tensor) -> torch.Tensor:
    """UniMatch's pixelwise loss: sum of CE over confident, non-padded pixels / `den` (all non-padded pixels)."""
    ce = F.cross_entropy(logits.float(), targets.label.long(), reduction="none")
    keep = (targets.conf >= tau) & (targets.ignore != IGNORE_INDEX)
    return (ce * keep).sum() / den.clamp(min=1)


def valid_count(mask: torch.Tensor) -> torch.Tensor:
    """Denominator helper: number of pixels that are not ignore (as float, for all-reduce)."""
    return (mask != IGNORE_INDEX).sum().float()


def stability_masks(conf_a: torch.Tensor, conf_b: torch.Tensor, tau: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-pixel arbitration of docs/method.md §7.2: (where a learns from b, where b learns from a).

    A student learns from its partner where the partner is confident (>= tau) and at least as confident as itself.
    That one rule gives all six cases: both high -> the less confident learns (both on a tie); only one high ->
    the other learns; both low -> nobody.
    """
    a_high, b_high = conf_a >= tau, conf_b >= tau
    return b_high & (conf_b >= conf_a), a_high & (conf_a >= conf_b)


def stability_loss(
    probs_learner: torch.Tensor, probs_teacher: torch.Tensor, mask: torch.Tensor, den: torch.Tensor
) -> torch.Tensor:
    """Squared difference of class probabilities on masked pixels / (`den` masked pixels x classes).

    The teacher is detached here; whether the learner carries gradient is the caller's choice (`sta_grad`).
    """
    sq = (probs_learner.float() - probs_teacher.detach().float()).pow(2).sum(dim=1)  # [B, H, W]
    return (sq * mask).sum() / (den.clamp(min=1) * probs_learner.shape[1])


def stability_weight(iteration: int, total: int, peak: float = 0.5, ramp: float = 0.2) -> float:
    """w_sta(t): cosine ramp from 0 to `peak` over the first round(ramp*T) iterations, then flat (docs/method.md §7.3).

    The ramp's last iteration is at the peak, so a ramp of one iteration (or none) is flat from t = 0, as in the
    reference.
    """
    ramp_iters = round(ramp * total)
    if iteration >= ramp_iters - 1:
        return peak
    return peak * 0.5 * (1 - math.cos(math.pi * iteration / (ramp_iters - 1)))
