"""One training iteration of Co2S for every student at once: UniMatch's step per student plus L_sta (docs/method.md §5-§7).

Per student: supervised CE on the labelled crops; pseudo-labels from the weak unlabelled view; two strong views
CutMixed with a mixing partner (`mix`) whose pseudo-labels come from a no-grad eval-mode pass; the feature-perturbation
stream on the weak view; then the stability loss L_sta between the two students on the weak view. The students share
no weights, so one backward of the sum of their totals equals the reference's one backward per student.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import nn

from .augment import cutmix, strong_photometric
from .losses import (
    IGNORE_INDEX,
    Targets,
    confidence_weighted_ce,
    stability_loss,
    stability_masks,
    supervised_ce,
    valid_count,
)
from .model import Student
from .sampling import photometric_params, seed_for

# Sums a vector of loss denominators over ranks and divides by the world size (identity in one process).
CountReducer = Callable[[torch.Tensor], torch.Tensor]
LOG_TERMS = ("x", "s1", "s2", "fp", "sta", "confident")  # per-student log keys, in metrics.csv column order


def _same(counts: torch.Tensor) -> torch.Tensor:
    return counts


@dataclass(frozen=True)
class LossWeights:
    """UniMatch's weights of one student's loss: (x L_x + s1 L_s1 + s2 L_s2 + fp L_fp) / 2 (docs/method.md §7.1)."""

    x: float = 1.0
    s1: float = 0.25
    s2: float = 0.25
    fp: float = 0.5


@dataclass(frozen=True)
class StepOptions:
    semi: bool = True  # False: supervised-only baseline (L_x alone)
    stability: bool = True  # L_sta between the two students (needs exactly two)
    sta_grad: bool = True  # L_sta trains the learner (co2s decision); False = the reference's detached term
    sta_ignore_padding: bool = True  # L_sta skips padded pixels; False = the reference (padding takes part)
    tau: float = 0.95
    fp_rate: float = 0.5
    weights: LossWeights = field(default_factory=LossWeights)


def train_step(
    forwards: dict[str, nn.Module],
    students: dict[str, Student],
    batch: dict[str, torch.Tensor],
    *,
    opts: StepOptions,
    sta_weight: float,
    reduce_counts: CountReducer = _same,
) -> tuple[torch.Tensor, dict[str, float]]:
    """Losses of one iteration. `forwards[name]` is the (maybe DDP-wrapped) TrainForward of `students[name]`.

    Returns (the loss to back-propagate, a dict of loss values for logging).
    """
    img_x, mask_x = _to01(batch["x"]), batch["y"].long()
    if not opts.semi:
        return _supervised_step(forwards, img_x, mask_x, reduce_counts)
    img_u_w, ignore_mask = _to01(batch["u"]), batch["u_ignore"]
    img_u_w_mix, ignore_mask_mix = _to01(batch["o"]), batch["o_ignore"]
    box1, box2 = batch["box1"].bool(), batch["box2"].bool()
    # Strong views: each image's photometric jitter, then the partner's strong view pasted inside the CutMix box.
    img_u_s1 = cutmix(_strong(batch, "s1", img_u_w), _strong(batch, "o1", img_u_w_mix), box1)
    img_u_s2 = cutmix(_strong(batch, "s2", img_u_w), _strong(batch, "o2", img_u_w_mix), box2)
    ignore_mask_mixed1 = cutmix(ignore_mask, ignore_mask_mix, box1)
    ignore_mask_mixed2 = cutmix(ignore_mask, ignore_mask_mix, box2)
    counted = (mask_x, ignore_mask_mixed1, ignore_mask_mixed2, ignore_mask)
    n_x, n_s1, n_s2, n_u = reduce_counts(torch.stack([valid_count(m) for m in counted]))
    imgs, b, w = torch.cat([img_x, img_u_w, img_u_s1, img_u_s2]), img_x.shape[0], opts.weights
    loss, terms, pred_u_w_of = {}, {}, {}
    for name, model in forwards.items():
        mix = pseudo_labels(students[name], img_u_w_mix, ignore_mask_mix)
        preds = model(imgs, fp_rows=slice(b, 2 * b), fp_seeds=batch["fp_seed"], fp_rate=opts.fp_rate)
        pred_x, pred_u_w, pred_u_s1, pred_u_s2, pred_u_w_fp = preds.float().split(b)
        weak = targets_of(pred_u_w, ignore_mask)  # mask_u_w, conf_u_w (detached), ignore_mask
        loss_x = supervised_ce(pred_x, mask_x, n_x)
        loss_u_s1 = confidence_weighted_ce(pred_u_s1, cutmix_targets(weak, mix, box1), opts.tau, n_s1)
        loss_u_s2 = confidence_weighted_ce(pred_u_s2, cutmix_targets(weak, mix, box2), opts.tau, n_s2)
        loss_u_w_fp = confidence_weighted_ce(pred_u_w_fp, weak, opts.tau, n_u)
        loss[name] = (w.x * loss_x + w.s1 * loss_u_s1 + w.s2 * loss_u_s2 + w.fp * loss_u_w_fp) / 2
        terms[name] = {"x": loss_x, "s1": loss_u_s1, "s2": loss_u_s2, "fp": loss_u_w_fp}
        terms[name]["confident"] = (weak.conf >= opts.tau).float().mean()
        pred_u_w_of[name] = pred_u_w
    if opts.stability and len(pred_u_w_of) == 2:
        valid = ignore_mask != IGNORE_INDEX if opts.sta_ignore_padding else None
        for name, loss_sta in stability_losses(pred_u_w_of, valid, opts.tau, opts.sta_grad, reduce_counts).items():
            loss[name] = loss[name] + sta_weight * loss_sta  # w_sta(t) L_sta
            terms[name]["sta"] = loss_sta
    return sum(loss.values()), _logs(terms, {"w_sta": sta_weight})


def _supervised_step(forwards, img_x, mask_x, reduce_counts) -> tuple[torch.Tensor, dict[str, float]]:
    """The supervised-only baseline: L_x of every student on the labelled crops."""
    (n_x,) = reduce_counts(valid_count(mask_x).view(1))
    loss = {name: supervised_ce(model(img_x), mask_x, n_x) for name, model in forwards.items()}
    return sum(loss.values()), _logs({name: {"x": v} for name, v in loss.items()}, {})


def _logs(terms: dict[str, dict[str, torch.Tensor]], logs: dict[str, float]) -> dict[str, float]:
    for name, t in terms.items():
        logs.update({f"{name}/{k}": t[k].item() for k in LOG_TERMS if k in t})
    return logs


def _to01(images: torch.Tensor) -> torch.Tensor:
    return images.float() / 255.0


def _strong(batch: dict[str, torch.Tensor], view: str, images: torch.Tensor) -> torch.Tensor:
    return strong_photometric(images, photometric_params(batch, view))


class TrainForward(nn.Module):
    """A student's whole training forward in one call, so DDP sees exactly one forward per backward.

    One backbone pass on [x; u_w; s1; s2] (no BatchNorm anywhere, so this equals the reference's two passes) and one
    head pass on those features plus the perturbed features of the `fp_rows` (the weak view; the reference also
    perturbs the labelled half and throws it away, docs/method.md §10.3).
    """

    def __init__(self, student: Student, stream: int):
        super().__init__()
        self.student = student
        self.stream = stream  # decorrelates the dropout masks of different students

    def forward(
        self,
        images: torch.Tensor,
        *,
        fp_rows: slice | None = None,
        fp_seeds: torch.Tensor | None = None,
        fp_rate: float = 0.5,
    ) -> torch.Tensor:
        feats = self.student.features(images)
        if fp_rows is not None:
            feats = feature_perturbation(feats, rows=fp_rows, seeds=fp_seeds, rate=fp_rate, stream=self.stream)
        return self.student.decode(feats, tuple(images.shape[-2:]))


def feature_perturbation(
    feats: list[torch.Tensor], *, rows: slice, seeds: torch.Tensor, rate: float, stream: int
) -> list[torch.Tensor]:
    """UniMatch's perturbed stream: every tapped map gets `rows` appended again under channel dropout (dropout2d).

    The masks (0 or 1/(1-rate) per sample and channel) come from per-sample seeds, so they do not depend on how the
    batch is split across ranks, and are drawn the same in train and eval mode.
    """
    gens = [torch.Generator().manual_seed(seed_for(s, stream)) for s in seeds.tolist()]
    out = []
    for f in feats:
        keep = torch.stack([(torch.rand(f.shape[1], generator=g) >= rate).float() for g in gens]) / (1 - rate)
        out.append(torch.cat([f, f[rows] * keep.to(device=f.device, dtype=f.dtype)[:, :, None, None]]))
    return out


def targets_of(logits: torch.Tensor, ignore: torch.Tensor) -> Targets:
    """Pseudo-labels of a prediction: (argmax label, its softmax confidence), detached, and the padding mask."""
    conf, label = torch.softmax(logits.detach().float(), dim=1).max(dim=1)
    return Targets(label, conf, ignore)


@torch.no_grad()
def pseudo_labels(student: Student, images: torch.Tensor, ignore: torch.Tensor) -> Targets:
    """The mixing partner's targets: an eval-mode, no-grad prediction."""
    was_training = student.training
    student.eval()
    targets = targets_of(student(images), ignore)
    student.train(was_training)
    return targets


def cutmix_targets(weak: Targets, mix: Targets, box: torch.Tensor) -> Targets:
    """Targets of a CutMixed strong view: inside the box the partner's, elsewhere the weak view's."""
    return Targets(*(cutmix(w, m, box) for w, m in zip(weak, mix)))


def stability_losses(
    pred_u_w: dict[str, torch.Tensor],
    valid: torch.Tensor | None,
    tau: float,
    sta_grad: bool,
    reduce_counts: CountReducer = _same,
) -> dict[str, torch.Tensor]:
    """L_sta of each of two students on the weak view (docs/method.md §7.2), teacher side detached.

    `valid` marks the pixels that may take part (None: all; see StepOptions.sta_ignore_padding). With sta_grad=False
    the learner is detached too, so the term is a logged constant, as in the reference.
    """
    (a, logits_a), (c, logits_c) = pred_u_w.items()
    probs_a, probs_c = torch.softmax(logits_a.float(), 1), torch.softmax(logits_c.float(), 1)
    learn_a, learn_c = stability_masks(probs_a.detach().amax(1), probs_c.detach().amax(1), tau)
    if valid is not None:
        learn_a, learn_c = learn_a & valid, learn_c & valid
    n_a, n_c = reduce_counts(torch.stack([learn_a.sum(), learn_c.sum()]).float())
    if not sta_grad:
        probs_a, probs_c = probs_a.detach(), probs_c.detach()
    return {a: stability_loss(probs_a, probs_c, learn_a, n_a), c: stability_loss(probs_c, probs_a, learn_c, n_c)}
