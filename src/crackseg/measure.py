"""Measure cracks in binary masks: per crack its length, width, area and direction; per image the totals.

A crack is a connected component (8-connectivity) of at least `min_area` pixels. Its centreline is the
skeleton (scikit-image), traced into branches between end points and junctions; terminal branches shorter than
the crack's width at their junction are spurs of the skeletonisation and are pruned. Lengths are measured on
each branch's polyline simplified to within `SIMPLIFY_PX` of the pixels (so a straight crack at any angle
measures its Euclidean length, not the staircase of its pixels), plus, at each free end, the distance from the
skeleton's end to the crack's edge along its direction. The mean width is area / length; local widths (median,
max) are the crack pixels nearest to a stretch of the centreline (scipy's Euclidean distance transform) divided
by that stretch's length, so a straight crack of width w measures w at any angle, a 1-px line 1.
"""
from dataclasses import asdict, dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
from scipy import ndimage
from skimage.measure import approximate_polygon
from skimage.morphology import skeletonize

SIMPLIFY_PX = 1.0  # polyline tolerance for lengths and centrelines
WIDTH_WINDOW = 3  # local widths average over this many centreline pixels on either side
EIGHT = np.ones((3, 3), dtype=bool)
CROSS = ndimage.generate_binary_structure(2, 1) & ~np.eye(3, dtype=bool)[::-1] & ~np.eye(3, dtype=bool)
NEIGHBOURS = [(dy, dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1) if dy or dx]


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

    def row(self, mm_per_px: Optional[float] = None) -> Dict[str, float]:
        """The CSV fields: pixel values, and millimetres (areas in mm^2) when the scale is known."""
        values = {key: value for key, value in asdict(self).items() if key not in ("centreline", "widths", "bbox")}
        values.update(zip(("bbox_x", "bbox_y", "bbox_w", "bbox_h"), self.bbox))
        if mm_per_px:
            for key in ("length", "mean_width", "median_width", "max_width"):
                values[f"{key}_mm"] = values[f"{key}_px"] * mm_per_px
            values["area_mm2"] = self.area_px * mm_per_px ** 2
        return values


def _graph(skeleton: np.ndarray) -> Tuple[Dict[Tuple[int, int], List[Tuple[int, int]]], List[Tuple[int, int]]]:
    """Neighbour lists of the skeleton's pixels (8-connected, without the diagonal of a corner already joined
    orthogonally, so an L-bend is not a junction), and its nodes (end points and junctions)."""
    pixels = set(zip(*np.nonzero(skeleton)))
    adjacency: Dict[Tuple[int, int], List[Tuple[int, int]]] = {}
    for y, x in pixels:
        near = []
        for dy, dx in NEIGHBOURS:
            other = (y + dy, x + dx)
            if other not in pixels:
                continue
            if dy and dx and ((y + dy, x) in pixels or (y, x + dx) in pixels):
                continue  # the two are already joined through an orthogonal step
            near.append(other)
        adjacency[(y, x)] = near
    nodes = [pixel for pixel, near in adjacency.items() if len(near) != 2]
    return adjacency, nodes


def _branches(adjacency: Dict[Tuple[int, int], List[Tuple[int, int]]],
              nodes: List[Tuple[int, int]]) -> List[List[Tuple[int, int]]]:
    """Every path of pixels between two nodes (or around a loop without nodes), each edge walked once."""
    seen = set()
    branches = []
    node_set = set(nodes)

    def walk(start, step):
        path = [start, step]
        seen.update({(start, step), (step, start)})
        while path[-1] not in node_set:
            following = [p for p in adjacency[path[-1]] if (path[-1], p) not in seen]
            if not following:
                break
            seen.update({(path[-1], following[0]), (following[0], path[-1])})
            path.append(following[0])
        return path

    for node in nodes:
        if not adjacency[node]:
            branches.append([node])  # an isolated pixel
        for step in adjacency[node]:
            if (node, step) not in seen:
                branches.append(walk(node, step))
    for pixel, near in adjacency.items():  # loops that touch no node
        for step in near:
            if (pixel, step) not in seen:
                branches.append(walk(pixel, step))
    return branches


def _polyline_length(path: Sequence[Tuple[int, int]]) -> Tuple[float, np.ndarray]:
    """Length of a pixel path simplified to within SIMPLIFY_PX, and the simplified (y, x) vertices."""
    coords = np.asarray(path, dtype=float)
    if len(coords) < 2:
        return 0.0, coords
    simple = approximate_polygon(coords, tolerance=SIMPLIFY_PX)
    return float(np.linalg.norm(np.diff(simple, axis=0), axis=1).sum()), simple


