"""Paired transforms on torchvision.transforms.v2: the image is a tv_tensors.Image and the mask a
tv_tensors.Mask, so every random transform draws its parameters once and applies them to both.

`Compose` takes and returns plain tensors: image (C, H, W) uint8 or float, mask (1, H, W) uint8 0/1; FiveCrop
stacks its crops into a leading dimension (5, C, s, s). Masks are only flipped, rotated, cropped and cleared (under
a synthetic road marking or joint), so they stay binary. v2 has no rotation by multiples of 90 degrees without
resampling, and its FiveCrop rejects masks, so those two (and the random window) are small v2 transforms here,
cutting with v2's own crop; so are the synthetic road markings and joints, which v2 has no equivalent of.
"""
import math
from typing import Any, Dict, List, Sequence, Tuple

import torch
from torchvision import tv_tensors
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as F

Pair = Tuple[torch.Tensor, torch.Tensor]


class Compose:
    """Apply v2 transforms in order to an (image, mask) pair of plain tensors; returns plain tensors."""

    def __init__(self, transforms: Sequence[v2.Transform]):
        self.transforms = v2.Compose(list(transforms))

    def __call__(self, image: torch.Tensor, mask: torch.Tensor) -> Pair:
        image, mask = self.transforms(tv_tensors.Image(image), tv_tensors.Mask(mask))
        return image.as_subclass(torch.Tensor), mask.as_subclass(torch.Tensor)


class RandomRotate90(v2.Transform):
    """Rotate by a random multiple of 90 degrees (0, 90, 180 or 270), the same for image and mask, exactly (no
    resampling)."""

    def make_params(self, flat_inputs: List[Any]) -> Dict[str, Any]:
        return {"turns": int(torch.randint(4, ()))}

    def transform(self, inpt: Any, params: Dict[str, Any]) -> Any:
        return tv_tensors.wrap(torch.rot90(inpt, params["turns"], dims=(-2, -1)), like=inpt)


