"""Scenes full of crack-like structure that is not a crack, for the hard-negative generator: brick and block walls
in common bonds with flush, recessed or shadowed mortar joints; stone masonry; tiles and paving stones; concrete
slabs with saw-cut, sealed or expansion joints; planking; asphalt with worn lane markings, road studs and manhole
covers; kerbs; stains and tyre marks, at many scales. Each builder returns the scene and where a crack may run
(`Scene`); `hardnegatives` lights, cracks and degrades them."""
from typing import Callable, Dict, Tuple

import numpy as np
from PIL import Image, ImageDraw, ImageFilter
from scipy.spatial import cKDTree

from crackseg.data.synthetic import aggregate, background, noise

Scene = Tuple[np.ndarray, np.ndarray]  # (grey or RGB float image in [0, 1], per-pixel "surface" weight for cracks)

BRICK_COLOURS = ((0.55, 0.27, 0.20), (0.62, 0.36, 0.25), (0.45, 0.22, 0.18), (0.70, 0.58, 0.42),
                 (0.58, 0.56, 0.52), (0.40, 0.38, 0.36), (0.75, 0.70, 0.60))


def _rotated(rng: np.random.Generator, size: int, tilt: float) -> Tuple[np.ndarray, np.ndarray]:
    """Pixel coordinates (u, v) rotated by a small random angle (up to `tilt` radians) about a random point, so
    rows of bricks or slabs are not always axis-aligned (a handheld camera is rarely square to the wall)."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    angle = rng.uniform(-tilt, tilt) + (np.pi / 2 if rng.random() < 0.3 else 0.0)
    x0, y0 = rng.uniform(0, 4 * size, 2)
    return (xx * np.cos(angle) + yy * np.sin(angle) + x0, -xx * np.sin(angle) + yy * np.cos(angle) + y0)


def _cell_tone(rng: np.random.Generator, ids: np.ndarray, spread: float) -> np.ndarray:
    """A random brightness factor per cell id (bricks, stones, boards): no two units are quite alike."""
    unique, inverse = np.unique(ids, return_inverse=True)
    return (1 + rng.normal(0, spread, unique.size).astype(np.float32))[inverse].reshape(ids.shape)


def _colour(rng: np.random.Generator, palette=BRICK_COLOURS) -> np.ndarray:
    base = np.asarray(palette[rng.integers(len(palette))], np.float32)
    return np.clip(base * rng.uniform(0.85, 1.15) + rng.normal(0, 0.03, 3), 0.05, 0.95)


def _units(rng: np.random.Generator, size: int, length: float, height: float, joint: float, bond: str,
           tilt: float = 0.06) -> Dict[str, np.ndarray]:
    """Lay rectangular units (bricks, blocks, tiles, slabs) in a bond; per pixel: the unit id, whether the pixel is
    mortar, and the distance to the unit's top and left edge (for shadowed and recessed joints)."""
    u, v = _rotated(rng, size, tilt)
    pitch_v = height + joint
    row = np.floor(v / pitch_v)
    if bond == "english":  # courses of stretchers and of headers (half-length units) alternate
        unit_length = np.where(row % 2 == 0, length, length / 2 - joint / 2)
        offset = np.where(row % 2 == 0, 0.0, length / 4)
    elif bond == "flemish":  # a stretcher and a header (half a brick) alternate within each course, each header
        return _flemish(u, v, row, length, height, joint)  # centred on the stretcher below it
    elif bond == "stack":
        unit_length, offset = np.full_like(u, length), np.zeros_like(u)
    else:  # running (stretcher) bond: each course shifted by half a unit
        unit_length, offset = np.full_like(u, length), (row % 2) * (length + joint) / 2
    pitch_u = unit_length + joint
    shifted = u + offset
    column = np.floor(shifted / pitch_u)
    return _laid(v, row, column, shifted - column * pitch_u, unit_length, height, joint)


def _laid(v: np.ndarray, row: np.ndarray, column: np.ndarray, local_u: np.ndarray, unit_length: np.ndarray,
          height: float, joint: float) -> Dict[str, np.ndarray]:
    """The per-pixel description of laid units, from each pixel's course (`row`), unit along it (`column`) and
    position in it (`local_u`): unit id, mortar or not, distances to the unit's left and top edge, unit size."""
    local_v = v - row * (height + joint)
    return {"id": row * 100003 + column, "mortar": (local_u >= unit_length) | (local_v >= height), "du": local_u,
            "dv": local_v, "length": unit_length, "height": np.full_like(v, height)}


