"""Building blocks shared by the encoder and the decoder."""
from torch import nn


def freeze(module: nn.Module) -> None:
    """Stop gradients into `module` and put its BatchNorm layers in eval mode (the caller's `train()` must keep
    them there: a frozen encoder keeps the running statistics it was trained with)."""
    for parameter in module.parameters():
        parameter.requires_grad_(False)
    module.eval()


class VGGBlock(nn.Sequential):
    """[Conv3x3 (no bias) -> BatchNorm -> ReLU] x 2: (N, C_in, H, W) -> (N, C_out, H, W)."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__(
            nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True),
            nn.Conv2d(out_channels, out_channels, kernel_size=3, padding=1, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True),
        )
