"""Measure cracks in binary masks: per crack its length, width, area and direction; per image the totals.

A crack is a connected component (8-connectivity) of at least `min_area` pixels. Its centreline is the
skeleton (scikit-image), traced into branches between end points and junctions; terminal branches shorter than
the crack's width at their junction are spurs of the skeletonisation and are pruned. Lengths are measured on
each branch's polyline simplified to within `SIMPLIFY_PX` of the pixels (so a straight crack at any angle
measures its Euclidean length, not the staircase of its pixels), plus, at each free end, the distance from the
skeleton's end to the crack's edge along its direction. The mean width is area / length; local widths (median,
max) are the crack pixels nearest to a stretch of the centreline (scipy's Euclidean distance transform) divided
by that stretch's length, so a straight crack of width w measures w at any angle. No width is below 1 px, the
thinnest line a mask can draw: a 1-px line at 45 degrees has 0.71 px of area per px of length, and measures 1.

Given the probability map a mask came from, each crack also gets a confidence, the mean crack probability along
its centreline, and a review flag for what an inspector should look at before filing it (`review_reasons`): a
low confidence, the shape of a joint rather than a crack, dead straight over a long distance (saw cuts, slab
and mortar joints, the edges of lane markings and kerbs), more so along an image axis, or a closed outline: a
centreline with no free end around one convex cell (an enclosed region of at least MIN_CELL_PX) at least as
large as the crack itself (the rim of a manhole cover, a road stud or a patch; a crack network encloses several
cells, and cracks end somewhere).
"""
import gc
from contextlib import contextmanager
from dataclasses import dataclass, field, fields
from typing import Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np
from scipy import ndimage
from skimage.measure import regionprops
from skimage.morphology import skeletonize

from crackseg.analysis.fragments import JOIN_GAP_PX, crack_candidates, skeleton_of
from crackseg.analysis.skeleton import EIGHT, MIN_WIDTH_PX, free_ends, graph, local_widths, prune, to_edge
from crackseg.analysis.units import MM_DIGITS, to_mm

MIN_AREA = 10  # px: smaller components are specks, not cracks
MIN_CELL_PX = 25  # px: smaller holes enclosed by a crack are not cells of a network
# The review rule. Cracks wander: over 100 px a real crack strays several px from a straight line, a joint or the
# edge of a marking less than 1.5 px (1% of its length for longer ones: a slight bow, or a lens's distortion).
REVIEW_CONFIDENCE = 0.7  # mean crack probability along the centreline below which a crack is flagged
STRAIGHT_MIN_LENGTH = 100.0  # px: shorter straight stretches are common in real cracks
STRAIGHT_DEVIATION = 0.01  # largest distance of the centreline from its principal axis, as a share of the length
AXIS_TOLERANCE_DEG = 5.0  # "along an image axis": within this many degrees of horizontal or vertical
# Closed outlines: the least solidity (area over the convex hull's) of the one region a closed outline encloses.
# Covers and studs are round or square (about 1), the loops of real cracks jagged (docs/MODEL.md, "Review flags")
LOOP_SOLIDITY = 0.9


@dataclass
class Crack:
    """One crack. Pixel units unless the name ends in _mm; bbox is (x, y, width, height) in px."""

    id: int
    length_px: float
    mean_width_px: float
    median_width_px: float
    max_width_px: float
    area_px: int
    orientation_deg: float  # dominant direction, 0 = horizontal, counter-clockwise, in [0, 180)
    bbox: Tuple[int, int, int, int]
    centreline: List[List[Tuple[float, float]]] = field(default_factory=list)  # polylines of (x, y) px
    widths: List[List[float]] = field(default_factory=list)  # per polyline vertex, px
    straightness_px: float = 0.0  # largest distance of a centreline pixel from their principal axis
    cells: int = 0  # closed cells: background regions of at least MIN_CELL_PX the crack encloses (a network)
    cell_area_px: float = 0.0  # their median area
    confidence: Optional[float] = None  # mean crack probability along the centreline, when probabilities are given
    closed_loop: bool = False  # a closed outline (see the module's docstring), not the shape of a crack

    @property
    def review_reasons(self) -> List[str]:
        """Why an inspector should look at this crack before filing it (empty: nothing stands out)."""
        reasons = []
        if self.confidence is not None and self.confidence < REVIEW_CONFIDENCE:
            reasons.append("low confidence")
        if (self.length_px >= STRAIGHT_MIN_LENGTH
                and self.straightness_px <= max(1.5, STRAIGHT_DEVIATION * self.length_px)):
            along_axis = min(self.orientation_deg % 90, 90 - self.orientation_deg % 90) <= AXIS_TOLERANCE_DEG
            reasons.append("straight along an image axis (joint-like)" if along_axis else "straight (joint-like)")
        if self.closed_loop:
            reasons.append("closed outline (cover, stud or patch rim)")
        return reasons

    def row(self, mm_per_px: Optional[float] = None) -> Dict[str, float]:
        """The CSV fields: pixel values, and millimetres (areas in mm^2) when the scale is known."""
        values = {item.name: getattr(self, item.name) for item in fields(self)
                  if item.name not in ("centreline", "widths", "bbox")}  # asdict would copy every polyline first
        values.update(zip(("bbox_x", "bbox_y", "bbox_w", "bbox_h"), self.bbox))
        reasons = self.review_reasons
        values.update(closed_loop=int(self.closed_loop), review=int(bool(reasons)), review_reason="; ".join(reasons))
        if mm_per_px:
            for key in ("length", "mean_width", "median_width", "max_width"):
                values[f"{key}_mm"] = to_mm(values[f"{key}_px"], mm_per_px)
            values["area_mm2"] = to_mm(self.area_px, mm_per_px, power=2)
            values["uncertainty_mm"] = round(mm_per_px, MM_DIGITS + 1)
        return values


