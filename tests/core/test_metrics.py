"""co2s.metrics: the one mIoU of training evaluation and the export parity report, against hand-computed values."""

from __future__ import annotations

import math

import numpy as np
import pytest

from co2s.bundle.formats import IGNORE_INDEX
from co2s.metrics import confusion_matrix, iou_per_class, mean_iou


def test_confusion_matrix_skips_ignored_labels():
    truth = np.array([[0, 0, 1], [2, IGNORE_INDEX, 1]])
    pred = np.array([[0, 1, 1], [2, 0, 0]])
    assert confusion_matrix(pred, truth, 3).tolist() == [[1, 1, 0], [1, 1, 0], [0, 0, 1]]


def test_mean_is_over_the_classes_present_in_labels_or_prediction():
    truth = np.array([0, 0, 1, 1])
    pred = np.array([0, 1, 1, 1])  # classes 2 and 3 occur in neither
    conf = confusion_matrix(pred, truth, 4)
    iou = iou_per_class(conf)
    assert iou[:2] == pytest.approx([50.0, 200 / 3]) and np.isnan(iou[2:]).all()
    assert mean_iou(conf) == pytest.approx((50.0 + 200 / 3) / 2)
    # a class only predicted has a non-empty union: it is scored (0) and pulls the mean down
    assert mean_iou(confusion_matrix(np.array([0, 0, 1, 3]), truth, 4)) == pytest.approx((100 + 50 + 0) / 3)


def test_nothing_scored_is_nan_not_perfect():
    truth = np.full(5, IGNORE_INDEX)
    assert math.isnan(mean_iou(confusion_matrix(np.zeros(5, int), truth, 3)))


@pytest.mark.parametrize(
    "pred, truth, message",
    [(np.array([0, 3]), np.array([0, 1]), "prediction values"), (np.array([0, 1]), np.array([0, 7]), "label values")],
)
def test_values_outside_the_classes_are_refused(pred, truth, message):
    with pytest.raises(ValueError, match=message):
        confusion_matrix(pred, truth, 3)
