"""One training iteration on tiny students: every loss term finite, gradients exactly where they belong, and the
sta_grad switch."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from co2s.train.backbones import build_backbone
from co2s.train.data import synthetic_splits
from co2s.train.model import build_co2s
from co2s.train.sampling import IterationBatches
from co2s.train.step import StepOptions, TrainForward, train_step

CROP = 64


def _model(students=("clip", "dinov3"), num_classes=5):
    torch.manual_seed(0)
    text_dim = build_backbone("clip_tiny", img_size=CROP).text_dim
    protos = np.random.default_rng(0).standard_normal((num_classes, text_dim)).astype(np.float32)
    return build_co2s(num_classes, preset="tiny", students=students, prototypes=protos, img_size=CROP)


@pytest.fixture(scope="module")
def batch():
    splits = synthetic_splits(2, 4, 1, size=CROP)
    return IterationBatches(splits["labeled"], splits["unlabeled"], crop=CROP, batch_size=2, seed=0, total=1)[0]


def _grads(model, batch, opts, sta_weight):
    model.zero_grad(set_to_none=True)
    forwards = {n: TrainForward(s, i) for i, (n, s) in enumerate(model.students.items())}
    loss, logs = train_step(forwards, dict(model.students), batch, opts=opts, sta_weight=sta_weight)
    loss.backward()
    return loss, logs, {n: None if p.grad is None else p.grad.clone() for n, p in model.named_parameters()}


def test_one_iteration_every_term_finite_and_gradients_reach_exactly_the_trainable_parameters(batch):
    model = _model()
    # tau = 0: every pixel counts as confident, so every unsupervised term and L_sta is active and non-zero.
    loss, logs, grads = _grads(model, batch, StepOptions(tau=0.0), sta_weight=0.5)
    assert math.isfinite(loss.item())
    for student in ("clip", "dinov3"):
        for term in ("x", "s1", "s2", "fp", "sta"):
            value = logs[f"{student}/{term}"]
            assert math.isfinite(value) and value > 0, (student, term, value)
    params = dict(model.named_parameters())
    trainable = {n for n, p in params.items() if p.requires_grad}
    assert any(".backbone." in n for n in trainable) and all("attn" in n for n in trainable if ".backbone." in n)
    reached = {n for n, g in grads.items() if g is not None and g.abs().sum() > 0}
    assert reached == trainable
    assert all(grads[n] is None for n in params if n not in trainable)


def test_default_threshold_gives_finite_losses(batch):
    model = _model()
    loss, logs, _ = _grads(model, batch, StepOptions(), sta_weight=0.5)
    assert math.isfinite(loss.item()) and all(math.isfinite(v) for v in logs.values())


def test_sta_grad_off_is_a_constant_and_on_trains_both_learners(batch):
    model = _model()
    _, logs, without = _grads(model, batch, StepOptions(tau=0.0, sta_grad=True), sta_weight=0.0)
    _, logs_off, detached = _grads(model, batch, StepOptions(tau=0.0, sta_grad=False), sta_weight=0.5)
    _, _, trained = _grads(model, batch, StepOptions(tau=0.0, sta_grad=True), sta_weight=0.5)
    assert logs_off["clip/sta"] == pytest.approx(logs["clip/sta"])  # same value, logged either way
    for name, g in without.items():
        if g is None:
            continue
        assert torch.equal(g, detached[name]), name  # the reference's L_sta changes nothing
    for student in ("clip", "dinov3"):  # each student is the learner somewhere, so each gets L_sta gradient
        changed = [
            n
            for n, g in without.items()
            if g is not None and n.startswith(f"students.{student}.") and not torch.equal(g, trained[n])
        ]
        assert changed, student


@pytest.mark.parametrize(
    "students,semi,stability",
    [
        (("clip", "dinov3"), False, False),  # supervised
        (("dinov3",), True, False),  # UniMatch, one student
        (("dinov3", "dinov3"), True, True),  # homogeneous pair
    ],
)
def test_baselines_share_the_step(batch, students, semi, stability):
    model = _model(students)
    loss, logs, grads = _grads(model, batch, StepOptions(semi=semi, stability=stability, tau=0.0), 0.5)
    assert math.isfinite(loss.item())
    names = list(model.students)
    assert all(f"{n}/x" in logs for n in names)
    assert all((f"{n}/sta" in logs) == stability for n in names)
    assert all((f"{n}/s1" in logs) == semi for n in names)


# Losses of this batch on the seed-0 tiny pair (tau = 0, so every term is active; w_sta = 0.5), recorded from the
# step as it was before the one-screen rewrite (commit 611702a), with the sum of |gradient| per student: the rewrite
# and any later change to the step must keep them.
RECORDED = {
    "loss": 3.2033700942993164,
    "clip/x": 1.6107066869735718,
    "clip/s1": 1.5819467306137085,
    "clip/s2": 1.5858983993530273,
    "clip/fp": 1.6050785779953003,
    "clip/sta": 6.761197437299415e-05,
    "clip/confident": 1.0,
    "dinov3/x": 1.611068844795227,
    "dinov3/s1": 1.5808683633804321,
    "dinov3/s2": 1.584343433380127,
    "dinov3/fp": 1.5980647802352905,
    "dinov3/sta": 6.0564361774595454e-05,
    "dinov3/confident": 1.0,
}
RECORDED_GRAD_ABS_SUM = {"clip": 27.71084698956916, "dinov3": 34.83271842550592}
RECORDED_SUPERVISED = {"loss": 3.221775531768799, "clip/x": 1.6107066869735718, "dinov3/x": 1.611068844795227}


def test_step_reproduces_the_recorded_losses_and_gradients(batch):
    model = _model()
    loss, logs, grads = _grads(model, batch, StepOptions(tau=0.0), sta_weight=0.5)
    assert list(logs) == ["w_sta", *(k for k in RECORDED if k != "loss")]  # also the metrics.csv column order
    assert logs["w_sta"] == 0.5
    assert {"loss": loss.item(), **logs} == pytest.approx({"w_sta": 0.5, **RECORDED}, rel=1e-4)
    for student, expected in RECORDED_GRAD_ABS_SUM.items():
        got = sum(g.double().abs().sum().item() for n, g in grads.items() if g is not None and f".{student}." in n)
        assert got == pytest.approx(expected, rel=1e-4), student

    loss, logs, _ = _grads(_model(), batch, StepOptions(semi=False, stability=False), sta_weight=0.5)
    assert {"loss": loss.item(), **logs} == pytest.approx(RECORDED_SUPERVISED, rel=1e-4)


def test_sta_ignore_padding_switch_changes_only_the_stability_term(batch):
    assert (batch["u_ignore"] == 255).any()  # this batch has padded pixels, so the switch must matter
    model = _model()
    _, skip, _ = _grads(model, batch, StepOptions(tau=0.0), sta_weight=0.5)
    _, keep, _ = _grads(model, batch, StepOptions(tau=0.0, sta_ignore_padding=False), sta_weight=0.5)
    for key in skip:
        if key.endswith("/sta"):
            assert keep[key] != pytest.approx(skip[key], rel=1e-3), key
        else:
            assert keep[key] == skip[key], key
