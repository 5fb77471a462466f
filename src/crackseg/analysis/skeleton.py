"""A crack's centreline: its skeleton traced into branches between end points and junctions, spurs pruned (the
branches that then meet only each other joined), polyline lengths and local widths along it.

Everything works on arrays of all branches at once (a noisy mask's skeleton has hundreds of thousands of
branches, most of them 2-4 px long): the skeleton is a graph of pixels, its branches are the connected
components of its edges chained through pixels with two neighbours (scipy's `connected_components`), walked in
order by one depth-first pass (`depth_first_order`), and simplified by Douglas-Peucker on every branch in lockstep.
"""
from dataclasses import dataclass
from typing import Optional

import numpy as np
from scipy import ndimage
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components, depth_first_order

SIMPLIFY_PX = 1.0  # polyline tolerance for lengths and centrelines
WIDTH_WINDOW = 3  # local widths average over this many centreline pixels on either side
MIN_WIDTH_PX = 1.0  # the thinnest crack a mask can draw, at any angle (a 1-px line at 45 degrees: 0.71 px^2 a px)
EDGE_STEP_PX = 0.25  # a free end's run to the crack's edge is found in steps of this length
EIGHT = np.ones((3, 3), dtype=bool)
# a pixel's later neighbours in reading order; each undirected step of the skeleton is found once
FORWARD = ((0, 1), (1, -1), (1, 0), (1, 1))


@dataclass
class Branches:
    """Paths of skeleton pixels, concatenated: branch i is `pixels[starts[i]:starts[i] + sizes[i]]`, (y, x) rows,
    from one end to the other (a loop ends where it starts). `edge_branch` gives each edge of the graph it was
    traced from its branch (-1 for an edge left out)."""

    pixels: np.ndarray  # (n, 2) intp
    ids: np.ndarray  # (n,) the pixels' indices among the skeleton's points
    starts: np.ndarray
    sizes: np.ndarray
    edge_branch: np.ndarray

    @property
    def count(self) -> int:
        return len(self.starts)

    @property
    def first(self) -> np.ndarray:
        return self.ids[self.starts]

    @property
    def last(self) -> np.ndarray:
        return self.ids[self.starts + self.sizes - 1]

    def of_pixel(self) -> np.ndarray:
        """The branch of each of `pixels`."""
        return np.repeat(np.arange(self.count), self.sizes)

    def split(self, values: np.ndarray) -> list:
        """`values`, one per pixel, as one array per branch."""
        return np.split(values, self.starts[1:])


def graph(skeleton: np.ndarray):
    """The skeleton's pixels ((n, 2) rows in reading order) and its edges ((m, 2) indices into them): 8-connected
    steps, without the diagonal of a corner already joined orthogonally, so an L-bend is not a junction."""
    points = np.argwhere(skeleton)
    index = np.full((skeleton.shape[0] + 2, skeleton.shape[1] + 2), -1, dtype=np.intp)
    index[points[:, 0] + 1, points[:, 1] + 1] = np.arange(len(points))
    y, x = points[:, 0] + 1, points[:, 1] + 1
    edges = []
    for dy, dx in FORWARD:
        other = index[y + dy, x + dx]
        linked = other >= 0
        if dy and dx:  # the two are already joined through an orthogonal step
            linked &= (index[y + dy, x] < 0) & (index[y, x + dx] < 0)
        edges.append(np.stack([np.flatnonzero(linked), other[linked]], axis=1))
    return points, np.concatenate(edges)


