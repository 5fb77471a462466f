"""The embedded default: a deterministic synthetic crack dataset in the project layout.

Backgrounds are multi-scale noise textures (asphalt- or concrete-like) under lighting gradients and soft
shadows, with crack-like distractors that are NOT cracks (stains, straight joints, scratches). Cracks are
thin branching random walks of varying width and contrast. About a third of the images hold no crack, and
many crops of cracked images hold none either, so both crop labels are well represented.
"""
import logging
from pathlib import Path
from typing import Callable, Dict, Tuple

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from crackseg.errors import DatasetError
from crackseg.files.writing import write_json

log = logging.getLogger(__name__)

MARKER = "synthetic.json"
CRACK_SHARE = 0.65  # share of images with at least one crack
PREFIXES = {"cracks": "synthetic", "hard-negatives": "hardneg"}  # file names by generator


def noise(rng: np.random.Generator, size: int, cells: int) -> np.ndarray:
    """Smooth value noise in [-1, 1] of shape (size, size), with `cells` random values per side."""
    grid = rng.uniform(-1, 1, (cells, cells)).astype(np.float32)
    return np.asarray(Image.fromarray(grid, mode="F").resize((size, size), Image.BICUBIC))


def background(rng: np.random.Generator, size: int) -> np.ndarray:
    """Grey texture in [0, 1], (size, size): base tone, multi-scale noise, grain and aggregate speckles."""
    base = rng.uniform(0.35, 0.72)
    texture = sum(rng.uniform(0.02, 0.06) * noise(rng, size, cells) for cells in (3, 8, 24))
    grain = rng.normal(0, rng.uniform(0.02, 0.05), (size, size))
    image = base + texture + grain
    return image * (1 - aggregate(rng, size))


def aggregate(rng: np.random.Generator, size: int) -> np.ndarray:
    """Darkening map of pits and gaps between aggregate stones: dark specks as dark as a crack, so a crack
    can only be told from the texture by its length and continuity, not by a few pixels around it."""
    layer = Image.new("L", (size, size), 0)
    draw = ImageDraw.Draw(layer)
    density = rng.uniform(0.003, 0.015)  # pits per pixel: smooth concrete ... open asphalt
    for _ in range(rng.poisson(density * size * size)):
        x, y = rng.uniform(0, size, 2)
        rx, ry = rng.uniform(0.4, 2.2, 2)
        draw.ellipse([x - rx, y - ry, x + rx, y + ry], fill=int(rng.uniform(40, 150)))
    for _ in range(rng.poisson(rng.uniform(0.001, 0.004) * size * size)):  # elongated gaps: short dark strokes
        x, y = rng.uniform(0, size, 2)
        angle, length = rng.uniform(0, 2 * np.pi), rng.uniform(3, 12)
        bend = angle + rng.normal(0, 0.6)
        middle = (x + length / 2 * np.cos(angle), y + length / 2 * np.sin(angle))
        end = (middle[0] + length / 2 * np.cos(bend), middle[1] + length / 2 * np.sin(bend))
        draw.line([(x, y), middle, end], fill=int(rng.uniform(60, 150)), width=int(rng.integers(1, 3)))
    return np.asarray(layer.filter(ImageFilter.GaussianBlur(0.5)), dtype=np.float32) / 255


def lighting(rng: np.random.Generator, image: np.ndarray) -> np.ndarray:
    """A linear brightness gradient and, sometimes, a soft-edged shadow over a half-plane."""
    size = image.shape[0]
    yy, xx = np.mgrid[0:size, 0:size] / size - 0.5
    angle = rng.uniform(0, 2 * np.pi)
    ramp = np.cos(angle) * xx + np.sin(angle) * yy
    image = image * (1 + rng.uniform(-0.35, 0.35) * ramp)
    if rng.random() < 0.3:
        angle = rng.uniform(0, 2 * np.pi)
        distance = (np.cos(angle) * xx + np.sin(angle) * yy - rng.uniform(-0.3, 0.3)) * size
        shade = 1 / (1 + np.exp(-distance / rng.uniform(2, 8)))
        image = image * (1 - rng.uniform(0.2, 0.45) * shade)
    return image


def _distractors(rng: np.random.Generator, size: int) -> np.ndarray:
    """A darkening map in [0, 1) of things that are not cracks: stains, straight joints, faint scratches."""
    layer = Image.new("L", (size, size), 0)  # darkening in 1/255 steps
    draw = ImageDraw.Draw(layer)
    for _ in range(rng.poisson(1.5)):  # stains and patches: dark blobs, some as dark as an open crack
        cx, cy = rng.uniform(0, size, 2)
        rx, ry = rng.uniform(0.02, 0.12, 2) * size
        draw.ellipse([cx - rx, cy - ry, cx + rx, cy + ry], fill=int(rng.uniform(25, 140)))
    layer = layer.filter(ImageFilter.GaussianBlur(size / 40))
    draw = ImageDraw.Draw(layer)
    if rng.random() < 0.25:  # a saw-cut joint: straight, wide, uniform
        horizontal, at = rng.random() < 0.5, rng.uniform(0.15, 0.85) * size
        ends = [(0, at), (size, at)] if horizontal else [(at, 0), (at, size)]
        draw.line(ends, fill=int(rng.uniform(50, 90)), width=int(rng.integers(5, 9)))
    for _ in range(rng.poisson(0.5)):  # faint straight scratches
        x0, y0, x1, y1 = rng.uniform(0, size, 4)
        draw.line([(x0, y0), (x1, y1)], fill=int(rng.uniform(12, 25)), width=1)
    return np.asarray(layer.filter(ImageFilter.GaussianBlur(0.8)), dtype=np.float32) / 255


