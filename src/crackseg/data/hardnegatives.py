"""Synthetic hard negatives: photos full of crack-like structure that is not a crack.

Each photo is one scene of masonry, paving or pavement furniture whose edges are dark, thin and long like a crack:
brick and block walls in common bonds with flush, recessed or shadowed mortar joints; stone masonry; tiles and paving
stones; concrete slabs with saw-cut, sealed or expansion joints; planking; asphalt with worn lane markings, road
studs and manhole covers; kerbs; stains and tyre marks. Scenes are drawn at many scales (from one brick filling the
photo to a whole wall), then lit, sometimes blurred (focus or motion) and JPEG-compressed.

Everything drawn is labelled crack-free. A share of the photos of each scene (`CRACK_SHARE`) also gets a
real-looking crack (the embedded generator's wandering, branching, tapering crack) drawn across the scene and
labelled, so that the model learns the difference between a crack and a joint rather than "masonry means no
crack". Walls get the largest share: a model fine-tuned with 30% lost most of the real wall cracks it had found
(docs/MODEL.md, the third crackseg-v3 trial).

`make_pair(rng, size)` is deterministic in `rng`; `crackseg synthesize --kind hard-negatives` writes a data root.
"""
import io

import numpy as np
from PIL import Image, ImageDraw, ImageFilter
from scipy.ndimage import uniform_filter1d

from crackseg.data.scenes import SCENES
from crackseg.data.synthetic import crack, lighting

# share of each scene's photos with a labelled crack drawn across it
CRACK_SHARE = {"brick_wall": 0.5, "tiles": 0.3, "stone_masonry": 0.5, "concrete_joints": 0.3, "planking": 0.3,
               "pavement_furniture": 0.3, "stains": 0.3}
WEIGHTS = {"brick_wall": 3, "tiles": 1, "stone_masonry": 1, "concrete_joints": 2, "planking": 1,
           "pavement_furniture": 2, "stains": 1}


def _degrade(rng: np.random.Generator, image: Image.Image, cracked: bool) -> Image.Image:
    """Focus or motion blur (light where a crack must stay visible), then a JPEG round trip at a low quality."""
    if rng.random() < (0.15 if cracked else 0.4):
        if rng.random() < 0.5:
            image = image.filter(ImageFilter.GaussianBlur(rng.uniform(0.7, 1.5) if cracked else rng.uniform(1, 5)))
        else:  # a streak along one image axis, as from a moving survey vehicle or a shaking hand
            length = int(rng.integers(3, 6 if cracked else 15))
            streaked = uniform_filter1d(np.asarray(image, np.float32), length, axis=int(rng.integers(2)))
            image = Image.fromarray(np.clip(streaked, 0, 255).astype(np.uint8), "RGB")
    if rng.random() < 0.5:
        buffer = io.BytesIO()
        image.save(buffer, "JPEG", quality=int(rng.integers(15, 70)))
        image = Image.open(io.BytesIO(buffer.getvalue())).convert("RGB")
    return image


def make_pair(rng: np.random.Generator, size: int) -> "tuple[Image.Image, Image.Image]":
    """One hard-negative photo (RGB) and its mask (L, 0/255): empty unless a crack was drawn across the scene."""
    names = list(SCENES)
    weights = np.array([WEIGHTS[name] for name in names], float)
    scene = names[rng.choice(len(names), p=weights / weights.sum())]
    image, surface = SCENES[scene](rng, size)
    if image.ndim == 2:
        image = image[..., None] * (1 + rng.normal(0, 0.012, 3))
    mask = Image.new("L", (size, size), 0)
    cracked = rng.random() < CRACK_SHARE[scene]
    if cracked:
        x, y = rng.uniform(0.1, 0.9, 2) * size
        crack(rng, ImageDraw.Draw(mask), size, x, y, rng.uniform(0, 2 * np.pi), rng.uniform(0.8, 1.6) * size,
              float(np.exp(rng.uniform(np.log(1.5), np.log(7.0)))))
        drawn = np.asarray(mask, np.float32) / 255 * (surface > 0.5)  # a crack across a joint is the joint there
        mask = Image.fromarray((drawn > 0.5).astype(np.uint8) * 255)
        soft = np.asarray(mask.filter(ImageFilter.GaussianBlur(0.6)), np.float32) / 255
        image = image * (1 - rng.uniform(0.45, 0.75) * np.clip(soft * 1.5, 0, 1))[..., None]
    image = image * lighting(rng, np.ones((size, size), np.float32))[..., None]
    rgb = Image.fromarray(np.clip(image * 255, 0, 255).astype(np.uint8), "RGB")
    return _degrade(rng, rgb, cracked), mask
