"""Cut images of any size into overlapping tiles of the training crop and stitch tile outputs back.

Stitching gives every pixel to exactly one tile, the one whose centre it is nearest (the overlap is split in
the middle, as in the U-Net paper's overlap-tile strategy). So a model whose receptive field reaches less than
half the overlap past a pixel gives the same map tiled as untiled, and there is no averaging to blur or seam.
"""
from dataclasses import dataclass
from typing import List, Optional, Tuple

import torch
import torch.nn.functional as F


def tile_starts(length: int, tile: int, overlap: int) -> List[int]:
    """Starts of tiles covering [0, length): a regular stride of tile - overlap, the last one flush with the end."""
    if not 0 <= overlap < tile:
        raise ValueError(f"overlap must be in [0, {tile}), got {overlap}")
    if length <= tile:
        return [0]
    return list(range(0, length - tile, tile - overlap)) + [length - tile]


def owned_ranges(starts: List[int], tile: int, length: int) -> List[Tuple[int, int]]:
    """The [lo, hi) span each tile owns: overlaps split at their midpoint, the ends reaching the image borders."""
    cuts = [0] + [(following + previous + tile) // 2 for previous, following in zip(starts, starts[1:])] + [length]
    return list(zip(cuts, cuts[1:]))


def pad_to(image: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Pad (..., H, W) at the bottom and right to at least height x width, mirroring the image (reflect), or
    repeating its edge where the image is too small to mirror."""
    pad_h, pad_w = max(height - image.shape[-2], 0), max(width - image.shape[-1], 0)
    if not pad_h and not pad_w:
        return image
    mode = "reflect" if pad_h < image.shape[-2] and pad_w < image.shape[-1] else "replicate"
    batched = image if image.dim() == 4 else image[None]
    padded = F.pad(batched.float() if batched.dtype == torch.uint8 else batched, (0, pad_w, 0, pad_h), mode=mode)
    padded = padded.to(image.dtype)
    return padded if image.dim() == 4 else padded[0]


def pad_to_multiple(image: torch.Tensor, multiple: int) -> torch.Tensor:
    """Pad (..., H, W) at the bottom and right so both sides are multiples of `multiple`."""
    height, width = image.shape[-2:]
    return pad_to(image, -(-height // multiple) * multiple, -(-width // multiple) * multiple)


@dataclass
class TileGrid:
    """Where the tiles of one image lie: `height` x `width` is the image size, tiles are `tile` px squares on the
    image padded to at least one tile."""

    height: int
    width: int
    tile: int
    ys: List[int]
    xs: List[int]

    @classmethod
    def of(cls, height: int, width: int, tile: int, overlap: int) -> "TileGrid":
        """The grid of tiles that covers an image of height x width px, overlapping by `overlap` px."""
        return cls(height, width, tile, tile_starts(height, tile, overlap), tile_starts(width, tile, overlap))

    def __len__(self) -> int:
        return len(self.ys) * len(self.xs)

    @property
    def padded_size(self) -> Tuple[int, int]:
        """(height, width) after padding an image smaller than a tile up to the tile."""
        return max(self.height, self.tile), max(self.width, self.tile)

    def boxes(self) -> List[Tuple[int, int]]:
        """Top-left corners, row by row."""
        return [(y, x) for y in self.ys for x in self.xs]

    def box(self, index: int) -> Tuple[int, int]:
        """Top-left corner of tile `index` (row by row)."""
        return self.ys[index // len(self.xs)], self.xs[index % len(self.xs)]

    def owned(self) -> List[Tuple[Tuple[int, int], Tuple[int, int]]]:
        """Per tile ((y_lo, y_hi), (x_lo, x_hi)): the pixels of the image it owns, row by row."""
        rows = owned_ranges(self.ys, self.tile, self.height)
        cols = owned_ranges(self.xs, self.tile, self.width)
        return [(row, col) for row in rows for col in cols]


def extract_tiles(image: torch.Tensor, grid: TileGrid) -> torch.Tensor:
    """(C, H, W) -> (len(grid), C, tile, tile), padding images smaller than a tile."""
    padded = pad_to(image, *grid.padded_size)
    s = grid.tile
    return torch.stack([padded[:, y:y + s, x:x + s] for y, x in grid.boxes()])


class Stitcher:
    """Builds the (C, H, W) map of one image from tile outputs as they arrive, in any order, holding only the map:
    memory stays that of the image however many tiles there are.

    A tile that was run gives the pixels it owns (nearest centre). A pixel whose owner was not run (gated as
    crack-free) takes the largest value of the run tiles covering it, so a crack seen by a neighbouring tile in
    the overlap is kept. Tiles not yet reported count as possibly not run; an owner reported later overwrites.
    """

    def __init__(self, grid: TileGrid, channels: int = 1, dtype: torch.dtype = torch.float32):
        self.grid = grid
        self.result = torch.zeros(channels, grid.height, grid.width, dtype=dtype)
        self.rows = owned_ranges(grid.ys, grid.tile, grid.height)
        self.cols = owned_ranges(grid.xs, grid.tile, grid.width)
        self.run = torch.zeros(len(grid), dtype=torch.bool)

    def _overlapping(self, ranges: List[Tuple[int, int]], start: int) -> List[Tuple[int, int, int]]:
        """(index, lo, hi) of the owned ranges that meet [start, start + tile), clipped to it."""
        end = start + self.grid.tile
        return [(i, max(lo, start), min(hi, end)) for i, (lo, hi) in enumerate(ranges) if lo < end and hi > start]

    def add(self, index: int, output: torch.Tensor) -> None:
        """Report tile `index` as run, with its output (C, tile, tile)."""
        self.run[index] = True
        columns = len(self.grid.xs)
        y, x = self.grid.box(index)
        for row, y_lo, y_hi in self._overlapping(self.rows, y):
            for col, x_lo, x_hi in self._overlapping(self.cols, x):
                owner = row * columns + col
                piece = output[:, y_lo - y:y_hi - y, x_lo - x:x_hi - x].to(self.result.dtype)
                target = self.result[:, y_lo:y_hi, x_lo:x_hi]
                if owner == index:
                    target.copy_(piece)
                elif not self.run[owner]:
                    torch.maximum(target, piece, out=target)


def stitch(outputs: torch.Tensor, grid: TileGrid, computed: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Tile outputs (T, C, tile, tile) -> a (C, H, W) map of the image (see `Stitcher`); `computed` (T,) bool marks
    the tiles that were run (default: all)."""
    stitcher = Stitcher(grid, outputs.shape[1], outputs.dtype)
    for index in range(len(grid)):
        if computed is None or computed[index]:
            stitcher.add(index, outputs[index])
    return stitcher.result