def measure_component(component: np.ndarray, offset: Tuple[int, int], crack_id: int,
                      probs: Optional[np.ndarray] = None) -> Crack:
    """Measure one crack given as a boolean mask (h, w) whose top-left lies at `offset` (y, x) in the image;
    `probs`, the crack probabilities of the same (h, w) window, gives its confidence."""
    padded = np.pad(component, 1)
    distance = ndimage.distance_transform_edt(padded)
    points, edges = graph(skeletonize(padded))
    branches, keep, lengths = prune(points, edges, distance)
    # free ends: the skeleton stops about half a width short of the crack's end; follow its direction to the edge
    degree = np.bincount(edges[branches.edge_branch >= 0].ravel(), minlength=len(points))
    ends, behind = free_ends(branches, degree, distance)
    extensions = to_edge(padded, ends, behind)
    widths = local_widths(padded, branches, lengths, ends, extensions)
    length = max(float(lengths.sum() + extensions.sum()), 1.0)  # at least 1: a blob whose skeleton is one pixel
    vertices = branches.pixels - 1 + np.asarray(offset)  # in the image
    kept = np.flatnonzero(keep)  # the simplified polylines' vertices, cut into one list per branch
    bounds = np.concatenate([[0], np.searchsorted(kept, branches.starts[1:]), [len(kept)]]).tolist()
    with _collector_paused():
        xy = list(zip(vertices[kept, 1].astype(float).tolist(), vertices[kept, 0].astype(float).tolist()))
        rounded = np.round(widths[kept], 2).tolist()
        lines = [xy[a:b] for a, b in zip(bounds[:-1], bounds[1:])]
        line_widths = [rounded[a:b] for a, b in zip(bounds[:-1], bounds[1:])]
    area = int(component.sum())
    centre = branches.pixels - 1  # in the unpadded window
    confidence = None if probs is None else round(float(np.mean(probs[centre[:, 0], centre[:, 1]])), 3)
    angle, deviation = _principal_axis(branches.pixels)
    labels, cells = _cells(component)
    closed_loop = bool(not len(ends) and len(cells) == 1 and cells[0] >= area
                       and regionprops(labels)[0].solidity >= LOOP_SOLIDITY)
    return Crack(id=crack_id, length_px=round(length, 2), mean_width_px=round(max(area / length, MIN_WIDTH_PX), 3),
                 median_width_px=round(float(np.median(widths)), 3),
                 max_width_px=round(float(widths.max()), 3), area_px=area, orientation_deg=round(angle, 1),
                 bbox=(int(offset[1]), int(offset[0]), int(component.shape[1]), int(component.shape[0])),
                 centreline=lines, widths=line_widths, straightness_px=round(deviation, 2), confidence=confidence,
                 cells=len(cells), cell_area_px=float(np.median(cells)) if cells else 0.0, closed_loop=closed_loop)