def _flemish(u: np.ndarray, v: np.ndarray, row: np.ndarray, length: float, height: float, joint: float
             ) -> Dict[str, np.ndarray]:
    """Flemish bond: stretcher, joint, header, joint repeat along each course; alternate courses are shifted so
    that each header sits centred over a stretcher."""
    header = length / 2 - joint / 2
    period = length + header + 2 * joint
    shifted = u + (row % 2) * (length / 2 + joint + header / 2)
    pair = np.floor(shifted / period)
    within = shifted - pair * period
    is_header = within >= length + joint
    return _laid(v, row, 2 * pair + is_header, np.where(is_header, within - length - joint, within),
                 np.where(is_header, header, length), height, joint)


def _joint_shading(rng: np.random.Generator, units: Dict[str, np.ndarray], joint: float) -> np.ndarray:
    """Darkening of the joints: flush (mortar tone only), recessed (a shadow inside the joint under each unit's
    lower and right edge) or shadowed (a dark line under each unit, as in raking light)."""
    style = rng.choice(["flush", "recessed", "shadowed"])
    shade = np.zeros_like(units["du"])
    if style == "flush":
        return shade
    depth = rng.uniform(0.3, 0.75)
    below = units["dv"] - units["height"]  # 0 .. joint inside the bed joint under a unit
    right = units["du"] - units["length"]
    spread = max(joint * rng.uniform(0.4, 1.0), 0.8)
    shade = np.where(units["mortar"] & (below >= 0), depth * np.exp(-np.clip(below, 0, None) / spread), 0.0)
    if style == "recessed":
        inside = depth * 0.8 * np.exp(-np.clip(right, 0, None) / spread)
        shade = np.maximum(shade, np.where(units["mortar"] & (right >= 0), inside, 0.0))
    return shade.astype(np.float32)


def brick_wall(rng: np.random.Generator, size: int) -> Scene:
    """Bricks (or concrete blocks) in running, stack, English or Flemish bond, from one brick to a whole wall."""
    block = rng.random() < 0.25
    length = size * float(np.exp(rng.uniform(np.log(0.08), np.log(1.3))))
    height = length * (rng.uniform(0.45, 0.55) if block else rng.uniform(0.28, 0.36))
    joint = max(1.0, length * rng.uniform(0.03, 0.08))
    bond = rng.choice(["running", "stack"] if block else ["running", "running", "stack", "english", "flemish"])
    units = _units(rng, size, length, height, joint, bond)
    colour = _colour(rng, ((0.6, 0.6, 0.58), (0.5, 0.5, 0.5), (0.7, 0.68, 0.62)) if block else BRICK_COLOURS)
    tone = _cell_tone(rng, units["id"], rng.uniform(0.04, 0.15))
    texture = 1 + sum(rng.uniform(0.02, 0.07) * noise(rng, size, cells) for cells in (6, 24, 64))
    brick = colour[None, None] * (tone * texture)[..., None]
    mortar_tone = rng.uniform(0.35, 0.85)  # light lime mortar ... dark cement, sometimes darker than the bricks
    mortar = np.full(3, mortar_tone, np.float32) * (1 + 0.05 * noise(rng, size, 32))[..., None]
    image = np.where(units["mortar"][..., None], mortar, brick)
    image = image * (1 - _joint_shading(rng, units, joint))[..., None]
    image = image * (1 - 0.6 * aggregate(rng, size))[..., None]
    return image, np.ones((size, size), np.float32)


def tiles(rng: np.random.Generator, size: int) -> Scene:
    """Floor or wall tiles and paving stones: square or oblong units, thin grout, bevelled edges."""
    side = size * float(np.exp(rng.uniform(np.log(0.12), np.log(1.2))))
    aspect = rng.choice([1.0, 1.0, 0.5, 2 / 3])
    joint = max(1.0, side * rng.uniform(0.01, 0.06))
    units = _units(rng, size, side, side * aspect, joint, rng.choice(["stack", "running"]), tilt=0.1)
    paving = rng.random() < 0.5
    base = rng.uniform(0.3, 0.8)
    tone = _cell_tone(rng, units["id"], rng.uniform(0.02, 0.12))
    image = base * tone * (1 + rng.uniform(0.02, 0.08) * noise(rng, size, 48))
    if paving:  # bevelled or worn edges darken towards the joint
        edge = np.minimum.reduce([units["du"], units["length"] - units["du"], units["dv"],
                                  units["height"] - units["dv"]])
        image = image * (1 - rng.uniform(0.1, 0.35) * np.exp(-np.clip(edge, 0, None) / max(joint, 1.5)))
        image = image * (1 - aggregate(rng, size))
    grout = rng.uniform(0.15, 0.9)
    image = np.where(units["mortar"], grout * (1 + 0.05 * noise(rng, size, 32)), image)
    return image * (1 - _joint_shading(rng, units, joint)), np.ones((size, size), np.float32)