def trace(points: np.ndarray, edges: np.ndarray, alive: Optional[np.ndarray] = None,
          isolated: Optional[np.ndarray] = None) -> Branches:
    """Every path of pixels between two nodes (end points and junctions: pixels without exactly two neighbours), or
    around a loop without nodes, over the edges where `alive` (all by default), each edge walked once; and each
    of the `isolated` points (boolean, default: those without an edge) as a branch of its own."""
    alive = np.ones(len(edges), dtype=bool) if alive is None else alive
    kept = np.flatnonzero(alive)
    a, b = edges[kept, 0], edges[kept, 1]
    count = len(kept)
    degree = np.bincount(np.concatenate([a, b]), minlength=len(points))
    if isolated is None:
        isolated = degree == 0
    if not count:
        lone = np.flatnonzero(isolated)
        return Branches(points[lone], lone, np.arange(len(lone)), np.ones(len(lone), dtype=np.intp),
                        np.full(len(edges), -1, dtype=np.intp))
    # the edge graph: two edges are linked where they meet at a pixel with two neighbours (its lowest and highest)
    ends, edge = np.concatenate([a, b]), np.tile(np.arange(count), 2)
    first_edge, last_edge = np.full(len(points), count), np.full(len(points), -1)
    np.minimum.at(first_edge, ends, edge)
    np.maximum.at(last_edge, ends, edge)
    two = np.flatnonzero(degree == 2)
    through = np.stack([first_edge[two], last_edge[two]], axis=1)
    linked = coo_matrix((np.ones(len(through)), (through[:, 0], through[:, 1])), shape=(count, count))
    _, label = connected_components(linked, directed=False)
    # each chain runs from its lowest edge that touches a node to its highest (a loop without nodes is cut open
    # between its lowest edge and a neighbour of it); the chains, end to end in label order, are one path to walk
    at_node = np.flatnonzero((degree[a] != 2) | (degree[b] != 2))
    chains = label.max() + 1
    entry, exit_ = np.full(chains, count), np.full(chains, -1)
    np.minimum.at(entry, label[at_node], at_node)
    np.maximum.at(exit_, label[at_node], at_node)
    loops = np.flatnonzero(exit_ < 0)
    if len(loops):
        in_loop = np.flatnonzero(exit_[label] < 0)
        np.minimum.at(entry, label[in_loop], in_loop)
        pair_chain = label[through[:, 0]]
        cut = np.flatnonzero((exit_[pair_chain] < 0) & ((through[:, 0] == entry[pair_chain])
                                                        | (through[:, 1] == entry[pair_chain])))
        cut = cut[np.unique(pair_chain[cut], return_index=True)[1]]
        exit_[pair_chain[cut]] = through[cut].sum(axis=1) - entry[pair_chain[cut]]
        through = np.delete(through, cut, axis=0)
    links = np.concatenate([through, np.stack([exit_[:-1], entry[1:]], axis=1)])
    path = coo_matrix((np.ones(len(links)), (links[:, 0], links[:, 1])), shape=(count, count))
    walk = depth_first_order(path.tocsr(), entry[0], directed=False, return_predecessors=False)
    # the walk visits each chain whole, edge after edge, before the next
    a, b, chain = a[walk], b[walk], label[walk]
    new = np.ones(len(walk), dtype=bool)
    new[1:] = chain[1:] != chain[:-1]
    block = np.cumsum(new) - 1
    first = np.flatnonzero(new)
    same = ~np.append(new[1:], True)  # the next edge is of the same chain
    shared = np.where((a[:-1] == a[1:]) | (a[:-1] == b[1:]), a[:-1], b[:-1])
    shared = np.append(shared, -1)
    start = np.where(same[first], a[first] + b[first] - shared[first], a[first])
    before = np.where(new, start[block], np.roll(shared, 1))
    far = np.where(same, shared, a + b - before)
    ids = np.empty(len(walk) + len(first), dtype=np.intp)
    ids[first + np.arange(len(first))] = start
    ids[np.arange(len(walk)) + block + 1] = far
    sizes = np.bincount(block, minlength=len(first)) + 1
    lone = np.flatnonzero(isolated)
    ids = np.concatenate([ids, lone])
    sizes = np.concatenate([sizes, np.ones(len(lone), dtype=sizes.dtype)]).astype(np.intp)
    edge_branch = np.full(len(edges), -1, dtype=np.intp)
    edge_branch[kept[walk]] = block
    return Branches(points[ids], ids, np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.intp), sizes,
                    edge_branch)


