"""Metrics from counts accumulated over a whole split, reduced once."""
from typing import Dict

import torch


def binary_counts(predicted: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Counts [tp, fp, fn, tn] (int64, shape (4,)) of two boolean tensors of the same shape."""
    predicted, target = predicted.bool(), target.bool()
    tp = (predicted & target).sum()
    fp = (predicted & ~target).sum()
    fn = (~predicted & target).sum()
    tn = predicted.numel() - tp - fp - fn
    return torch.stack([tp, fp, fn, tn]).long()


def _ratio(numerator: float, denominator: float, empty: float) -> float:
    return numerator / denominator if denominator else empty


def segmentation_scores(counts: torch.Tensor) -> Dict[str, float]:
    """Dice, IoU, precision, recall from pixel counts [tp, fp, fn, tn].

    With no crack pixel in target and prediction alike, every score is 1 (a perfect empty answer).
    """
    tp, fp, fn, _ = (float(c) for c in counts)
    return {"dice": _ratio(2 * tp, 2 * tp + fp + fn, 1.0), "iou": _ratio(tp, tp + fp + fn, 1.0),
            "precision": _ratio(tp, tp + fp, 1.0), "recall": _ratio(tp, tp + fn, 1.0)}


def classification_scores(counts: torch.Tensor) -> Dict[str, float]:
    """Precision, recall and F1 for class 1 (crack), class 0 (no crack) and their mean, from [tp, fp, fn, tn].

    Keys: precision_1, recall_1, f1_1, precision_0, ..., precision_mean, recall_mean, f1_mean. A class that
    is neither present nor predicted scores 1; one that is present or predicted but never hit scores 0.
    """
    tp, fp, fn, tn = (float(c) for c in counts)
    scores: Dict[str, float] = {}
    for cls, (hit, false_alarm, miss) in {"1": (tp, fp, fn), "0": (tn, fn, fp)}.items():
        empty = 1.0 if hit + false_alarm + miss == 0 else 0.0
        precision = _ratio(hit, hit + false_alarm, empty)
        recall = _ratio(hit, hit + miss, empty)
        scores[f"precision_{cls}"] = precision
        scores[f"recall_{cls}"] = recall
        scores[f"f1_{cls}"] = _ratio(2 * hit, 2 * hit + false_alarm + miss, empty)
    for name in ("precision", "recall", "f1"):
        scores[f"{name}_mean"] = (scores[f"{name}_0"] + scores[f"{name}_1"]) / 2
    return scores
