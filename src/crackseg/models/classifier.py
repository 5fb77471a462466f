"""Stage 2: a crack / no-crack head on the bottleneck of a frozen encoder."""
from typing import Any, Dict

import torch
from torch import nn

from crackseg.models.parts import freeze
from crackseg.models.unet import DEPTH, VGGEncoder


class ClassifierHead(nn.Module):
    """AvgPool2d(2) -> Flatten -> FC 2048 -> FC 1024 -> FC 1 (logit).

    forward: bottleneck (N, C, crop/16, crop/16) -> crack logits (N, 1). The input size of the first
    layer follows from the channels and the crop size (512*7*7 at width 32, crop 224).
    """

    def __init__(self, in_channels: int, crop_size: int, hidden: tuple = (2048, 1024)):
        super().__init__()
        multiple = 2 ** (DEPTH + 1)
        if crop_size % multiple:
            raise ValueError(f"crop size must be a multiple of {multiple} for the classifier head, got {crop_size}")
        self.crop_size = crop_size
        side = crop_size // multiple
        layers = [nn.AvgPool2d(2), nn.Flatten()]
        previous = in_channels * side * side
        for size in hidden:
            layers += [nn.Linear(previous, size), nn.BatchNorm1d(size), nn.ReLU(inplace=True)]
            previous = size
        layers.append(nn.Linear(previous, 1))
        self.layers = nn.Sequential(*layers)

    def forward(self, bottleneck: torch.Tensor) -> torch.Tensor:
        """Bottleneck features (N, 16f, crop/16, crop/16) -> crack logits (N, 1)."""
        return self.layers(bottleneck)


class VGGEncoderClassifier(nn.Module):
    """A frozen VGG encoder and a trainable head: (N, 3, crop, crop) -> crack logits (N, 1).

    The encoder never receives gradients and its BatchNorm statistics never change, even after `.train()`.
    """

    def __init__(self, encoder: VGGEncoder, crop_size: int):
        super().__init__()
        self.encoder = encoder
        self.crop_size = crop_size
        self.head = ClassifierHead(encoder.out_channels, crop_size)
        self.freeze_encoder()

    def settings(self) -> Dict[str, Any]:
        """What builds this network, as checkpoints store it."""
        return {"width": self.encoder.width, "crop_size": self.crop_size, "depth": DEPTH}

    def freeze_encoder(self) -> None:
        """Stop gradients into the encoder and keep its BatchNorm layers in eval mode."""
        freeze(self.encoder)

    def train(self, mode: bool = True) -> "VGGEncoderClassifier":
        """As nn.Module.train, with the frozen encoder kept in eval mode."""
        super().train(mode)
        self.encoder.eval()  # frozen: BatchNorm must keep the running statistics of stage 1
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Crops (N, 3, crop, crop) -> crack logits (N, 1); the frozen encoder runs without gradients."""
        with torch.no_grad():
            bottleneck, _ = self.encoder(x)
        return self.head(bottleneck)