def crack(rng: np.random.Generator, draw: ImageDraw.ImageDraw, size: int, x: float, y: float,
           angle: float, length: float, width: float, depth: int = 0) -> None:
    """Draw one crack as a wandering polyline of tapering width, with occasional branches."""
    step = 2.0
    points = [(x, y)]
    for _ in range(int(length / step)):
        angle += rng.normal(0, 0.25)
        x, y = x + step * np.cos(angle), y + step * np.sin(angle)
        points.append((x, y))
        if depth < 2 and rng.random() < 0.015:
            branch = angle + rng.choice([-1, 1]) * rng.uniform(0.5, 1.1)
            crack(rng, draw, size, x, y, branch, length * rng.uniform(0.2, 0.5), max(1.0, width * 0.6), depth + 1)
        if not (-8 < x < size + 8 and -8 < y < size + 8):
            break
    taper = np.linspace(width, max(1.0, width * 0.5), len(points))
    for (p, q), w in zip(zip(points[:-1], points[1:]), taper):
        draw.line([p, q], fill=255, width=max(1, int(round(w))))


def make_pair(rng: np.random.Generator, size: int) -> "tuple[Image.Image, Image.Image]":
    """One synthetic photo (RGB) and its binary mask (L, 0/255)."""
    image = background(rng, size)
    image = image * (1 - _distractors(rng, size))
    mask = Image.new("L", (size, size), 0)
    if rng.random() < CRACK_SHARE:
        draw = ImageDraw.Draw(mask)
        for _ in range(1 + int(rng.random() < 0.3)):
            x, y = rng.uniform(0.1, 0.9, 2) * size
            crack(rng, draw, size, x, y, rng.uniform(0, 2 * np.pi), rng.uniform(0.8, 1.6) * size,
                  float(np.exp(rng.uniform(np.log(1.0), np.log(9.0)))))  # hairline ... open crack
    soft = np.asarray(mask.filter(ImageFilter.GaussianBlur(0.6)), dtype=np.float32) / 255
    image = image * (1 - rng.uniform(0.35, 0.65) * np.clip(soft * 1.5, 0, 1))
    image = lighting(rng, image)
    tint = 1 + rng.normal(0, 0.012, 3)
    rgb = np.clip(image[..., None] * tint * 255, 0, 255).astype(np.uint8)
    return Image.fromarray(rgb, "RGB"), mask


Maker = Callable[[np.random.Generator, int], Tuple[Image.Image, Image.Image]]


def generate(root: Path, seed: int, image_size: int, counts: Dict[str, int], make: Maker = make_pair,
             kind: str = "cracks") -> Path:
    """Write ROOT/{split}/{images,masks}/ (JPEG images, PNG masks) made by `make` (the embedded crack generator,
    or `hardnegatives.make_pair`) and a marker file naming `kind`; returns the root."""
    root = Path(root)
    for split_index, (split, count) in enumerate(counts.items()):
        (root / split / "images").mkdir(parents=True, exist_ok=True)
        (root / split / "masks").mkdir(parents=True, exist_ok=True)
        for index in range(count):
            rng = np.random.default_rng([seed, split_index, index])
            image, mask = make(rng, image_size)
            name = f"{PREFIXES[kind]}_{index:05d}"
            image.save(root / split / "images" / f"{name}.jpg", quality=92)
            mask.save(root / split / "masks" / f"{name}.png")
    marker = {"kind": kind, "seed": seed, "image_size": image_size, "counts": counts}
    write_json(root / MARKER, marker)
    return root


def has_images(root: Path) -> bool:
    """True when ROOT/train/images holds at least one file."""
    folder = Path(root) / "train" / "images"
    return folder.is_dir() and any(folder.iterdir())


def ensure_dataset(root: Path, seed: int, image_size: int, counts: Dict[str, int]) -> bool:
    """Generate the synthetic dataset when `root` is missing or empty; returns True if it did.

    A root that holds something else than the expected layout is the user's data: it is never written into.
    """
    root = Path(root)
    if has_images(root):
        return False
    if root.is_dir() and any(not entry.name.startswith(".") for entry in root.iterdir()):
        raise DatasetError(f"{root}: no images in {root / 'train' / 'images'}; expected "
                           "train/images, train/masks, valid/images, valid/masks (or an empty folder, "
                           "where the synthetic default is generated)")
    log.info(f"{root}: no images found; generating the synthetic crack dataset "
             f"({', '.join(f'{n} {split}' for split, n in counts.items())} images of {image_size}x{image_size} px, "
             f"seed {seed}) ...")
    generate(root, seed, image_size, counts)
    return True
