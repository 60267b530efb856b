"""One training iteration of Co2S (spec 3.1-3.4), UniMatch style, for every student at once.

Per student: supervised CE on the labelled crops; pseudo-labels (tau) from the weak unlabelled view; two strong
views CutMixed with a mixing partner whose pseudo-labels come from a no-grad eval-mode pass; the feature-perturbation
stream on the weak unlabelled images; then the cross-student stability loss L_sta on the weak view. Total per student:
(L_x + 0.25 L_s1 + 0.25 L_s2 + 0.5 L_fp) / 2 + w(t) L_sta. The students share no weights, so one backward of the
sum of their totals equals the reference's one backward per student.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from co2s.bundle.formats import IGNORE_INDEX

from .augment import cutmix, strong_photometric
from .losses import confidence_weighted_ce, stability_loss, stability_masks, supervised_ce, valid_count
from .model import Student
from .sampling import photometric_params, seed_for

# Sums a vector of loss denominators over ranks and divides by the world size (identity in one process).
CountReducer = Callable[[torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class StepOptions:
    semi: bool = True  # False: supervised-only baseline (L_x alone)
    stability: bool = True  # L_sta between the two students (needs exactly two)
    sta_grad: bool = True  # L_sta trains the learner (co2s decision); False = the reference's detached term
    tau: float = 0.95
    fp_rate: float = 0.5


class TrainForward(nn.Module):
    """A student's whole training forward in one call, so DDP sees exactly one forward per backward.

    One backbone pass on [x; u; s1; s2] (no BatchNorm anywhere, so this equals the reference's two passes) and one
    head pass on those features plus the channel-dropped features of u (the perturbed stream; the reference also
    perturbs the labelled half and throws it away, spec 8.7).
    """

    def __init__(self, student: Student, stream: int):
        super().__init__()
        self.student = student
        self.stream = stream  # decorrelates the dropout masks of different students

    def forward(
        self,
        images: torch.Tensor,
        fp_slice: slice | None = None,
        fp_seeds: torch.Tensor | None = None,
        fp_rate: float = 0.5,
    ) -> torch.Tensor:
        feats = self.student.features(images)
        if fp_slice is not None:
            keep = _channel_keep(feats, fp_seeds.tolist(), fp_rate, self.stream)
            feats = [torch.cat([f, f[fp_slice] * k]) for f, k in zip(feats, keep)]
        return self.student.decode(feats, tuple(images.shape[-2:]))


def _channel_keep(feats: list[torch.Tensor], seeds: list[int], rate: float, stream: int) -> list[torch.Tensor]:
    """dropout2d masks (0 or 1/(1-rate) per sample and channel), drawn from per-sample seeds so they do not depend
    on how the batch is split across ranks. Same operation as `model.feature_perturbation`."""
    gens = [torch.Generator().manual_seed(seed_for(s, stream)) for s in seeds]
    masks = []
    for f in feats:
        m = torch.stack([(torch.rand(f.shape[1], generator=g) >= rate).float() for g in gens]) / (1 - rate)
        masks.append(m.to(device=f.device, dtype=f.dtype)[:, :, None, None])
    return masks


@torch.no_grad()
def pseudo_labels(student: Student, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(confidence, label) of an eval-mode, no-grad prediction (the mixing partner's targets)."""
    was_training = student.training
    student.eval()
    conf, label = torch.softmax(student(images).float(), dim=1).max(dim=1)
    student.train(was_training)
    return conf, label


def _to01(images: torch.Tensor) -> torch.Tensor:
    return images.float() / 255.0


def train_step(
    forwards: dict[str, nn.Module],
    students: dict[str, Student],
    batch: dict[str, torch.Tensor],
    *,
    opts: StepOptions,
    sta_weight: float,
    reduce_counts: CountReducer = lambda c: c,
) -> tuple[torch.Tensor, dict[str, float]]:
    """Losses of one iteration. `forwards[name]` is the (maybe DDP-wrapped) TrainForward of `students[name]`.

    Returns (the loss to back-propagate, a dict of loss values for logging).
    """
    x, y = _to01(batch["x"]), batch["y"].long()
    b = x.shape[0]
    if not opts.semi:
        (n_x,) = reduce_counts(valid_count(y).view(1))
        losses = {name: supervised_ce(fwd(x), y, n_x) for name, fwd in forwards.items()}
        return sum(losses.values()), {f"{name}/x": v.item() for name, v in losses.items()}

    u, u_ign, o, o_ign = _to01(batch["u"]), batch["u_ignore"], _to01(batch["o"]), batch["o_ignore"]
    box1, box2 = batch["box1"].bool(), batch["box2"].bool()
    # Strong views: photometric jitter of each image, then the partner's strong view pasted inside the CutMix box.
    s1 = cutmix(
        strong_photometric(u, photometric_params(batch, "s1")),
        strong_photometric(o, photometric_params(batch, "o1")),
        box1,
    )
    s2 = cutmix(
        strong_photometric(u, photometric_params(batch, "s2")),
        strong_photometric(o, photometric_params(batch, "o2")),
        box2,
    )

    ign1, ign2 = cutmix(u_ign, o_ign, box1), cutmix(u_ign, o_ign, box2)  # padding follows the pasted pixels
    out = {}
    for name, fwd in forwards.items():
        conf_o, label_o = pseudo_labels(students[name], o)
        logits = fwd(torch.cat([x, u, s1, s2]), slice(b, 2 * b), batch["fp_seed"], opts.fp_rate)
        l_x, l_w, l_s1, l_s2, l_fp = logits.float().split(b)
        conf_w, label_w = torch.softmax(l_w.detach(), dim=1).max(dim=1)
        out[name] = dict(
            x=l_x,
            w=l_w,
            s1=l_s1,
            s2=l_s2,
            fp=l_fp,
            conf_w=conf_w,
            label_w=label_w,
            t1=[*mixed_targets((label_w, conf_w), (label_o, conf_o), box1), ign1],
            t2=[*mixed_targets((label_w, conf_w), (label_o, conf_o), box2), ign2],
        )

    n_x, n_s1, n_s2, n_u = reduce_counts(torch.stack([valid_count(m) for m in (y, ign1, ign2, u_ign)]))
    sta = {}
    if opts.stability and len(out) == 2:
        sta = stability_losses(
            {n: o_["w"] for n, o_ in out.items()}, u_ign != IGNORE_INDEX, opts.tau, opts.sta_grad, reduce_counts
        )

    total, logs = 0.0, {"w_sta": sta_weight}
    for name, o_ in out.items():
        terms = {
            "x": supervised_ce(o_["x"], y, n_x),
            "s1": confidence_weighted_ce(o_["s1"], *o_["t1"], opts.tau, n_s1),
            "s2": confidence_weighted_ce(o_["s2"], *o_["t2"], opts.tau, n_s2),
            "fp": confidence_weighted_ce(o_["fp"], o_["label_w"], o_["conf_w"], u_ign, opts.tau, n_u),
        }
        loss = (terms["x"] + 0.25 * terms["s1"] + 0.25 * terms["s2"] + 0.5 * terms["fp"]) / 2
        if name in sta:
            terms["sta"] = sta[name]
            loss = loss + sta_weight * sta[name]
        total = total + loss
        logs.update({f"{name}/{k}": v.item() for k, v in terms.items()})
        logs[f"{name}/confident"] = (o_["conf_w"] >= opts.tau).float().mean().item()
    return total, logs


def mixed_targets(
    weak: tuple[torch.Tensor, ...], partner: tuple[torch.Tensor, ...], box: torch.Tensor
) -> list[torch.Tensor]:
    """Targets of a CutMixed strong view: inside the box the partner's (label, confidence), else the weak view's."""
    return [cutmix(w, p, box) for w, p in zip(weak, partner)]


def stability_losses(
    weak_logits: dict[str, torch.Tensor],
    valid: torch.Tensor,
    tau: float,
    sta_grad: bool,
    reduce_counts: CountReducer = lambda c: c,
) -> dict[str, torch.Tensor]:
    """L_sta of each of two students on the weak view (spec 3.4), teacher side detached.

    `valid` excludes padded pixels (a co2s choice: padding carries no prediction worth agreeing on). With
    sta_grad=False the learner is detached too, so the term is a logged constant, as in the reference (F1).
    """
    (a, logits_a), (c, logits_c) = weak_logits.items()
    probs_a, probs_c = torch.softmax(logits_a.float(), 1), torch.softmax(logits_c.float(), 1)
    learn_a, learn_c = stability_masks(probs_a.detach().amax(1), probs_c.detach().amax(1), tau)
    learn_a, learn_c = learn_a & valid, learn_c & valid
    n_a, n_c = reduce_counts(torch.stack([learn_a.sum(), learn_c.sum()]).float())
    if not sta_grad:
        probs_a, probs_c = probs_a.detach(), probs_c.detach()
    return {a: stability_loss(probs_a, probs_c, learn_a, n_a), c: stability_loss(probs_c, probs_a, learn_c, n_c)}