def _local_widths(component: np.ndarray, branches: List[List[Tuple[int, int]]],
                  extensions: Dict[Tuple[int, int], float]) -> List[np.ndarray]:
    """Per branch, per pixel: the crack's local width, as the crack pixels nearest to the centreline over a few
    pixels around it divided by the centreline's length there (its steps scaled to the simplified polyline's
    length; free ends count their extension to the edge).
    Along a straight crack of width w this is w at any angle; its mean over a crack is its area / length."""
    centreline = np.zeros(component.shape, dtype=bool)
    for path in branches:
        centreline[tuple(np.transpose(path))] = True
    _, nearest = ndimage.distance_transform_edt(~centreline, return_indices=True)
    owners = nearest[0][component] * component.shape[1] + nearest[1][component]
    area = np.bincount(owners, minlength=component.size).reshape(component.shape).astype(float)
    length = np.zeros(component.shape)
    for path in branches:
        steps = np.linalg.norm(np.diff(np.asarray(path, dtype=float), axis=0), axis=1)
        if steps.sum():  # a staircase of 1 and sqrt(2) steps is longer than the line it draws
            steps *= _polyline_length(path)[0] / steps.sum()
        share = np.concatenate([[0.0], steps / 2]) + np.concatenate([steps / 2, [0.0]])
        np.add.at(length, tuple(np.transpose(path)), share)
    for end, extra in extensions.items():
        length[end] += extra
    widths = []
    for path in branches:
        index = tuple(np.transpose(path))
        window = np.ones(2 * WIDTH_WINDOW + 1)
        local_area = np.convolve(area[index], window, mode="same")
        local_length = np.convolve(length[index], window, mode="same")
        widths.append(local_area / np.maximum(local_length, 1.0))
    return widths


def _prune(branches: List[List[Tuple[int, int]]], distance: np.ndarray) -> List[List[Tuple[int, int]]]:
    """Drop terminal branches shorter than the crack's width at their junction (skeletonisation spurs; all of a
    round at once, as the two spurs towards the corners of a crack's blunt end are alike), until none is left; a
    crack that is a single branch is kept whole."""
    while len(branches) > 1:
        degree: Dict[Tuple[int, int], int] = {}
        for path in branches:
            for end in (path[0], path[-1]):
                degree[end] = degree.get(end, 0) + 1
        spurs = []
        for index, path in enumerate(branches):
            ends = [end for end in (path[0], path[-1]) if degree[end] == 1]
            joints = [end for end in (path[0], path[-1]) if degree[end] > 1]
            if len(ends) == 1 and joints:
                length = _polyline_length(path)[0]
                if length < 2 * distance[joints[0]]:
                    spurs.append((length, index))
        if not spurs:
            break
        if len(spurs) == len(branches):  # everything is short: keep the longest
            spurs.remove(max(spurs))
        dropped = {index for _, index in spurs}
        branches = _merge_through([path for index, path in enumerate(branches) if index not in dropped])
    return branches


def _merge_through(branches: List[List[Tuple[int, int]]]) -> List[List[Tuple[int, int]]]:
    """Join branches that meet at a point where only they meet (left over after a spur was pruned)."""
    while True:
        ends: Dict[Tuple[int, int], List[int]] = {}
        for index, path in enumerate(branches):
            if path[0] == path[-1]:
                continue  # a loop
            for end in (path[0], path[-1]):
                ends.setdefault(end, []).append(index)
        joint = next(((point, pair) for point, pair in ends.items() if len(pair) == 2 and pair[0] != pair[1]), None)
        if joint is None:
            return branches
        point, (first, second) = joint
        a = branches[first] if branches[first][-1] == point else branches[first][::-1]
        b = branches[second] if branches[second][0] == point else branches[second][::-1]
        branches = [path for index, path in enumerate(branches) if index not in (first, second)] + [a + b[1:]]