def simplify(coords: np.ndarray, starts: np.ndarray, sizes: np.ndarray, tolerance: float = SIMPLIFY_PX) -> np.ndarray:
    """Douglas-Peucker on every polyline at once: which of the concatenated (y, x) `coords` each polyline (from
    `starts`, `sizes` points long) keeps. The arithmetic is scikit-image's `approximate_polygon`'s (perpendicular
    distance where a point projects onto the segment, else to the nearer end; the farthest point first), so each
    polyline keeps the same vertices as it would alone."""
    keep = np.zeros(len(coords), dtype=bool)
    keep[starts] = keep[starts + sizes - 1] = True
    lower, upper = starts[sizes > 2], (starts + sizes - 1)[sizes > 2]
    while len(lower):
        inner = upper - lower - 1
        segment = np.repeat(np.arange(len(lower)), inner)
        offsets = np.concatenate([[0], np.cumsum(inner)[:-1]])
        point = np.arange(len(segment)) - offsets[segment] + lower[segment] + 1
        (r0, c0), (r1, c1) = coords[lower].T, coords[upper].T
        dr, dc = r1 - r0, c1 - c0
        angle = -np.arctan2(dr, dc)
        cos, sin = np.cos(angle)[segment], np.sin(angle)[segment]
        along = c0 * np.sin(angle) + r0 * np.cos(angle)
        r, c = coords[point, 0], coords[point, 1]
        dr0, dc0 = r - r0[segment], c - c0[segment]
        dr1, dc1 = r - r1[segment], c - c1[segment]
        inside = (dr0 * dr[segment] + dc0 * dc[segment] > 0) & (-dr1 * dr[segment] - dc1 * dc[segment] > 0)
        distance = np.where(inside, np.abs(r * cos + c * sin - along[segment]),
                            np.minimum(np.sqrt(dc0 ** 2 + dr0 ** 2), np.sqrt(dc1 ** 2 + dr1 ** 2)))
        farthest = np.maximum.reduceat(distance, offsets)
        split = farthest > tolerance
        at_max = np.flatnonzero(distance == farthest[segment])
        first_max = at_max[np.unique(segment[at_max], return_index=True)[1]]  # argmax: the first farthest point
        cut = point[first_max][split]
        keep[cut] = True
        lower, upper = np.concatenate([lower[split], cut]), np.concatenate([cut, upper[split]])
        wide = upper - lower > 1
        lower, upper = lower[wide], upper[wide]
    return keep


def lengths(branches: Branches, keep: np.ndarray) -> np.ndarray:
    """Each branch's length along its simplified polyline (`keep`, from `simplify`)."""
    vertices = np.flatnonzero(keep)
    owner = branches.of_pixel()[vertices]
    steps = np.linalg.norm(np.diff(branches.pixels[vertices].astype(float), axis=0), axis=1)
    within = owner[1:] == owner[:-1]
    return np.bincount(owner[1:][within], weights=steps[within], minlength=branches.count)


def prune(points: np.ndarray, edges: np.ndarray, distance: np.ndarray):
    """Drop terminal branches shorter than the crack's width at their junction (skeletonisation spurs; all of a
    round at once, as the two spurs towards the corners of a crack's blunt end are alike), until none is left; a
    crack that is a single branch is kept whole. Branches that then meet only each other are one branch. Returns
    the branches and their simplified polylines (`simplify`'s mask) and lengths."""
    alive = np.ones(len(edges), dtype=bool)
    isolated = np.bincount(edges.ravel(), minlength=len(points)) == 0
    while True:
        branches = trace(points, edges, alive, isolated)
        keep = simplify(branches.pixels.astype(float), branches.starts, branches.sizes)
        length = lengths(branches, keep)
        if branches.count <= 1:
            return branches, keep, length
        degree = np.bincount(edges[alive].ravel(), minlength=len(points))
        first, last = degree[branches.first], degree[branches.last]
        joint = np.where(first > 1, branches.first, branches.last)
        spur = (((first == 1) & (last > 1)) | ((last == 1) & (first > 1)))
        spur &= length < 2 * distance[points[joint, 0], points[joint, 1]]
        if not spur.any():
            return branches, keep, length
        if spur.all():  # everything is short: keep the longest (the last of equals)
            spur[len(length) - 1 - np.argmax(length[::-1])] = False
        alive[alive] = ~spur[branches.edge_branch[alive]]


