"""Distillation from a teacher U-Net while fine-tuning (learning without forgetting: Li and Hoiem, TPAMI 2018).

A model fine-tuned on hard negatives learns to doubt and loses some of what its start knew on the sets where the
start was good (docs/MODEL.md, the crackseg-v3 trials). With `--teacher`, every training and validation crop of a
data root with a teacher weight w > 0 also adds w x BCE(student's probabilities, the teacher's) to its loss, so
the student keeps the teacher's masks there while it learns the hard negatives elsewhere: give the sets where the
teacher is good a weight and the hard negatives none. The teacher's probabilities are soft targets (no threshold);
the part's minimum is the teacher's own entropy, not 0, and its gradient vanishes where the two agree.

The teacher is loaded lazily, in the process and on the device that trains, frozen and in eval mode (no skip
dropout), and runs under the training's mixed precision.
"""
import contextlib
from typing import Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from crackseg.files.pretrained import unet_weights
from crackseg.models import UNet

AUTOCAST = {"no": None, "bf16": torch.bfloat16, "fp16": torch.float16}  # mixed_precision's names -> dtypes


def load_teacher(weights: str) -> UNet:
    """The frozen U-Net `--teacher` names: "pretrained" (the shipped model) or a stage-1 checkpoint, at its own
    width (it need not be the student's)."""
    state, width = unet_weights(weights)
    unet = UNet(width)
    unet.load_state_dict(state)
    unet.eval()
    for parameter in unet.parameters():
        parameter.requires_grad_(False)
    return unet


def distillation_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor,
                      crop_weights: torch.Tensor) -> torch.Tensor:
    """sum_i w_i * mean over crop i's pixels of BCE(sigmoid(student_i), sigmoid(teacher_i)), over all N crops / N:
    a crop of weight 0 adds nothing, and the part is on the scale of the label loss (a mean over the batch)."""
    per_pixel = F.binary_cross_entropy_with_logits(student_logits.float(), torch.sigmoid(teacher_logits.float()),
                                                   reduction="none")
    return (per_pixel.flatten(1).mean(1) * crop_weights.to(per_pixel)).sum() / len(student_logits)


class Distiller:
    """The teacher part of stage 1's loss: `weights[g]` for the crops of data source g (0: not distilled)."""

    def __init__(self, teacher: str, weights: Sequence[float], precision: str = "no"):
        self.teacher_weights = teacher
        self.weights = torch.tensor([float(weight) for weight in weights])
        self.dtype = AUTOCAST[precision]
        self.model: Optional[nn.Module] = None

    def loss(self, images: torch.Tensor, student_logits: torch.Tensor, groups: torch.Tensor) -> torch.Tensor:
        """The weighted BCE towards the teacher's probabilities, the teacher run on the distilled crops only."""
        crop_weights = self.weights.to(groups.device)[groups]
        chosen = crop_weights > 0
        if not bool(chosen.any()):
            return student_logits.float().sum() * 0.0  # keeps the graph and the device
        if self.model is None:
            self.model = load_teacher(self.teacher_weights).to(images.device)
            if self.dtype is not None:
                self.model = self.model.to(memory_format=torch.channels_last)
        autocast = (torch.autocast(images.device.type, dtype=self.dtype) if self.dtype is not None
                    else contextlib.nullcontext())
        with torch.no_grad(), autocast:
            teacher_logits = self.model(images[chosen])
        return distillation_loss(student_logits[chosen], teacher_logits, crop_weights[chosen]) * (
            int(chosen.sum()) / len(student_logits))
