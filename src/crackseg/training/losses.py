"""Losses on logits."""
from typing import Dict, Tuple

import torch
import torch.nn.functional as F
from torch import nn


def soft_dice(logits: torch.Tensor, targets: torch.Tensor, smooth: float = 1.0) -> torch.Tensor:
    """Soft Dice over the whole batch: (2*sum(p*t) + smooth) / (sum(p) + sum(t) + smooth), p = sigmoid(logits).

    logits, targets: (N, 1, H, W); targets 0/1. With smooth > 0 an empty target and an empty prediction
    score 1 instead of 0/0.
    """
    probs = torch.sigmoid(logits.float())
    targets = targets.float()
    intersection = (probs * targets).sum()
    return (2 * intersection + smooth) / (probs.sum() + targets.sum() + smooth)


class BCEDiceLoss(nn.Module):
    """a * BCE + (1 - a) * (1 - Dice) on logits; returns (loss, {"bce", "dice"}) with the parts detached."""

    def __init__(self, bce_weight: float = 0.9, smooth: float = 1.0):
        super().__init__()
        self.bce_weight = bce_weight
        self.smooth = smooth

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> Tuple[torch.Tensor, Dict[str, torch.Tensor]]:
        """Logits and 0/1 targets, both (N, 1, H, W) -> (loss with its graph, {"bce", "dice"} detached)."""
        bce = F.binary_cross_entropy_with_logits(logits.float(), targets.float())
        dice = soft_dice(logits, targets, self.smooth)
        loss = self.bce_weight * bce + (1 - self.bce_weight) * (1 - dice)
        return loss, {"bce": bce.detach(), "dice": dice.detach()}
