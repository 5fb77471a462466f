"""A crack's centreline: its skeleton traced into branches between end points and junctions, spurs pruned,
branches merged through junctions, polyline lengths and local widths along it."""
from typing import Dict, List, Sequence, Tuple

import numpy as np
from scipy import ndimage
from skimage.measure import approximate_polygon

SIMPLIFY_PX = 1.0  # polyline tolerance for lengths and centrelines
WIDTH_WINDOW = 3  # local widths average over this many centreline pixels on either side
MIN_WIDTH_PX = 1.0  # the thinnest crack a mask can draw, at any angle (a 1-px line at 45 degrees: 0.71 px^2 a px)
EIGHT = np.ones((3, 3), dtype=bool)
CROSS = ndimage.generate_binary_structure(2, 1) & ~np.eye(3, dtype=bool)[::-1] & ~np.eye(3, dtype=bool)
NEIGHBOURS = [(dy, dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1) if dy or dx]


def graph(skeleton: np.ndarray) -> Tuple[Dict[Tuple[int, int], List[Tuple[int, int]]], List[Tuple[int, int]]]:
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


def trace_branches(adjacency: Dict[Tuple[int, int], List[Tuple[int, int]]],
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


def polyline_length(path: Sequence[Tuple[int, int]]) -> Tuple[float, np.ndarray]:
    """Length of a pixel path simplified to within SIMPLIFY_PX, and the simplified (y, x) vertices."""
    coords = np.asarray(path, dtype=float)
    if len(coords) < 2:
        return 0.0, coords
    if _within_chord(coords):  # Douglas-Peucker's first step, where most branches of a noisy mask end
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


def local_widths(component: np.ndarray, branches: List[List[Tuple[int, int]]],
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
    scale = np.array([polyline_length(path)[0] for path in branches]) / np.maximum(walked, 1e-12)
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


def prune(branches: List[List[Tuple[int, int]]], distance: np.ndarray) -> List[List[Tuple[int, int]]]:
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
                length = polyline_length(path)[0]
                if length < 2 * distance[joints[0]]:
                    spurs.append((length, index))
        if not spurs:
            break
        if len(spurs) == len(branches):  # everything is short: keep the longest
            spurs.remove(max(spurs))
        dropped = {index for _, index in spurs}
        branches = merge_through([path for index, path in enumerate(branches) if index not in dropped])
    return branches


def _open_ends(branches: List[List[Tuple[int, int]]]) -> Dict[Tuple[int, int], List[int]]:
    """Point -> the branches with an end there (loops left out)."""
    ends: Dict[Tuple[int, int], List[int]] = {}
    for index, path in enumerate(branches):
        if path[0] != path[-1]:
            for end in (path[0], path[-1]):
                ends.setdefault(end, []).append(index)
    return ends


def merge_through(branches: List[List[Tuple[int, int]]]) -> List[List[Tuple[int, int]]]:
    """Join branches that meet at a point where only they meet (left over after a spur was pruned), also where a
    loop closed by such joins leaves two: first which branches join where (from a work list of such points,
    tracking each joined group's two ends), then each group walked into one path once, so the work is linear in
    the skeleton's pixels (joining one pair at a time and looking again grows with the square of the branches)."""
    ends = _open_ends(branches)
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


def to_edge(component: np.ndarray, end: Tuple[int, int], behind: Tuple[int, int], step: float = 0.25) -> float:
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
