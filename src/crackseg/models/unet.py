"""The U-Net of stage 1, composed of a VGG encoder and a decoder."""
from typing import Any, Dict, List, Tuple

import torch
from torch import nn

from crackseg.errors import CheckpointError
from crackseg.models.parts import VGGBlock, freeze

DEPTH = 4  # pooling steps; input sides must be multiples of 2**DEPTH
CRACK_PRIOR_LOGIT = -4.0  # sigmoid(-4) = 0.018


def check_depth(settings: Dict[str, Any], source: Any) -> None:
    """Weights of another depth cannot load into this network; say so with the file's name."""
    if settings.get("depth", DEPTH) != DEPTH:
        raise CheckpointError(f"{source}: a U-Net of depth {settings['depth']}; this crackseg builds depth {DEPTH}")


class VGGEncoder(nn.Module):
    """Four VGG blocks with max-pooling, then a bottleneck block.

    forward: (N, 3, H, W) -> (bottleneck (N, 16f, H/16, W/16), [skip maps f..8f, finest first]).
    """

    def __init__(self, width: int = 32, in_channels: int = 3):
        super().__init__()
        self.width = width
        channels = [width * 2**i for i in range(DEPTH + 1)]  # f, 2f, 4f, 8f, 16f
        self.blocks = nn.ModuleList()
        previous = in_channels
        for out in channels[:-1]:
            self.blocks.append(VGGBlock(previous, out))
            previous = out
        self.pool = nn.MaxPool2d(2)
        self.bottleneck = VGGBlock(channels[-2], channels[-1])
        self.skip_channels = channels[:-1]
        self.out_channels = channels[-1]

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, List[torch.Tensor]]:
        """Images (N, 3, H, W) -> (bottleneck (N, 16f, H/16, W/16), skips [(N, f, H, W), (N, 2f, H/2, W/2),
        (N, 4f, H/4, W/4), (N, 8f, H/8, W/8)])."""
        skips = []
        for block in self.blocks:
            x = block(x)
            skips.append(x)
            x = self.pool(x)
        return self.bottleneck(x), skips


class Decoder(nn.Module):
    """Four up-steps (transposed conv, concat skip, VGG block), then a 1x1 conv to one logit channel.

    forward: (bottleneck (N, 16f, h, w), skips) -> logits (N, 1, 16h, 16w).
    """

    def __init__(self, width: int = 32):
        super().__init__()
        self.ups = nn.ModuleList()
        self.blocks = nn.ModuleList()
        for i in reversed(range(DEPTH)):
            channels = width * 2**i
            self.ups.append(nn.ConvTranspose2d(channels * 2, channels, kernel_size=2, stride=2))
            self.blocks.append(VGGBlock(channels * 2, channels))
        self.head = nn.Conv2d(width, 1, kernel_size=1)
        # Start at the prior of a rare class (p ~ 2% crack) instead of 50%, so early training does not spend
        # epochs pushing every pixel towards background.
        nn.init.constant_(self.head.bias, CRACK_PRIOR_LOGIT)

    def forward(self, bottleneck: torch.Tensor, skips: List[torch.Tensor]) -> torch.Tensor:
        """(bottleneck (N, 16f, h, w), the encoder's four skips) -> mask logits (N, 1, 16h, 16w)."""
        x = bottleneck
        for up, block, skip in zip(self.ups, self.blocks, reversed(skips)):
            x = block(torch.cat([up(x), skip], dim=1))
        return self.head(x)


def check_input_size(height: int, width: int) -> None:
    """Raise a clear error when a side is not a multiple of 2**DEPTH (the skips would not align)."""
    multiple = 2**DEPTH
    if height % multiple or width % multiple:
        raise ValueError(
            f"U-Net input sides must be multiples of {multiple}, got {height}x{width}: "
            "pad the image (and crop the output back) or use crops of a valid size"
        )


def drop_skips(skips: List[torch.Tensor], p: float) -> List[torch.Tensor]:
    """Zero each skip map of each sample with probability p (rescaling the kept ones by 1/(1-p))."""
    kept = []
    for skip in skips:
        keep = torch.rand(skip.shape[0], 1, 1, 1, device=skip.device) >= p
        kept.append(skip * keep.to(skip.dtype) / (1 - p))
    return kept


class UNet(nn.Module):
    """Crack segmentation network: (N, 3, H, W) -> mask logits (N, 1, H, W); H, W multiples of 16.

    `skip_dropout` > 0 (training only) zeroes whole skip maps at random, so the decoder cannot segment from the
    shallow skips alone and the bottleneck must carry crack evidence, which the stage-2 gate relies on.

    `freeze_encoder()` trains the decoder alone: the encoder, and with it every stage-2 head trained on it, stays
    as it was (and its backward pass is not computed).
    """

    def __init__(self, width: int = 32, skip_dropout: float = 0.0):
        super().__init__()
        self.width = width
        self.skip_dropout = skip_dropout
        self.encoder = VGGEncoder(width)
        self.decoder = Decoder(width)
        self.encoder_frozen = False

    def freeze_encoder(self) -> None:
        """Train the decoder alone from here on: no gradients into the encoder, its BatchNorm in eval mode."""
        freeze(self.encoder)
        self.encoder_frozen = True

    def train(self, mode: bool = True) -> "UNet":
        """As nn.Module.train, with a frozen encoder kept in eval mode."""
        super().train(mode)
        if self.encoder_frozen:
            self.encoder.eval()
        return self

    def settings(self) -> Dict[str, Any]:
        """The constructor's arguments (and the fixed depth), as checkpoints store them."""
        return {"width": self.width, "skip_dropout": self.skip_dropout, "depth": DEPTH}

    @classmethod
    def from_settings(cls, settings: Dict[str, Any], source: Any = "weights") -> "UNet":
        """The network `settings()` describes; `source` names the file they came from, for errors."""
        check_depth(settings, source)
        return cls(settings["width"], settings.get("skip_dropout", 0.0))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Images (N, 3, H, W), H and W multiples of 16 -> mask logits (N, 1, H, W)."""
        check_input_size(x.shape[-2], x.shape[-1])
        bottleneck, skips = self.encoder(x)
        if self.training and self.skip_dropout > 0:
            skips = drop_skips(skips, self.skip_dropout)
        return self.decoder(bottleneck, skips)
