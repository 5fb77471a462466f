"""Cracks across window borders: each core window's crack pixels labelled as its mask is written (its labels
along its four edges and each label's bounding box kept, not the pixels), and the labels that touch across a
border or a corner joined into one crack."""
from dataclasses import dataclass, field
from typing import Dict, Iterator, List, Tuple

import numpy as np
from scipy import ndimage
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from crackseg.analysis.skeleton import EIGHT


@dataclass
class WindowLabels:
    """The crack components of one core window: their labels along its four edges, and per label its bounding
    box in raster coordinates."""

    row: int
    col: int
    top: np.ndarray
    bottom: np.ndarray
    left: np.ndarray
    right: np.ndarray
    boxes: Dict[int, Tuple[int, int, int, int]] = field(default_factory=dict)  # label -> (y0, x0, y1, x1)


def labelled(core: np.ndarray, row: int, col: int) -> WindowLabels:
    """The labels of a core window's crack pixels (booleans) whose top-left is at (row, col) in the raster."""
    labels, _ = ndimage.label(core, structure=EIGHT)
    found = WindowLabels(row, col, labels[0].copy(), labels[-1].copy(), labels[:, 0].copy(), labels[:, -1].copy())
    for label, slices in enumerate(ndimage.find_objects(labels), start=1):
        if slices is not None:
            found.boxes[label] = (row + slices[0].start, col + slices[1].start, row + slices[0].stop,
                                  col + slices[1].stop)
    return found


def _touching(first: np.ndarray, second: np.ndarray) -> Iterator[Tuple[int, int]]:
    """Label pairs of two facing edges (1D, the same length) whose pixels touch: side by side or diagonally."""
    for shift in (-1, 0, 1):
        a = first[max(shift, 0):len(first) + min(shift, 0)]
        b = second[max(-shift, 0):len(second) + min(-shift, 0)]
        both = (a > 0) & (b > 0)
        yield from set(zip(a[both].tolist(), b[both].tolist()))


def join_windows(windows: Dict[Tuple[int, int], WindowLabels], core: int) -> List[List[Tuple[Tuple[int, int], int]]]:
    """Group the components of all windows into cracks: (window, label) pairs that touch across a border (or a
    corner) share a crack (the connected components of the graph of touching pairs). Returns each crack's
    members; windows are keyed by their (row, col) offset."""
    items = [((row, col), label) for (row, col), here in windows.items() for label in here.boxes]
    number = {item: index for index, item in enumerate(items)}
    edges = []
    for (row, col), here in windows.items():
        right, below = windows.get((row, col + core)), windows.get((row + core, col))
        if right is not None:
            edges += [(number[((row, col), a)], number[((row, col + core), b)])
                      for a, b in _touching(here.right, right.left)]
        if below is not None:
            edges += [(number[((row, col), a)], number[((row + core, col), b)])
                      for a, b in _touching(here.bottom, below.top)]
        # diagonal neighbours below: this core's bottom-right pixel against the top-left of the one below right,
        # its bottom-left against the top-right of the one below left
        for corner, mine, theirs in (((row + core, col + core), -1, 0), ((row + core, col - core), 0, -1)):
            other = windows.get(corner)
            if other is not None and here.bottom[mine] and other.top[theirs]:
                edges.append((number[((row, col), int(here.bottom[mine]))],
                              number[(corner, int(other.top[theirs]))]))
    pairs = np.asarray(edges, dtype=np.intp).reshape(-1, 2)
    graph = coo_matrix((np.ones(len(pairs)), (pairs[:, 0], pairs[:, 1])), shape=(len(items), len(items)))
    _, component = connected_components(graph, directed=False)
    groups: Dict[int, List[Tuple[Tuple[int, int], int]]] = {}
    for item, group in zip(items, component.tolist()):
        groups.setdefault(group, []).append(item)
    return list(groups.values())