def five_crop_boxes(height: int, width: int, size: int) -> List[Tuple[int, int]]:
    """Top-left corners of the four corner crops and the centre crop (torchvision's FiveCrop order)."""
    if height < size or width < size:
        raise ValueError(f"image of {height}x{width} px is smaller than the crop size {size}")
    centre = ((height - size) // 2, (width - size) // 2)
    return [(0, 0), (0, width - size), (height - size, 0), (height - size, width - size), centre]


class FiveCrop(v2.Transform):
    """The four corners and the centre: (C, H, W) -> (5, C, size, size) for image and mask alike."""

    def __init__(self, size: int):
        super().__init__()
        self.size = size

    def make_params(self, flat_inputs: List[Any]) -> Dict[str, Any]:
        return {"boxes": five_crop_boxes(*v2.query_size(flat_inputs), self.size)}

    def transform(self, inpt: Any, params: Dict[str, Any]) -> Any:
        crops = [F.crop(inpt, y, x, self.size, self.size) for y, x in params["boxes"]]
        return tv_tensors.wrap(torch.stack(crops), like=inpt)


class RandomWindow(v2.Transform):
    """A random window of size x size px (or the whole side where the image is smaller), the same for image and
    mask: with FiveCrop after it, every region of a large photo is trained on across epochs.

    With `zoom` (low, high) other than (1, 1), the window is cut at a random zoom z, log-uniform in [low, high]: a
    window of size / z px (or the whole side) resized by z, so a crack 4 px wide comes out 4 z px wide and the model
    sees open cracks as wide as close-ups show them. z is raised where needed so that no side ends below `min_side`
    px (the crop cut after it). The mask is resized bilinearly and cut at one half, or at z / 2 when zooming out, so
    that a crack 1 px wide, which covers only z of the pixels it crosses, stays labelled: 1 px wide."""

    def __init__(self, size: int, zoom: Tuple[float, float] = (1.0, 1.0), min_side: int = 0):
        super().__init__()
        if not 0 < zoom[0] <= zoom[1]:
            raise ValueError(f"zoom must be 0 < low <= high, got {zoom}")
        self.size, self.zoom, self.min_side = size, tuple(zoom), min_side

    def make_params(self, flat_inputs: List[Any]) -> Dict[str, Any]:
        height, width = v2.query_size(flat_inputs)
        zoom = 1.0
        if self.zoom != (1.0, 1.0):
            zoom = max(math.exp(_uniform(math.log(self.zoom[0]), math.log(self.zoom[1]))),
                       self.min_side / min(height, width))
        h, w = min(round(self.size / zoom), height), min(round(self.size / zoom), width)
        out = None if zoom == 1.0 else [max(self.min_side, min(self.size, round(side * zoom))) for side in (h, w)]
        return {"top": int(torch.randint(height - h + 1, ())), "left": int(torch.randint(width - w + 1, ())),
                "height": h, "width": w, "out": out, "zoom": zoom}

    def transform(self, inpt: Any, params: Dict[str, Any]) -> Any:
        window = F.crop(inpt, params["top"], params["left"], params["height"], params["width"])
        if params["out"] is None:
            return window
        if isinstance(inpt, tv_tensors.Mask):
            soft = F.resize(window.as_subclass(torch.Tensor).float(), params["out"], antialias=True)
            return tv_tensors.wrap((soft >= 0.5 * min(1.0, params["zoom"])).to(inpt.dtype), like=inpt)
        return F.resize(window, params["out"], antialias=True)


def _uniform(low: float, high: float) -> float:
    return low + (high - low) * float(torch.rand(()))


def _random_angle() -> float:
    """The direction of a straight feature: along a side of the image (7 in 10, within 4 degrees) or any."""
    if float(torch.rand(())) < 0.7:
        return math.pi / 2 * int(torch.randint(2, ())) + math.radians(_uniform(-4, 4))
    return _uniform(0, math.pi)


def _line_distance(height: int, width: int, angle: float) -> torch.Tensor:
    """The distance (H, W) of every pixel from a straight line at `angle` through a random point of the image."""
    cy, cx = _uniform(0, height - 1), _uniform(0, width - 1)
    yy, xx = torch.meshgrid(torch.arange(height, dtype=torch.float32), torch.arange(width, dtype=torch.float32),
                            indexing="ij")
    return ((yy - cy) * math.cos(angle) - (xx - cx) * math.sin(angle)).abs()


class _RandomStraightFeature(v2.Transform):
    """With probability `p`, draw a straight feature across the image (`draw`: its parameters for an image of
    height x width), change the photo there (`apply`, on float pixels) and label no crack where it `covers`."""

    def __init__(self, p: float):
        super().__init__()
        self.p = p

    def draw(self, height: int, width: int) -> Dict[str, Any]:
        raise NotImplementedError

    def covers(self, params: Dict[str, Any]) -> torch.Tensor:
        raise NotImplementedError

    def apply(self, image: torch.Tensor, params: Dict[str, Any]) -> torch.Tensor:
        raise NotImplementedError

    def make_params(self, flat_inputs: List[Any]) -> Dict[str, Any]:
        height, width = v2.query_size(flat_inputs)
        return self.draw(height, width) if float(torch.rand(())) < self.p else {}

    def transform(self, inpt: Any, params: Dict[str, Any]) -> Any:
        if not params:
            return inpt
        if isinstance(inpt, tv_tensors.Mask):
            return tv_tensors.wrap(inpt * ~self.covers(params), like=inpt)
        changed = self.apply(inpt.float(), params)
        return tv_tensors.wrap(changed.round().clamp(0, 255).to(inpt.dtype), like=inpt)


class RandomMarking(_RandomStraightFeature):
    """With probability `p`, paint a synthetic road marking across the image and label no crack under it.

    A straight band of white (3 in 4) or yellow paint, 4-25% of the image's shorter side wide, along a side of the
    image (7 in 10, within a few degrees) or at any angle, textured by the surface beneath and sometimes worn
    thin; half the time with a thin dark seam along its edges, as where paint meets worn asphalt. On survey photos
    (nha12d, docs/MODEL.md) 45% of the false cracks of a model trained without them lay within 10 px of a lane
    marking: a straight dark line beside a bright band is not a crack.
    """

    def draw(self, height: int, width: int) -> Dict[str, Any]:
        angle = _random_angle()
        half = _uniform(0.02, 0.125) * min(height, width)
        distance = _line_distance(height, width, angle)  # from the band's centre line
        coverage = (half + 0.5 - distance).clamp(0, 1) * _uniform(0.85, 1.0)  # anti-aliased edges, worn paint
        seam = torch.zeros_like(distance)
        if float(torch.rand(())) < 0.5:
            seam = _uniform(0.2, 0.5) * torch.exp(-((distance - half - 1) / _uniform(0.7, 1.5)) ** 2)
        yellow = float(torch.rand(())) < 0.25
        colour = torch.tensor([_uniform(200, 240), _uniform(170, 210), _uniform(40, 90)] if yellow
                              else [_uniform(190, 250)] * 3)
        return {"coverage": coverage, "seam": seam, "colour": colour}

    def covers(self, params: Dict[str, Any]) -> torch.Tensor:
        return params["coverage"] >= 0.5

    def apply(self, image: torch.Tensor, params: Dict[str, Any]) -> torch.Tensor:
        coverage = params["coverage"]
        grey = image.mean(0, keepdim=True)
        paint = params["colour"].view(-1, 1, 1) * (0.85 + 0.15 * grey / grey.mean().clamp(min=1))
        return (image * (1 - coverage) + paint * coverage) * (1 - params["seam"])


class RandomJoint(_RandomStraightFeature):
    """With probability `p`, cut a synthetic joint across the image and label no crack on it.

    A dead-straight dark line, 1-5 px wide and 30-65% darker than the surface at its centre, along a side of the
    image (7 in 10, within a few degrees) or at any angle: a saw cut or construction joint in concrete, or the seam
    between two lanes of asphalt. Cracks wander and joints do not; with the masonry set's mortar joints this is
    meant to teach the difference. Joints were among the false cracks left on survey photos once road markings were
    trained on (nha12d); in the one run tried with p = 0.25 they cost a fifth of the true cracks too
    (docs/MODEL.md, "Road markings and joints").
    """

    def draw(self, height: int, width: int) -> Dict[str, Any]:
        angle = _random_angle()
        half = _uniform(0.5, 2.5)
        profile = (half + 0.5 - _line_distance(height, width, angle)).clamp(0, 1)  # anti-aliased edges
        return {"darkness": _uniform(0.3, 0.65) * profile}

    def covers(self, params: Dict[str, Any]) -> torch.Tensor:
        return params["darkness"] > 0

    def apply(self, image: torch.Tensor, params: Dict[str, Any]) -> torch.Tensor:
        return image * (1 - params["darkness"])


# uint8 image -> float in [0, 1]; mask 0/1 -> float 0/1 (v2 never rescales masks)
TO_FLOAT = {tv_tensors.Image: torch.float32, tv_tensors.Mask: torch.float32}

SAMPLINGS = ("window", "five")


def train_transform(crop_size: int, sampling: str = "five", markings: float = 0.0, joints: float = 0.0,
                    zoom: Tuple[float, float] = (1.0, 1.0)) -> Compose:
    """Training augmentation: flips, rotation by k*90 degrees, FiveCrop, to float. `sampling="five"` is SPEC's
    (FiveCrop of the whole image); "window" first takes a random window of twice the crop size, at a random `zoom`
    (`RandomWindow`; (1, 1): none; "five" takes none). `markings` and
    `joints` > 0 first paint a synthetic road marking (`RandomMarking`) and cut a synthetic joint (`RandomJoint`)
    into those shares of the images (or windows)."""
    if sampling not in SAMPLINGS:
        raise ValueError(f"unknown sampling {sampling!r}; expected one of {', '.join(SAMPLINGS)}")
    if sampling != "window" and tuple(zoom) != (1.0, 1.0):
        raise ValueError("a zoom needs window sampling")
    window = [RandomWindow(2 * crop_size, zoom, crop_size)] if sampling == "window" else []
    distractors = ([RandomMarking(markings)] if markings > 0 else []) + ([RandomJoint(joints)] if joints > 0 else [])
    return Compose(window + distractors + [v2.RandomVerticalFlip(), v2.RandomHorizontalFlip(), RandomRotate90(),
                                           FiveCrop(crop_size), v2.ToDtype(TO_FLOAT, scale=True)])


def valid_transform(crop_size: int) -> Compose:
    """SPEC's validation preset: FiveCrop only, to float."""
    return Compose([FiveCrop(crop_size), v2.ToDtype(TO_FLOAT, scale=True)])