def stone_masonry(rng: np.random.Generator, size: int) -> Scene:
    """Random rubble or ashlar-like stone masonry: irregular stones (Voronoi cells) set in mortar."""
    stones = int(np.exp(rng.uniform(np.log(3), np.log(120))))
    seeds = rng.uniform(-0.1, 1.1, (stones, 2)) * size
    squash = rng.uniform(1.0, 1.6)  # distances count more vertically: stones a little wider than high, as laid
    seeds[:, 1] *= squash
    yy, xx = np.mgrid[0:size, 0:size]
    points = np.stack([xx.ravel(), yy.ravel() * squash], 1)
    distance, index = cKDTree(seeds).query(points, k=2)
    gap = (distance[:, 1] - distance[:, 0]).reshape(size, size)
    mean_stone = size / np.sqrt(stones)
    joint = max(1.0, mean_stone * rng.uniform(0.04, 0.12))
    tone = (1 + rng.normal(0, 0.12, stones).astype(np.float32))[index[:, 0]].reshape(size, size)
    colour = _colour(rng, ((0.6, 0.57, 0.52), (0.5, 0.48, 0.45), (0.7, 0.62, 0.5), (0.45, 0.42, 0.4)))
    texture = 1 + sum(rng.uniform(0.03, 0.08) * noise(rng, size, cells) for cells in (8, 32, 96))
    image = colour[None, None] * (tone * texture)[..., None]
    mortar = rng.uniform(0.3, 0.8) * (1 + 0.06 * noise(rng, size, 40))
    edge_shadow = rng.uniform(0.0, 0.5) * np.exp(-np.clip(gap - joint, 0, None) / max(joint, 1.0))
    image = image * (1 - edge_shadow)[..., None]
    image = np.where((gap < joint)[..., None], mortar[..., None] * np.ones(3, np.float32), image)
    return image, np.ones((size, size), np.float32)


def _straight(draw: ImageDraw.ImageDraw, size: int, at: float, angle: float, width: float, fill: int) -> None:
    """A straight line through (at, at) at `angle` across the whole photo."""
    dx, dy = np.cos(angle) * 2 * size, np.sin(angle) * 2 * size
    centre = (at, at) if abs(np.sin(angle)) < 0.5 else (at, size / 2)
    draw.line([(centre[0] - dx, centre[1] - dy), (centre[0] + dx, centre[1] + dy)], fill=fill,
              width=max(1, int(round(width))))


def concrete_joints(rng: np.random.Generator, size: int) -> Scene:
    """Concrete slabs with saw-cut, sealed or expansion joints: dead straight, in one or two directions, sometimes
    with chipped edges or bleeding sealant; the gaps between slabs, not cracks."""
    image = background(rng, size)
    layer = Image.new("L", (size, size), 0)
    draw = ImageDraw.Draw(layer)
    spacing = size * float(np.exp(rng.uniform(np.log(0.25), np.log(2.0))))
    angle = rng.normal(0, 0.05) + (np.pi / 2 if rng.random() < 0.5 else 0.0)
    kind = rng.choice(["saw", "sealed", "expansion"])
    width = {"saw": rng.uniform(1, 4), "sealed": rng.uniform(3, 10), "expansion": rng.uniform(6, 20)}[kind]
    darkness = int(rng.uniform(90, 200))
    for direction in ([angle, angle + np.pi / 2] if rng.random() < 0.5 else [angle]):
        start = rng.uniform(0, spacing)
        for at in np.arange(start, size, spacing):
            _straight(draw, size, at, direction, width, darkness)
    if kind != "saw" and rng.random() < 0.5:  # sealant bled over the edges, softened
        layer = layer.filter(ImageFilter.MaxFilter(3)).filter(ImageFilter.GaussianBlur(rng.uniform(1, 3)))
    joints = np.asarray(layer.filter(ImageFilter.GaussianBlur(0.6)), np.float32) / 255
    image = image * (1 - joints)
    if kind == "expansion" and rng.random() < 0.5:  # a rubber or metal strip inside the joint
        image = np.where(joints > 0.5, rng.uniform(0.05, 0.5), image)
    return image, (joints < 0.1).astype(np.float32)


