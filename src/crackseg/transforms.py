"""Paired transforms: each draws its random parameters once and applies them to the image and its mask.

They work on tensors: image (C, H, W) uint8 or float, mask (1, H, W); FiveCrop stacks its crops into a
leading dimension (5, C, s, s). Masks are only flipped, rotated and cropped, so they stay binary.
"""
from typing import Callable, List, Sequence, Tuple

import torch

Pair = Tuple[torch.Tensor, torch.Tensor]


class Compose:
    """Apply paired transforms in order."""

    def __init__(self, transforms: Sequence[Callable[[torch.Tensor, torch.Tensor], Pair]]):
        self.transforms = list(transforms)

    def __call__(self, image: torch.Tensor, mask: torch.Tensor) -> Pair:
        for transform in self.transforms:
            image, mask = transform(image, mask)
        return image, mask


class RandomFlip:
    """Mirror along `dim` (-1: left-right, -2: top-bottom) with probability p."""

    dim = -1

    def __init__(self, p: float = 0.5):
        self.p = p

    def __call__(self, image: torch.Tensor, mask: torch.Tensor) -> Pair:
        if torch.rand(()) < self.p:
            return image.flip(self.dim), mask.flip(self.dim)
        return image, mask


class RandomHorizontalFlip(RandomFlip):
    """Mirror left-right with probability p."""

    dim = -1


class RandomVerticalFlip(RandomFlip):
    """Mirror top-bottom with probability p."""

    dim = -2


class RandomRotate90:
    """Rotate by a random multiple of 90 degrees (0, 90, 180 or 270), the same for image and mask."""

    def __call__(self, image: torch.Tensor, mask: torch.Tensor) -> Pair:
        turns = int(torch.randint(4, ()))
        return torch.rot90(image, turns, dims=(-2, -1)), torch.rot90(mask, turns, dims=(-2, -1))


def five_crop_boxes(height: int, width: int, size: int) -> List[Tuple[int, int]]:
    """Top-left corners of the four corner crops and the centre crop (torchvision's FiveCrop order)."""
    if height < size or width < size:
        raise ValueError(f"image of {height}x{width} px is smaller than the crop size {size}")
    centre = ((height - size) // 2, (width - size) // 2)
    return [(0, 0), (0, width - size), (height - size, 0), (height - size, width - size), centre]


class FiveCrop:
    """The four corners and the centre: (C, H, W) -> (5, C, size, size) for image and mask alike."""

    def __init__(self, size: int):
        self.size = size

    def __call__(self, image: torch.Tensor, mask: torch.Tensor) -> Pair:
        boxes = five_crop_boxes(image.shape[-2], image.shape[-1], self.size)
        s = self.size
        return (torch.stack([image[..., y:y + s, x:x + s] for y, x in boxes]),
                torch.stack([mask[..., y:y + s, x:x + s] for y, x in boxes]))


class RandomWindow:
    """A random window of size x size px (or the whole side where the image is smaller), the same for image and
    mask: with FiveCrop after it, every region of a large photo is trained on across epochs."""

    def __init__(self, size: int):
        self.size = size

    def __call__(self, image: torch.Tensor, mask: torch.Tensor) -> Pair:
        height, width = image.shape[-2:]
        h, w = min(self.size, height), min(self.size, width)
        y, x = int(torch.randint(height - h + 1, ())), int(torch.randint(width - w + 1, ()))
        return image[..., y:y + h, x:x + w], mask[..., y:y + h, x:x + w]


class ToFloat:
    """uint8 image -> float in [0, 1]; mask -> float 0/1 (any non-zero value is crack)."""

    def __call__(self, image: torch.Tensor, mask: torch.Tensor) -> Pair:
        return image.float().div_(255), (mask > 0).float()


SAMPLINGS = ("window", "five")


def train_transform(crop_size: int, sampling: str = "five") -> Compose:
    """Training augmentation: flips, rotation by k*90 degrees, FiveCrop, to float. `sampling="five"` is SPEC's
    (FiveCrop of the whole image); "window" first takes a random window of twice the crop size."""
    if sampling not in SAMPLINGS:
        raise ValueError(f"unknown sampling {sampling!r}; expected one of {', '.join(SAMPLINGS)}")
    window = [RandomWindow(2 * crop_size)] if sampling == "window" else []
    return Compose(window + [RandomVerticalFlip(), RandomHorizontalFlip(), RandomRotate90(), FiveCrop(crop_size),
                             ToFloat()])


def valid_transform(crop_size: int) -> Compose:
    """SPEC's validation preset: FiveCrop only, to float."""
    return Compose([FiveCrop(crop_size), ToFloat()])
