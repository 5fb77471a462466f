"""Crack candidates of a mask: its connected components, with the pieces of one crack (cut by a threshold's
breaks or dirt) joined where their free ends face each other across a small gap."""
from typing import List, Optional, Tuple

import numpy as np
from scipy import ndimage
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components
from scipy.spatial import cKDTree
from skimage.morphology import skeletonize

from crackseg.analysis.skeleton import EIGHT

JOIN_GAP_PX = 5.0  # pieces of a crack cut by gaps up to this wide (a threshold's breaks, dirt) are one crack
JOIN_ANGLE_DEG = 35.0  # ... when each piece's end points at the other within this angle
JOIN_DIRECTION_PX = 6.0  # an end's direction: from the skeleton pixels of its piece within this distance
JOIN_MIN_SKELETON_PX = 4  # px of skeleton a piece needs to join: a direction to point in
JOIN_HALF_WIDTH_PX = 10  # px: half widths at the ends are looked up to this far (wider cracks join as if this wide)


def join_pieces(labels: np.ndarray, count: int, mask: np.ndarray, gap: float, skeleton: np.ndarray) -> np.ndarray:
    """Relabel `labels` so that pieces of one crack share a label: components whose free ends (skeleton end
    points) face each other across a gap of at most `gap` px, each end pointing at the other within JOIN_ANGLE_DEG
    (the gap is measured between the pieces' edges: the skeleton stops about half a width short of them)."""
    if gap <= 0 or count < 2:
        return labels
    points = np.argwhere(skeleton)
    point_owner = labels[points[:, 0], points[:, 1]]
    ends = points[neighbour_counts(skeleton, points) == 1]
    # a piece needs a few skeleton pixels to have a direction: specks (and the noise of a noisy mask) never join
    sized = np.bincount(point_owner, minlength=count + 1)
    ends = ends[sized[labels[ends[:, 0], ends[:, 1]]] >= JOIN_MIN_SKELETON_PX]
    if len(ends) < 2:
        return labels
    owner = labels[ends[:, 0], ends[:, 1]]
    half_width = half_widths(mask, ends)
    pairs = cKDTree(ends).query_pairs(gap + 2 * half_width.max() + 1, output_type="ndarray")
    pairs = pairs[owner[pairs[:, 0]] != owner[pairs[:, 1]]]
    if not len(pairs):
        return labels
    involved = np.unique(pairs)
    # each end's direction: from the mean of its piece's skeleton pixels within JOIN_DIRECTION_PX to the end
    near = cKDTree(points).query_ball_point(ends[involved], JOIN_DIRECTION_PX)
    sizes = np.array([len(found) for found in near])
    around = np.concatenate(near).astype(np.intp)
    end_of = np.repeat(involved, sizes)
    own = point_owner[around] == owner[end_of]
    around, end_of = around[own], end_of[own]
    mean = np.stack([np.bincount(end_of, weights=points[around, axis], minlength=len(ends)) for axis in (0, 1)],
                    axis=1) / np.maximum(np.bincount(end_of, minlength=len(ends)), 1)[:, None]
    steps = ends - mean
    norms = np.linalg.norm(steps, axis=1)
    directions = steps / np.where(norms > 0, norms, 1.0)[:, None]
    first, second = pairs[:, 0], pairs[:, 1]
    across = (ends[second] - ends[first]).astype(float)
    distance = np.linalg.norm(across, axis=1)
    across /= np.maximum(distance, 1e-9)[:, None]
    facing = np.cos(np.radians(JOIN_ANGLE_DEG))
    joins = ((distance <= gap + half_width[first] + half_width[second] + 1)
             & ((directions[first] * across).sum(1) >= facing) & ((directions[second] * -across).sum(1) >= facing))
    joined = pairs[joins]
    graph = coo_matrix((np.ones(len(joined)), (owner[joined[:, 0]], owner[joined[:, 1]])), shape=(count + 1, count + 1))
    _, component = connected_components(graph, directed=False)  # pieces joined through any chain of joins
    roots = component + 1
    roots[0] = 0  # the background (never joined: its component holds it alone)
    return roots[labels]


