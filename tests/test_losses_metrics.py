import math

import pytest
import torch

from crackseg.analysis.metrics import binary_counts, classification_scores, segmentation_scores
from crackseg.training.losses import BCEDiceLoss, soft_dice


def test_soft_dice_by_hand():
    logits = torch.tensor([0.0, 0.0, 100.0, -100.0]).reshape(1, 1, 2, 2)  # probabilities 0.5, 0.5, 1, 0
    targets = torch.tensor([1.0, 0.0, 1.0, 0.0]).reshape(1, 1, 2, 2)
    # intersection 0.5 + 1 = 1.5; sum p = 2; sum t = 2 -> (3 + 1) / (4 + 1)
    assert soft_dice(logits, targets).item() == pytest.approx(4 / 5)
    assert soft_dice(logits, targets, smooth=0).item() == pytest.approx(3 / 4)


def test_soft_dice_of_empty_target_and_empty_prediction_is_one():
    assert soft_dice(torch.full((2, 1, 4, 4), -100.0), torch.zeros(2, 1, 4, 4)).item() == pytest.approx(1.0)


def test_bce_dice_loss_weights_its_parts():
    logits = torch.tensor([2.0, -1.0, 0.5, -3.0]).reshape(1, 1, 2, 2)
    targets = torch.tensor([1.0, 0.0, 0.0, 1.0]).reshape(1, 1, 2, 2)
    p = torch.sigmoid(logits).flatten().tolist()
    t = targets.flatten().tolist()
    bce = -sum(ti * math.log(pi) + (1 - ti) * math.log(1 - pi) for pi, ti in zip(p, t)) / 4
    dice = (2 * sum(pi * ti for pi, ti in zip(p, t)) + 1) / (sum(p) + sum(t) + 1)
    loss, parts = BCEDiceLoss(0.9)(logits, targets)
    assert parts["bce"].item() == pytest.approx(bce, rel=1e-5)
    assert parts["dice"].item() == pytest.approx(dice, rel=1e-5)
    assert loss.item() == pytest.approx(0.9 * bce + 0.1 * (1 - dice), rel=1e-5)
    assert loss.requires_grad is False and parts["bce"].requires_grad is False
    assert BCEDiceLoss(0.9)(logits.requires_grad_(), targets)[0].requires_grad


def test_binary_counts_and_segmentation_scores():
    predicted = torch.tensor([1, 1, 0, 0, 1, 0], dtype=torch.bool)
    target = torch.tensor([1, 0, 1, 0, 1, 0], dtype=torch.bool)
    counts = binary_counts(predicted, target)
    assert counts.tolist() == [2, 1, 1, 2]
    scores = segmentation_scores(counts)
    assert scores["dice"] == pytest.approx(4 / 6)
    assert scores["iou"] == pytest.approx(2 / 4)
    assert scores["precision"] == pytest.approx(2 / 3) and scores["recall"] == pytest.approx(2 / 3)


def test_segmentation_scores_of_empty_cases():
    assert segmentation_scores(torch.tensor([0, 0, 0, 100]))["dice"] == 1.0  # nothing to find, nothing found
    empty_prediction = segmentation_scores(torch.tensor([0, 0, 5, 95]))
    assert empty_prediction["dice"] == 0.0 and empty_prediction["recall"] == 0.0
    assert empty_prediction["precision"] == 1.0  # no false alarm was raised


def test_split_level_counts_differ_from_per_batch_means():
    # batch 1: tiny crack found perfectly; batch 2: big crack, half found
    batch1 = binary_counts(torch.tensor([1, 0, 0, 0]), torch.tensor([1, 0, 0, 0]))
    batch2 = binary_counts(torch.tensor([1, 1, 0, 0]), torch.tensor([1, 1, 1, 1]))
    split = segmentation_scores(batch1 + batch2)["dice"]
    assert split == pytest.approx(2 * 3 / (2 * 3 + 0 + 2))
    per_batch = (segmentation_scores(batch1)["dice"] + segmentation_scores(batch2)["dice"]) / 2
    assert split != pytest.approx(per_batch)


def test_classification_scores_by_hand():
    # tp=6, fp=2, fn=3, tn=9
    scores = classification_scores(torch.tensor([6, 2, 3, 9]))
    assert scores["precision_1"] == pytest.approx(6 / 8) and scores["recall_1"] == pytest.approx(6 / 9)
    assert scores["precision_0"] == pytest.approx(9 / 12) and scores["recall_0"] == pytest.approx(9 / 11)
    assert scores["f1_1"] == pytest.approx(12 / 17) and scores["f1_0"] == pytest.approx(18 / 23)
    assert scores["f1_mean"] == pytest.approx((12 / 17 + 18 / 23) / 2)
    assert scores["precision_mean"] == pytest.approx((6 / 8 + 9 / 12) / 2)


def test_classification_scores_when_a_class_is_absent():
    scores = classification_scores(torch.tensor([0, 0, 0, 7]))  # all negative, all right
    assert scores["f1_0"] == 1.0 and scores["f1_1"] == 1.0
    scores = classification_scores(torch.tensor([0, 3, 0, 4]))  # false alarms only
    assert scores["precision_1"] == 0.0 and scores["f1_1"] == 0.0 and scores["recall_0"] == pytest.approx(4 / 7)