@contextmanager
def _collector_paused() -> Iterator[None]:
    """Python's cycle collector paused, while a noisy mask's millions of vertex tuples (which hold no cycles) are
    built: otherwise their allocations set it off over and over, which takes twice as long as building them."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _cells(component: np.ndarray) -> Tuple[np.ndarray, List[int]]:
    """The closed cells of a crack, background regions (4-connected) it encloses, of at least MIN_CELL_PX
    (smaller holes are gaps inside a wide crack's mask, not cells of a network): their labels (1.., 0 elsewhere)
    and areas."""
    holes = ndimage.binary_fill_holes(component) & ~component
    labels, count = ndimage.label(holes)
    areas = np.bincount(labels.ravel(), minlength=count + 1)
    kept = areas >= MIN_CELL_PX
    kept[0] = False
    renumbered = np.zeros(count + 1, labels.dtype)  # the cells 1.., small holes and the crack 0: one array
    renumbered[kept] = np.arange(1, int(kept.sum()) + 1)
    return renumbered[labels], [int(area) for area in areas[kept]]


def _principal_axis(pixels: np.ndarray) -> Tuple[float, float]:
    """Direction of the principal axis of the pixels (degrees in [0, 180), 0 = horizontal, counter-clockwise) and
    the largest distance of a pixel from that axis (px): 0 for a dead-straight line."""
    coords = np.asarray(pixels, dtype=float)
    if len(coords) < 2:
        return 0.0, 0.0
    coords -= coords.mean(axis=0)
    _, vectors = np.linalg.eigh(coords.T @ coords)
    dy, dx = vectors[:, -1]
    return float(np.degrees(np.arctan2(-dy, dx)) % 180.0), float(np.abs(coords @ vectors[:, 0]).max())


def _is_crack(crack: Crack, min_length: float) -> bool:
    """Long enough, and longer than wide (a blob as wide as it is long is no crack)."""
    return crack.length_px >= min_length and crack.length_px >= crack.mean_width_px


def measure_mask(mask: np.ndarray, min_area: int = MIN_AREA, min_length: float = 0.0,
                 probs: Optional[np.ndarray] = None, join_gap: float = JOIN_GAP_PX) -> List[Crack]:
    """The cracks of a binary mask, numbered 1.. in reading order of their top-left pixel.

    Args:
        mask: (H, W) booleans (or 0/1), True where there is crack, e.g. `result.probs >= threshold` of a
            `Predictor`, or any segmentation tool's mask.
        min_area: components smaller than this many px are specks, not cracks.
        min_length: components whose centreline is shorter than this many px are not cracks either, nor are
            those shorter than their mean width.
        probs: (H, W) crack probabilities the mask came from: each crack's confidence (None without).
        join_gap: pieces whose ends face each other across at most this many px are one crack (0: never).

    Returns:
        One `Crack` per connected component (8-connectivity) or group of joined pieces: length along its
        centreline (the pieces' lengths, not the gaps), mean, median and max width, area, direction, bounding box,
        centreline polylines with local widths; pixel units (`Crack.row` adds mm for a known scale). An empty mask
        gives an empty list.

    Example:
        >>> mask = np.zeros((50, 200), bool); mask[20:24, 10:190] = True  # a bar 180 px long, 4 px wide
        >>> [(round(c.length_px), round(c.mean_width_px)) for c in measure_mask(mask)]
        [(180, 4)]
    """
    cracks = []
    for _, slices, component in crack_candidates(mask, min_area, join_gap):
        window = None if probs is None else np.asarray(probs)[slices]
        crack = measure_component(component, (slices[0].start, slices[1].start), len(cracks) + 1, window)
        if _is_crack(crack, min_length):
            cracks.append(crack)
    return cracks


def has_crack(mask: np.ndarray, min_area: int = MIN_AREA, min_length: float = 0.0,
              join_gap: float = JOIN_GAP_PX) -> bool:
    """Whether `measure_mask(mask, min_area, min_length, join_gap=join_gap)` would find a crack, measuring as few
    components as it can: components are tried from the widest span down, and the first that is a crack answers.
    (A span is no proof: a round blob 30 px across has a centreline of a few px.)"""
    mask = np.asarray(mask, dtype=bool)
    labels, count = ndimage.label(mask, structure=EIGHT)
    skeleton = skeleton_of(labels)
    candidates = crack_candidates(mask, min_area, join_gap, skeleton, (labels, count))
    if not candidates:
        return False
    # A bound that spares measuring most specks: a centreline is at most sqrt(2) px per skeleton pixel, plus its
    # free ends' run to the edge (at most the component's span each, two per skeleton end)
    span = {index: max(s.stop - s.start for s in slices) for index, slices, _ in candidates}
    possible = [(index, slices, component) for index, slices, component in candidates
                if np.sqrt(2) * np.count_nonzero(skeleton[slices] & component) + 2 * span[index] >= min_length]
    return any(_is_crack(measure_component(component, (slices[0].start, slices[1].start), 0), min_length)
               for _, slices, component in sorted(possible, key=lambda item: (-span[item[0]], item[0])))


def image_row(cracks: Sequence[Crack], shape: Tuple[int, int], mm_per_px: Optional[float] = None) -> Dict[str, float]:
    """Per image: number of cracks, total length, largest width and the cracked share of its area."""
    row = {"cracks": len(cracks), "total_length_px": round(sum(c.length_px for c in cracks), 2),
           "max_width_px": max((c.max_width_px for c in cracks), default=0.0),
           "cracked_area_share": round(sum(c.area_px for c in cracks) / float(shape[0] * shape[1]), 6)}
    if mm_per_px:
        row["total_length_mm"] = to_mm(row["total_length_px"], mm_per_px)
        row["max_width_mm"] = to_mm(row["max_width_px"], mm_per_px)
    return row