def free_ends(branches: Branches, degree: np.ndarray, distance: np.ndarray):
    """The branch ends where the centreline stops (one neighbour), each with the pixel a little way back along
    its branch (about a crack's width: the end's direction): (ends, behind), (k, 2) arrays."""
    found, behind = [], []
    for end, step in ((branches.starts, 1), (branches.starts + branches.sizes - 1, -1)):
        pixels = branches.pixels[end]
        free = (degree[branches.ids[end]] == 1) & (branches.sizes > 1)
        back = np.minimum(branches.sizes - 1, (2 * distance[pixels[:, 0], pixels[:, 1]]).astype(int) + 2)
        found.append(pixels[free])
        behind.append(branches.pixels[(end + step * back)[free]])
    return np.concatenate(found), np.concatenate(behind)


def to_edge(component: np.ndarray, ends: np.ndarray, behind: np.ndarray) -> np.ndarray:
    """Distance from the centre of each end pixel to the component's edge, going on in the direction from `behind`
    to it (a skeleton's free end lies inside the crack, short of where the crack ends); all ends at once."""
    direction = (ends - behind).astype(float)
    norm = np.linalg.norm(direction, axis=1)
    result = np.full(len(ends), 0.5)
    moving = np.flatnonzero(norm > 0)
    direction = direction[moving] / norm[moving, None]
    point = ends[moving].astype(float)
    travelled = np.zeros(len(moving))
    height, width = component.shape
    while len(moving):
        point += EDGE_STEP_PX * direction
        y, x = np.round(point[:, 0]).astype(int), np.round(point[:, 1]).astype(int)
        inside = (y >= 0) & (y < height) & (x >= 0) & (x < width)
        inside[inside] = component[y[inside], x[inside]]
        result[moving[~inside]] = travelled[~inside] + EDGE_STEP_PX / 2
        moving, point, direction, travelled = moving[inside], point[inside], direction[inside], travelled[inside]
        travelled += EDGE_STEP_PX
    return result


def local_widths(component: np.ndarray, branches: Branches, length: np.ndarray, ends: np.ndarray,
                 extensions: np.ndarray) -> np.ndarray:
    """Per centreline pixel (of `branches.pixels`): the crack's local width, as the crack pixels nearest to the
    centreline over a few pixels around it (WIDTH_WINDOW either side, fewer near a branch's ends) divided by the
    centreline's length there (its steps scaled to the simplified polyline's `length`; the free `ends` count their
    `extensions` to the edge), and at least MIN_WIDTH_PX. Along a straight crack of width w this is w at any angle."""
    pixels, starts, sizes = branches.pixels, branches.starts, branches.sizes
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
    steps *= np.repeat(length / np.maximum(walked, 1e-12), sizes)[:-1]
    along = np.zeros(component.shape)
    np.add.at(along, (pixels[:, 0], pixels[:, 1]), np.append(steps, 0.0) / 2 + np.insert(steps, 0, 0.0) / 2)
    np.add.at(along, (ends[:, 0], ends[:, 1]), extensions)
    # sums over the window around each pixel, cut at its branch's ends
    index = np.arange(len(pixels))
    first, last = np.repeat(starts, sizes), np.repeat(starts + sizes - 1, sizes)
    lower, upper = np.maximum(index - WIDTH_WINDOW, first), np.minimum(index + WIDTH_WINDOW, last) + 1
    local_area, local_length = (np.concatenate([[0.0], np.cumsum(values[pixels[:, 0], pixels[:, 1]])])
                                for values in (area, along))
    widths = (local_area[upper] - local_area[lower]) / np.maximum(local_length[upper] - local_length[lower], 1.0)
    return np.maximum(widths, MIN_WIDTH_PX)
