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
low confidence, or the shape of a joint rather than a crack, dead straight over a long distance (saw cuts, slab
and mortar joints, the edges of lane markings and kerbs), more so along an image axis.
"""
from dataclasses import asdict, dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
from scipy import ndimage
from scipy.spatial import cKDTree
from skimage.measure import approximate_polygon
from skimage.morphology import skeletonize

MIN_AREA = 10  # px: smaller components are specks, not cracks
JOIN_GAP_PX = 5.0  # pieces of a crack cut by gaps up to this wide (a threshold's breaks, dirt) are one crack
JOIN_ANGLE_DEG = 35.0  # ... when each piece's end points at the other within this angle
JOIN_DIRECTION_PX = 6.0  # an end's direction: from the skeleton pixels of its piece within this distance
JOIN_MIN_SKELETON_PX = 4  # px of skeleton a piece needs to join: a direction to point in
JOIN_HALF_WIDTH_PX = 10  # px: half widths at the ends are looked up to this far (wider cracks join as if this wide)
MIN_CELL_PX = 25  # px: smaller holes enclosed by a crack are not cells of a network
# mm figures are written to 0.01 mm: finer than any pixel of a photo of a surface, and a measured width is
# uncertain by a whole pixel anyway (uncertainty_mm = one pixel, the least a figure can be off)
MM_DIGITS = 2
SIMPLIFY_PX = 1.0  # polyline tolerance for lengths and centrelines
WIDTH_WINDOW = 3  # local widths average over this many centreline pixels on either side
MIN_WIDTH_PX = 1.0  # the thinnest crack a mask can draw, at any angle (a 1-px line at 45 degrees: 0.71 px^2 a px)
EIGHT = np.ones((3, 3), dtype=bool)
CROSS = ndimage.generate_binary_structure(2, 1) & ~np.eye(3, dtype=bool)[::-1] & ~np.eye(3, dtype=bool)
NEIGHBOURS = [(dy, dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1) if dy or dx]
# The review rule. Cracks wander: over 100 px a real crack strays several px from a straight line, a joint or the
# edge of a marking less than 1.5 px (1% of its length for longer ones: a slight bow, or a lens's distortion).
REVIEW_CONFIDENCE = 0.7  # mean crack probability along the centreline below which a crack is flagged
STRAIGHT_MIN_LENGTH = 100.0  # px: shorter straight stretches are common in real cracks
STRAIGHT_DEVIATION = 0.01  # largest distance of the centreline from its principal axis, as a share of the length
AXIS_TOLERANCE_DEG = 5.0  # "along an image axis": within this many degrees of horizontal or vertical


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
        return reasons

    def row(self, mm_per_px: Optional[float] = None) -> Dict[str, float]:
        """The CSV fields: pixel values, and millimetres (areas in mm^2) when the scale is known."""
        values = {key: value for key, value in asdict(self).items() if key not in ("centreline", "widths", "bbox")}
        values.update(zip(("bbox_x", "bbox_y", "bbox_w", "bbox_h"), self.bbox))
        reasons = self.review_reasons
        values.update(review=int(bool(reasons)), review_reason="; ".join(reasons))
        if mm_per_px:
            for key in ("length", "mean_width", "median_width", "max_width"):
                values[f"{key}_mm"] = round(values[f"{key}_px"] * mm_per_px, MM_DIGITS)
            values["area_mm2"] = round(self.area_px * mm_per_px ** 2, MM_DIGITS)
            values["uncertainty_mm"] = round(mm_per_px, MM_DIGITS + 1)
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
    if _within_chord(coords):  # Douglas-Peucker's first step, where most branches of a noisy mask end (0.1 ms each)
        coords = coords[[0, -1]]
        return float(np.linalg.norm(coords[1] - coords[0])), coords
    simple = approximate_polygon(coords, tolerance=SIMPLIFY_PX)
    return float(np.linalg.norm(np.diff(simple, axis=0), axis=1).sum()), simple


def _within_chord(coords: np.ndarray) -> bool:
    """Whether every point lies within SIMPLIFY_PX of the segment between the first and the last, as scikit-image's
    `approximate_polygon` measures it (perpendicular where the point projects onto the segment, else to the nearer
    end): then it keeps the two ends only."""
    (r0, c0), (r1, c1) = coords[0], coords[-1]
    dr, dc = r1 - r0, c1 - c0
    inner = coords[1:-1]
    inside = (((inner[:, 0] - r0) * dr + (inner[:, 1] - c0) * dc > 0)
              & (-(inner[:, 0] - r1) * dr - (inner[:, 1] - c1) * dc > 0))
    angle = -np.arctan2(dr, dc)  # scikit-image's own arithmetic, so that points at the tolerance go the same way
    perpendicular = np.abs(inner[:, 0] * np.cos(angle) + inner[:, 1] * np.sin(angle)
                           - (c0 * np.sin(angle) + r0 * np.cos(angle)))
    to_ends = np.minimum(np.hypot(inner[:, 0] - r0, inner[:, 1] - c0), np.hypot(inner[:, 0] - r1, inner[:, 1] - c1))
    return bool(np.all(np.where(inside, perpendicular, to_ends) <= SIMPLIFY_PX))


def _local_widths(component: np.ndarray, branches: List[List[Tuple[int, int]]],
                  extensions: Dict[Tuple[int, int], float]) -> List[np.ndarray]:
    """Per branch, per pixel: the crack's local width, as the crack pixels nearest to the centreline over a few
    pixels around it (WIDTH_WINDOW either side, fewer near a branch's ends) divided by the centreline's length
    there (its steps scaled to the simplified polyline's length; free ends count their extension to the edge),
    and at least MIN_WIDTH_PX. Along a straight crack of width w this is w at any angle. All branches at once:
    a noisy mask has hundreds of thousands."""
    pixels = np.concatenate([np.asarray(path, dtype=np.intp).reshape(-1, 2) for path in branches])
    sizes = np.array([len(path) for path in branches])
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    centreline = np.zeros(component.shape, dtype=bool)
    centreline[pixels[:, 0], pixels[:, 1]] = True
    _, nearest = ndimage.distance_transform_edt(~centreline, return_indices=True)
    owners = nearest[0][component] * component.shape[1] + nearest[1][component]
    area = np.bincount(owners, minlength=component.size).reshape(component.shape).astype(float)
    # each step between two pixels of a branch gives half its length to either pixel
    steps = np.linalg.norm(np.diff(pixels, axis=0), axis=1)
    steps[starts[1:] - 1] = 0.0  # from the last pixel of one branch to the first of the next
    walked = np.add.reduceat(np.append(steps, 0.0), starts)
    # a staircase of 1 and sqrt(2) steps is longer than the line it draws
    scale = np.array([_polyline_length(path)[0] for path in branches]) / np.maximum(walked, 1e-12)
    steps *= np.repeat(scale, sizes)[:-1]
    length = np.zeros(component.shape)
    np.add.at(length, (pixels[:, 0], pixels[:, 1]), np.append(steps, 0.0) / 2 + np.insert(steps, 0, 0.0) / 2)
    for end, extra in extensions.items():
        length[end] += extra
    # sums over the window around each pixel, cut at its branch's ends
    index = np.arange(len(pixels))
    first, last = np.repeat(starts, sizes), np.repeat(starts + sizes - 1, sizes)
    lower, upper = np.maximum(index - WIDTH_WINDOW, first), np.minimum(index + WIDTH_WINDOW, last) + 1
    local_area, local_length = (np.concatenate([[0.0], np.cumsum(values[pixels[:, 0], pixels[:, 1]])])
                                for values in (area, length))
    widths = (local_area[upper] - local_area[lower]) / np.maximum(local_length[upper] - local_length[lower], 1.0)
    return np.split(np.maximum(widths, MIN_WIDTH_PX), starts[1:])


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
    """Join branches that meet at a point where only they meet (left over after a spur was pruned), also where a
    loop closed by such joins leaves two: first which branches join where (from a work list of such points,
    tracking each joined group's two ends), then each group walked into one path once, so the work is linear in
    the skeleton's pixels (joining one pair at a time and looking again took 10 min for a noisy 500 px mask)."""
    ends: Dict[Tuple[int, int], List[int]] = {}  # point -> the branches with an end there, loops left out
    for index, path in enumerate(branches):
        if path[0] != path[-1]:
            for end in (path[0], path[-1]):
                ends.setdefault(end, []).append(index)
    group = list(range(len(branches)))  # union-find over branch indices
    group_ends = {index: (path[0], path[-1]) for index, path in enumerate(branches)}

    def find(index: int) -> int:
        while group[index] != index:
            group[index] = group[group[index]]
            index = group[index]
        return index

    joins: Dict[Tuple[int, int], Tuple[int, int]] = {}
    pending = [point for point, indices in ends.items() if len(indices) == 2]
    while pending:
        point = pending.pop()
        if len(ends[point]) != 2 or point in joins:
            continue
        first, second = ends[point]
        a, b = find(first), find(second)
        joins[point] = (first, second)
        far = tuple(end for g in (a, b) for end in group_ends[g] if end != point)
        group[b] = a
        group_ends[a] = far
        if far[0] == far[1]:  # the joins closed a loop: it no longer ends where it closed
            ends[far[0]] = [index for index in ends[far[0]] if find(index) != a]
            if len(ends[far[0]]) == 2:
                pending.append(far[0])
    used = [False] * len(branches)

    def walk(index: int, start: Tuple[int, int]) -> List[Tuple[int, int]]:
        path = list(branches[index] if branches[index][0] == start else branches[index][::-1])
        used[index] = True
        while path[-1] in joins and index in joins[path[-1]]:
            first, second = joins[path[-1]]
            index = second if index == first else first
            if used[index]:  # around a closed chain, back at its start
                break
            step = branches[index]
            path.extend(step[1:] if step[0] == path[-1] else step[-2::-1])
            used[index] = True
        return path

    def joined(index: int, end: Tuple[int, int]) -> bool:
        return end in joins and index in joins[end]

    merged = []
    for index, path in enumerate(branches):  # groups from an end where they stop, then closed ones
        if not used[index] and not (joined(index, path[0]) and joined(index, path[-1])):
            merged.append(walk(index, path[-1] if joined(index, path[0]) else path[0]))
    for index, path in enumerate(branches):
        if not used[index]:
            merged.append(walk(index, path[0]))
    return merged


def measure_component(component: np.ndarray, offset: Tuple[int, int], crack_id: int,
                      probs: Optional[np.ndarray] = None) -> Crack:
    """Measure one crack given as a boolean mask (h, w) whose top-left lies at `offset` (y, x) in the image;
    `probs`, the crack probabilities of the same (h, w) window, gives its confidence."""
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
    pixels = [p for path in branches for p in path]
    centre = np.asarray(pixels, dtype=int) - 1  # in the unpadded window
    confidence = None if probs is None else round(float(np.mean(probs[centre[:, 0], centre[:, 1]])), 3)
    angle, deviation = _principal_axis(pixels)
    cells = _cells(component)
    return Crack(id=crack_id, length_px=round(length, 2), mean_width_px=round(max(area / length, MIN_WIDTH_PX), 3),
                 median_width_px=round(float(np.median(all_widths)), 3),
                 max_width_px=round(float(all_widths.max()), 3), area_px=area, orientation_deg=round(angle, 1),
                 bbox=(int(offset[1]), int(offset[0]), int(component.shape[1]), int(component.shape[0])),
                 centreline=lines, widths=line_widths, straightness_px=round(deviation, 2), confidence=confidence,
                 cells=len(cells), cell_area_px=float(np.median(cells)) if cells else 0.0)


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


def _cells(component: np.ndarray) -> List[int]:
    """Areas of the closed cells of a crack: background regions (4-connected) it encloses, of at least
    MIN_CELL_PX (smaller holes are gaps inside a wide crack's mask, not cells of a network)."""
    holes = ndimage.binary_fill_holes(component) & ~component
    labels, count = ndimage.label(holes)
    areas = np.bincount(labels.ravel(), minlength=count + 1)[1:]
    return [int(area) for area in areas if area >= MIN_CELL_PX]


def _principal_axis(pixels: Sequence[Tuple[int, int]]) -> Tuple[float, float]:
    """Direction of the principal axis of the pixels (degrees in [0, 180), 0 = horizontal, counter-clockwise) and
    the largest distance of a pixel from that axis (px): 0 for a dead-straight line."""
    coords = np.asarray(pixels, dtype=float)
    if len(coords) < 2:
        return 0.0, 0.0
    coords -= coords.mean(axis=0)
    _, vectors = np.linalg.eigh(coords.T @ coords)
    dy, dx = vectors[:, -1]
    return float(np.degrees(np.arctan2(-dy, dx)) % 180.0), float(np.abs(coords @ vectors[:, 0]).max())


def _joined(labels: np.ndarray, count: int, mask: np.ndarray, gap: float, skeleton: np.ndarray) -> np.ndarray:
    """Relabel `labels` so that pieces of one crack share a label: components whose free ends (skeleton end
    points) face each other across a gap of at most `gap` px, each end pointing at the other within JOIN_ANGLE_DEG
    (the gap is measured between the pieces' edges: the skeleton stops about half a width short of them)."""
    if gap <= 0 or count < 2:
        return labels
    neighbours = ndimage.convolve(skeleton.astype(np.uint8), EIGHT.astype(np.uint8), mode="constant") - 1
    ends = np.argwhere(skeleton & (neighbours == 1))
    # a piece needs a few skeleton pixels to have a direction: specks (and the noise of a noisy mask) never join
    sized = np.bincount(labels[skeleton], minlength=count + 1)
    ends = ends[sized[labels[ends[:, 0], ends[:, 1]]] >= JOIN_MIN_SKELETON_PX]
    if len(ends) < 2:
        return labels
    owner = labels[ends[:, 0], ends[:, 1]]
    pairs = cKDTree(ends).query_pairs(gap + 2 * JOIN_HALF_WIDTH_PX + 1, output_type="ndarray")
    pairs = pairs[owner[pairs[:, 0]] != owner[pairs[:, 1]]]
    if not len(pairs):
        return labels
    involved = np.unique(pairs)
    points = np.argwhere(skeleton)
    point_owner = labels[points[:, 0], points[:, 1]]
    near = cKDTree(points)
    directions, half_width = np.zeros((len(ends), 2)), np.zeros(len(ends))
    for end in involved:
        y, x = ends[end]
        around = [index for index in near.query_ball_point(ends[end], JOIN_DIRECTION_PX)
                  if point_owner[index] == owner[end]]
        step = ends[end] - points[around].mean(axis=0)
        directions[end] = step / (np.linalg.norm(step) or 1.0)
        top, left = max(y - JOIN_HALF_WIDTH_PX, 0), max(x - JOIN_HALF_WIDTH_PX, 0)
        window = mask[top:y + JOIN_HALF_WIDTH_PX + 1, left:x + JOIN_HALF_WIDTH_PX + 1]
        half_width[end] = min(float(ndimage.distance_transform_edt(window)[y - top, x - left]), JOIN_HALF_WIDTH_PX)
    first, second = pairs[:, 0], pairs[:, 1]
    across = (ends[second] - ends[first]).astype(float)
    distance = np.linalg.norm(across, axis=1)
    across /= np.maximum(distance, 1e-9)[:, None]
    facing = np.cos(np.radians(JOIN_ANGLE_DEG))
    joins = ((distance <= gap + half_width[first] + half_width[second] + 1)
             & ((directions[first] * across).sum(1) >= facing) & ((directions[second] * -across).sum(1) >= facing))
    parent = np.arange(count + 1)

    def find(index: int) -> int:
        while parent[index] != index:
            parent[index] = parent[parent[index]]
            index = parent[index]
        return index

    for a, b in pairs[joins]:
        parent[find(owner[a])] = find(owner[b])
    roots = np.array([find(index) for index in range(count + 1)])
    return roots[labels]


def _components(mask: np.ndarray, min_area: int, join_gap: float, skeleton: Optional[np.ndarray] = None
                ) -> List[Tuple[int, Tuple[slice, slice], np.ndarray]]:
    """(label, bounding slices, boolean window) of each crack candidate of at least `min_area` px: the connected
    components (8-connectivity), pieces within `join_gap` px of each other joined (`_joined`; `skeleton`, the
    mask's, if the caller has it), in reading order of their top-left pixel."""
    mask = np.asarray(mask, dtype=bool)
    labels, count = ndimage.label(mask, structure=EIGHT)
    if join_gap > 0 and count > 1:
        labels = _joined(labels, count, mask, join_gap, skeletonize(mask) if skeleton is None else skeleton)
    found = []
    for index, slices in enumerate(ndimage.find_objects(labels), start=1):
        if slices is None:
            continue
        component = labels[slices] == index
        if component.sum() >= min_area:
            found.append((index, slices, component))
    return sorted(found, key=lambda item: (item[1][0].start, item[1][1].start))


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
    for _, slices, component in _components(mask, min_area, join_gap):
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
    skeleton = skeletonize(mask)
    candidates = _components(mask, min_area, join_gap, skeleton)
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
        row["total_length_mm"] = round(row["total_length_px"] * mm_per_px, MM_DIGITS)
        row["max_width_mm"] = round(row["max_width_px"] * mm_per_px, MM_DIGITS)
    return row