def neighbour_counts(skeleton: np.ndarray, points: np.ndarray) -> np.ndarray:
    """How many of the 8 neighbours of each of `points` (skeleton pixels, (N, 2) rows and columns) are skeleton
    pixels, looked up at the points alone: the cost of the skeleton, not of the image."""
    padded = np.pad(skeleton, 1)
    rows, cols = points[:, 0] + 1, points[:, 1] + 1
    return sum(padded[rows + dy, cols + dx].astype(np.intp)
               for dy in (-1, 0, 1) for dx in (-1, 0, 1) if dy or dx)


def skeleton_of(labels: np.ndarray) -> np.ndarray:
    """`skeletonize` of the mask `labels > 0` (labels of its 8-connected components, as `ndimage.label` gives
    them), thinned component by component in its bounding window with a 1 px margin: the same pixels, since
    thinning looks at 8-neighbours only and two components never touch, at the cost of the components' windows
    instead of the whole image (a 1920x1080 survey photo's mask is mostly background)."""
    skeleton = np.zeros(labels.shape, bool)
    height, width = labels.shape
    for index, (rows, cols) in enumerate(ndimage.find_objects(labels), start=1):
        if rows is None:
            continue
        window = (slice(max(rows.start - 1, 0), min(rows.stop + 1, height)),
                  slice(max(cols.start - 1, 0), min(cols.stop + 1, width)))
        skeleton[window] |= skeletonize(labels[window] == index)
    return skeleton


def half_widths(mask: np.ndarray, points: np.ndarray, chunk: int = 4096) -> np.ndarray:
    """Half the crack's width at each point: its distance to the nearest background pixel, looked for up to
    JOIN_HALF_WIDTH_PX away (and at most that), all points at once."""
    reach = JOIN_HALF_WIDTH_PX
    dy, dx = np.mgrid[-reach:reach + 1, -reach:reach + 1].reshape(2, -1)
    padded = np.pad(mask, reach, constant_values=True)  # beyond the image is no background
    found = np.full(len(points), float(reach))
    for start in range(0, len(points), chunk):
        y, x = points[start:start + chunk, 0, None] + reach + dy, points[start:start + chunk, 1, None] + reach + dx
        distance = np.where(padded[y, x], np.inf, np.hypot(dy, dx))
        found[start:start + chunk] = np.minimum(distance.min(axis=1), reach)
    return found


def crack_candidates(mask: np.ndarray, min_area: int, join_gap: float, skeleton: Optional[np.ndarray] = None,
                     labelled: Optional[Tuple[np.ndarray, int]] = None
                     ) -> List[Tuple[int, Tuple[slice, slice], np.ndarray]]:
    """(label, bounding slices, boolean window) of each crack candidate of at least `min_area` px: the connected
    components (8-connectivity), pieces within `join_gap` px of each other joined (`join_pieces`), in reading
    order of their top-left pixel. `skeleton` (the mask's) and `labelled` (its `ndimage.label` with 8-connectivity
    and the count) spare computing them again where the caller has them."""
    mask = np.asarray(mask, dtype=bool)
    labels, count = ndimage.label(mask, structure=EIGHT) if labelled is None else labelled
    if join_gap > 0 and count > 1:
        labels = join_pieces(labels, count, mask, join_gap, skeleton_of(labels) if skeleton is None else skeleton)
    found = []
    for index, slices in enumerate(ndimage.find_objects(labels), start=1):
        if slices is None:
            continue
        component = labels[slices] == index
        if component.sum() >= min_area:
            found.append((index, slices, component))
    return sorted(found, key=lambda item: (item[1][0].start, item[1][1].start))