def measure_component(component: np.ndarray, offset: Tuple[int, int], crack_id: int) -> Crack:
    """Measure one crack given as a boolean mask (h, w) whose top-left lies at `offset` (y, x) in the image."""
    padded = np.pad(component, 1)
    distance = ndimage.distance_transform_edt(padded)
    skeleton = skeletonize(padded)
    adjacency, nodes = _graph(skeleton)
    branches = _prune(_branches(adjacency, nodes), distance)
    degree: Dict[Tuple[int, int], int] = {}
    for path in branches:
        for end in {path[0], path[-1]}:
            degree[end] = degree.get(end, 0) + (2 if path[0] == path[-1] == end and len(path) > 1 else 1)
    # free ends: the skeleton stops about half a width short of the crack's end; follow its direction to the edge
    extensions: Dict[Tuple[int, int], float] = {}
    for path in branches:
        for end, inward in ((path[0], path[1:]), (path[-1], path[-2::-1])):
            if degree.get(end) == 1 and inward:
                extensions[end] = _to_edge(padded, end, inward[min(len(inward), int(2 * distance[end]) + 2) - 1])
    widths = _local_widths(padded, branches, extensions)
    length = sum(extensions.values())
    lines, line_widths = [], []
    for path, path_widths in zip(branches, widths):
        branch_length, simple = _polyline_length(path)
        length += branch_length
        lines.append([(float(x) + offset[1] - 1, float(y) + offset[0] - 1) for y, x in simple])
        at = {pixel: width for pixel, width in zip(path, path_widths)}
        line_widths.append([round(float(at[(int(y), int(x))]), 2) for y, x in simple])
    length = max(length, 1.0)  # a blob whose skeleton is one pixel
    all_widths = np.concatenate(widths)
    area = int(component.sum())
    return Crack(id=crack_id, length_px=round(length, 2), mean_width_px=round(area / length, 3),
                 median_width_px=round(float(np.median(all_widths)), 3),
                 max_width_px=round(float(all_widths.max()), 3), area_px=area,
                 orientation_deg=round(_orientation([p for path in branches for p in path]), 1),
                 bbox=(int(offset[1]), int(offset[0]), int(component.shape[1]), int(component.shape[0])),
                 centreline=lines, widths=line_widths)


def _to_edge(component: np.ndarray, end: Tuple[int, int], behind: Tuple[int, int], step: float = 0.25) -> float:
    """Distance from the centre of pixel `end` to the component's edge, going on in the direction from `behind` to
    `end` (a skeleton's free end lies inside the crack, short of where the crack ends)."""
    direction = np.subtract(end, behind, dtype=float)
    norm = np.linalg.norm(direction)
    if not norm:
        return 0.5
    direction /= norm
    travelled = 0.0
    point = np.asarray(end, dtype=float)
    height, width = component.shape
    while True:
        point += step * direction
        y, x = int(round(point[0])), int(round(point[1]))
        if not (0 <= y < height and 0 <= x < width) or not component[y, x]:
            return travelled + step / 2
        travelled += step


def _orientation(pixels: Sequence[Tuple[int, int]]) -> float:
    """Direction of the principal axis of the pixels, degrees in [0, 180), 0 = horizontal, counter-clockwise."""
    coords = np.asarray(pixels, dtype=float)
    if len(coords) < 2:
        return 0.0
    coords -= coords.mean(axis=0)
    _, vectors = np.linalg.eigh(coords.T @ coords)
    dy, dx = vectors[:, -1]
    return float(np.degrees(np.arctan2(-dy, dx)) % 180.0)


def measure_mask(mask: np.ndarray, min_area: int = 10) -> List[Crack]:
    """The cracks of a binary mask, numbered 1.. in reading order of their top-left pixel.

    Args:
        mask: (H, W) booleans (or 0/1), True where there is crack, e.g. `result.probs >= threshold` of a
            `Predictor`, or any segmentation tool's mask.
        min_area: components smaller than this many px are specks, not cracks.

    Returns:
        One `Crack` per connected component (8-connectivity): length along its centreline, mean, median and max
        width, area, direction, bounding box, centreline polylines with local widths; pixel units (`Crack.row`
        adds mm for a known scale). An empty mask gives an empty list.

    Example:
        >>> mask = np.zeros((50, 200), bool); mask[20:24, 10:190] = True  # a bar 180 px long, 4 px wide
        >>> [(round(c.length_px), round(c.mean_width_px)) for c in measure_mask(mask)]
        [(180, 4)]
    """
    labels, count = ndimage.label(np.asarray(mask, dtype=bool), structure=EIGHT)
    cracks = []
    for index, slices in enumerate(ndimage.find_objects(labels), start=1):
        if slices is None:
            continue
        component = labels[slices] == index
        if component.sum() >= min_area:
            cracks.append(measure_component(component, (slices[0].start, slices[1].start), len(cracks) + 1))
    return cracks


def image_row(cracks: Sequence[Crack], shape: Tuple[int, int], mm_per_px: Optional[float] = None) -> Dict[str, float]:
    """Per image: number of cracks, total length, largest width and the cracked share of its area."""
    row = {"cracks": len(cracks), "total_length_px": round(sum(c.length_px for c in cracks), 2),
           "max_width_px": max((c.max_width_px for c in cracks), default=0.0),
           "cracked_area_share": round(sum(c.area_px for c in cracks) / float(shape[0] * shape[1]), 6)}
    if mm_per_px:
        row["total_length_mm"] = row["total_length_px"] * mm_per_px
        row["max_width_mm"] = row["max_width_px"] * mm_per_px
    return row