def planking(rng: np.random.Generator, size: int) -> Scene:
    """Boards (decking, timber cladding, formwork prints on concrete): wood grain and dark gaps between boards."""
    board = size * float(np.exp(rng.uniform(np.log(0.08), np.log(0.8))))
    joint = max(1.0, board * rng.uniform(0.02, 0.1))
    units = _units(rng, size, size * rng.uniform(2, 8), board, joint, "running", tilt=0.05)
    grain = np.asarray(Image.fromarray(rng.uniform(-1, 1, (size // 2, 6)).astype(np.float32), mode="F")
                       .resize((size, size), Image.BICUBIC))  # stretched noise: long streaks
    colour = _colour(rng, ((0.55, 0.4, 0.25), (0.65, 0.5, 0.35), (0.6, 0.6, 0.58), (0.45, 0.35, 0.25)))
    tone = _cell_tone(rng, units["id"], 0.08) * (1 + rng.uniform(0.05, 0.15) * grain)
    image = colour[None, None] * tone[..., None]
    image = np.where(units["mortar"][..., None], rng.uniform(0.05, 0.3), image)
    return image * (1 - _joint_shading(rng, units, joint))[..., None], np.ones((size, size), np.float32)


def pavement_furniture(rng: np.random.Generator, size: int) -> Scene:
    """Asphalt or concrete with what survey photos show beside cracks: worn lane markings (both edges dark),
    road studs with their shadows, manhole covers and gratings, a kerb or verge edge, tyre marks."""
    image = background(rng, size)
    dark = Image.new("L", (size, size), 0)
    bright = Image.new("L", (size, size), 0)
    draw_dark, draw_bright = ImageDraw.Draw(dark), ImageDraw.Draw(bright)
    for _ in range(1 + rng.poisson(1.0)):
        feature = rng.choice(["marking", "stud", "cover", "kerb", "tyre"])
        x, y = rng.uniform(0, size, 2)
        if feature == "marking":  # a band with a dark seam at both edges, worn
            angle, half = rng.normal(0, 0.08) + rng.choice([0, np.pi / 2]), rng.uniform(0.03, 0.2) * size
            _straight(draw_dark, size, x, angle, 2 * half + rng.uniform(2, 6), int(rng.uniform(40, 120)))
            _straight(draw_bright, size, x, angle, 2 * half, int(rng.uniform(150, 250)))
        elif feature == "stud":  # a small raised block, bright face and dark outline
            r = rng.uniform(0.015, 0.08) * size
            draw_dark.rounded_rectangle([x - r - 2, y - r * 0.6 - 2, x + r + 2, y + r * 0.6 + 2], r * 0.3,
                                        fill=int(rng.uniform(100, 200)))
            draw_bright.rounded_rectangle([x - r, y - r * 0.6, x + r, y + r * 0.6], r * 0.3,
                                          fill=int(rng.uniform(120, 230)))
        elif feature == "cover":  # a round or square cover with a dark gap around it and a ribbed surface
            r = rng.uniform(0.1, 0.6) * size
            shape = draw_dark.ellipse if rng.random() < 0.6 else draw_dark.rectangle
            shape([x - r, y - r, x + r, y + r], outline=int(rng.uniform(120, 220)), width=int(rng.integers(2, 6)))
            for offset in np.arange(-r, r, rng.uniform(4, 12)):
                draw_dark.line([(x + offset, y - r * 0.8), (x + offset, y + r * 0.8)], fill=int(rng.uniform(30, 80)),
                               width=1)
        elif feature == "kerb":  # a step: shadowed edge line and a different surface beyond it
            angle = rng.normal(0, 0.1) + rng.choice([0, np.pi / 2])
            _straight(draw_dark, size, x, angle, rng.uniform(2, 8), int(rng.uniform(80, 200)))
        else:  # a tyre or skid mark: a long soft dark band
            angle = rng.uniform(0, np.pi)
            _straight(draw_dark, size, x, angle, rng.uniform(0.05, 0.2) * size, int(rng.uniform(20, 70)))
    darkening = np.asarray(dark.filter(ImageFilter.GaussianBlur(0.8)), np.float32) / 255
    paint = np.asarray(bright.filter(ImageFilter.GaussianBlur(0.8)), np.float32) / 255
    worn = np.clip(paint * (0.75 + 0.5 * noise(rng, size, 40)), 0, 1)
    image = image * (1 - darkening)
    image = image * (1 - worn) + rng.uniform(0.75, 0.95) * worn
    return image, ((darkening < 0.1) & (worn < 0.1)).astype(np.float32)


def stains(rng: np.random.Generator, size: int) -> Scene:
    """Crack-free concrete or asphalt with stains, damp patches, oil spots and efflorescence: dark shapes with
    ragged edges, some long and thin."""
    image = background(rng, size)
    field = sum(noise(rng, size, cells) * weight for cells, weight in ((4, 1.0), (12, 0.5), (40, 0.25)))
    level = rng.uniform(0.4, 0.9)
    stain = np.clip((field - level) * rng.uniform(3, 10), 0, 1)
    image = image * (1 - rng.uniform(0.2, 0.6) * stain)
    return image, np.ones((size, size), np.float32)


SCENES: Dict[str, Callable[[np.random.Generator, int], Scene]] = {
    "brick_wall": brick_wall, "tiles": tiles, "stone_masonry": stone_masonry, "concrete_joints": concrete_joints,
    "planking": planking, "pavement_furniture": pavement_furniture, "stains": stains}
