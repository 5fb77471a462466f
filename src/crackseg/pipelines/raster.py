"""Georeferenced rasters (GeoTIFF, COG, BigTIFF orthomosaics) read and predicted window by window.

A raster is cut into core windows of `window` px; each is read with a margin of one model tile on every side (so
the tiles at a core's edge see the same context as anywhere else, and no crack is cut at a window border), tiled
and gated as a photo is, and only its core is written into the mask GeoTIFF, which has the raster's CRS and
transform. A window whose core is all nodata (the raster's mask or alpha band) is not read into the model and
costs nothing. Memory is bounded by the window, not the raster.

Cracks are measured as whole cracks across window borders: each core's crack pixels are labelled as the mask is
written, labels that touch across a border (8-connectivity, corners too) are joined, and each joined crack is
measured once from the finished mask, read over that crack's own bounding box, its confidence from the crack
probabilities written beside the mask (on crack pixels only: elsewhere 0, which keeps the file small). Its
centreline and outline go to the GIS outputs in the raster's coordinates (`outputs.gis`).
"""
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import numpy as np
import torch
from scipy import ndimage

from crackseg.analysis.measure import Crack, measure_mask
from crackseg.analysis.skeleton import EIGHT
from crackseg.files.geo import mm_per_px_of, rasterio_module
from crackseg.inference.predictor import Predictor
from crackseg.pipelines.seams import WindowLabels, join_windows, labelled

WINDOW_PX = 2048  # side of a core window
GDAL_CACHE_MB = 256  # GDAL's block cache (its default, 5% of the RAM, alone outgrows the window's memory)


def _rgb(bands: np.ndarray) -> torch.Tensor:
    """Bands (C, h, w) of any integer or float type -> (3, h, w) uint8 RGB (one band: grey)."""
    if bands.shape[0] < 3:
        bands = np.repeat(bands[:1], 3, axis=0)
    bands = bands[:3]
    if bands.dtype != np.uint8:
        top = np.iinfo(bands.dtype).max if np.issubdtype(bands.dtype, np.integer) else 1.0
        top = 255.0 if top > 255 and bands.max() <= 255 else top
        bands = np.clip(bands.astype(np.float32) / top * 255, 0, 255).astype(np.uint8)
    return torch.from_numpy(np.ascontiguousarray(bands))


def _neutral(image: torch.Tensor, valid: np.ndarray) -> torch.Tensor:
    """Nodata pixels (3, h, w) of a window painted in the median colour of its valid ones, so that the edge of an
    orthomosaic (black or white nodata) is not seen as a dark line next to its last valid pixels."""
    if valid.all():
        return image
    fill = torch.from_numpy(np.median(image.numpy()[:, valid], axis=1).astype(np.uint8))
    image = image.clone()
    image[:, torch.from_numpy(~valid)] = fill[:, None]
    return image


@dataclass
class RasterResult:
    """What `predict_raster` wrote and found."""

    mask: Path
    probabilities: Path  # the crack pixels' probabilities x 255, 0 elsewhere
    cracks: List[Crack]
    outlines: List[Dict[str, Any]]  # per crack, its outline as a GeoJSON-like (Multi)Polygon in raster px
    mm_per_px: float
    crs: Any
    transform: Any
    windows: int
    skipped: int
    pixels: int


def window_offsets(height: int, width: int, window: int) -> List[Tuple[int, int]]:
    """The (row, col) top-left corners of a raster's core windows, in reading order."""
    return [(row, col) for row in range(0, height, window) for col in range(0, width, window)]


def core_window(row: int, col: int, window: int, height: int, width: int) -> Any:
    """The rasterio Window of the core at (row, col), cut at the raster's edge."""
    from rasterio.windows import Window

    return Window(col, row, min(window, width - col), min(window, height - row))


def raster_profile(source: Any) -> Dict[str, Any]:
    """The profile of a one-band uint8 GeoTIFF on the raster's grid (its size, CRS and transform), tiled and
    compressed, sparse (blocks never written take no space)."""
    return {"driver": "GTiff", "width": source.width, "height": source.height, "count": 1, "dtype": "uint8",
            "crs": source.crs, "transform": source.transform, "tiled": True, "blockxsize": 512, "blockysize": 512,
            "compress": "deflate", "BIGTIFF": "IF_SAFER", "SPARSE_OK": True}


@dataclass
class WindowRun:
    """What a run over (some of) a raster's windows found: the labels of the windows with crack pixels, by
    (row, col), how many of its windows were all nodata, the raster's window count, scale and grid."""

    windows: Dict[Tuple[int, int], WindowLabels]
    skipped: int
    total: int
    mm_per_px: float
    profile: Dict[str, Any]


def run_windows(predictor: Predictor, path: Path, targets: Tuple[Path, Path], mm_per_px: Optional[float],
                window: int, shard: Tuple[int, int] = (0, 1), progress: Any = None) -> WindowRun:
    """Run every N-th window of a raster from the I-th (`shard` (I, N); all by default) into two new GeoTIFFs on
    its grid, `targets` (mask 0/255, crack pixels' probabilities x 255)."""
    rasterio = rasterio_module()
    with rasterio.Env(GDAL_CACHEMAX=GDAL_CACHE_MB), rasterio.open(path) as source:
        scale = mm_per_px_of(source, mm_per_px)
        profile = raster_profile(source)
        offsets = window_offsets(source.height, source.width, window)
        with rasterio.open(targets[0], "w", **profile) as mask, rasterio.open(targets[1], "w", **profile) as probs:
            windows, skipped = _predict_windows(predictor, source, offsets[shard[0]::shard[1]], window, mask, probs,
                                                progress)
    return WindowRun(windows, skipped, len(offsets), scale, profile)


def _predict_windows(predictor: Predictor, source: Any, offsets: List[Tuple[int, int]], window: int, mask: Any,
                     probs: Any, progress: Any = None) -> Tuple[Dict[Tuple[int, int], WindowLabels], int]:
    """Run the windows at `offsets` of an open raster, writing each core's mask and its crack pixels'
    probabilities into the open GeoTIFFs `mask` and `probs`; returns the labels of the windows with crack pixels,
    by offset, and how many windows were all nodata (not run)."""
    from rasterio.windows import Window

    margin = predictor.tile
    height, width = source.height, source.width
    windows: Dict[Tuple[int, int], WindowLabels] = {}
    if progress is not None:
        progress.total = len(offsets)
        progress.refresh()
    skipped = 0
    for row, col in offsets:
        core = core_window(row, col, window, height, width)
        y0, x0 = max(row - margin, 0), max(col - margin, 0)
        y1, x1 = min(row + core.height + margin, height), min(col + core.width + margin, width)
        read = Window(x0, y0, x1 - x0, y1 - y0)
        read_valid = source.read_masks(1, window=read) > 0  # the core's mask is a part of it: read once
        inner = (slice(row - y0, row - y0 + core.height), slice(col - x0, col - x0 + core.width))
        valid = read_valid[inner]
        if not valid.any():  # all nodata: nothing to look at
            skipped += 1
        else:
            image = _neutral(_rgb(source.read(window=read)), read_valid)
            result = next(predictor.tiled([((row, col), image)]))
            core_probs = result.probs[inner].numpy()
            binary = result.binary[inner].numpy() & valid
            if binary.any():
                mask.write((binary.astype(np.uint8) * 255)[None], window=core)
                crack_probs = np.round(core_probs * 255).astype(np.uint8) * binary
                probs.write(crack_probs[None], window=core)
                windows[(row, col)] = labelled(binary, row, col)
        if progress is not None:
            progress.update()
    return windows, skipped


def staging_paths(mask_path: Path) -> Tuple[Path, Path]:
    """Where a raster's mask and probabilities are written before they become COGs (`finish`)."""
    prob_path = probabilities_path(mask_path)
    return mask_path.with_name(mask_path.name + ".tmp.tif"), prob_path.with_name(prob_path.name + ".tmp.tif")


def predict_raster(predictor: Predictor, path: Path, mask_path: Path, mm_per_px: Optional[float] = None,
                   min_area: int = 10, min_length: float = 0.0, window: int = WINDOW_PX,
                   progress: Any = None) -> RasterResult:
    """Predict a georeferenced raster window by window into a mask GeoTIFF (0/255, tiled, deflate; a Cloud-
    Optimised GeoTIFF where GDAL has the COG driver) with the raster's CRS and transform, and measure its cracks.

    Args:
        predictor: the gated model, tiled.
        path: the raster (GeoTIFF, COG, BigTIFF; RGB, RGBA or grey, any integer type).
        mask_path: the mask GeoTIFF to write; its crack pixels' probabilities (x 255) go beside it, as
            NAME_prob.tif for NAME_mask.tif.
        mm_per_px: ground size of a pixel [from the geotransform; required for a CRS in degrees].
        min_area, min_length: the smallest crack, in px and centreline px.
        window: side of a core window in px (a multiple of the model's tile keeps tiles aligned).
        progress: a tqdm-like bar, advanced by one per window.

    Returns:
        The mask's path, the cracks (pixel units, bounding boxes and centrelines in raster px), the scale, the
        CRS and transform, and the number of windows, of those skipped as nodata, and of pixels.
    """
    staging = staging_paths(mask_path)
    run = run_windows(predictor, path, staging, mm_per_px, window, progress=progress)
    return finished_raster(mask_path, run, window, min_area, min_length)


def finished_raster(mask_path: Path, run: WindowRun, window: int, min_area: int, min_length: float) -> RasterResult:
    """The staged mask and probabilities of a raster's windows made COGs, and its cracks measured."""
    prob_path = probabilities_path(mask_path)
    for staged, target in zip(staging_paths(mask_path), (mask_path, prob_path)):
        finish(staged, target)
    measured = _measure(mask_path, prob_path, run.windows, window, min_area, min_length)
    return RasterResult(mask_path, prob_path, [crack for crack, _ in measured], [outline for _, outline in measured],
                        run.mm_per_px, run.profile["crs"], run.profile["transform"], run.total, run.skipped,
                        run.profile["height"] * run.profile["width"])


def finish(staging: Path, mask_path: Path) -> None:
    """A staged tiled GeoTIFF becomes a COG (with overviews) where GDAL has the driver, else it stays as it is."""
    import rasterio.shutil

    try:
        rasterio.shutil.copy(staging, mask_path, driver="COG", compress="deflate", BIGTIFF="IF_SAFER")
        staging.unlink()
    except Exception:  # an old GDAL without COG: the tiled GeoTIFF is a valid mask too
        staging.replace(mask_path)


def probabilities_path(mask_path: Path) -> Path:
    """Where the crack probabilities of NAME_mask.tif go: NAME_prob.tif."""
    stem = mask_path.name[:-len("_mask.tif")] if mask_path.name.endswith("_mask.tif") else mask_path.stem
    return mask_path.with_name(f"{stem}_prob.tif")


def _measure(mask_path: Path, prob_path: Path, windows: Dict[Tuple[int, int], WindowLabels], core: int, min_area: int,
             min_length: float) -> List[Tuple[Crack, Dict[str, Any]]]:
    """Each crack (a group of window components joined across borders) measured once, from the mask over its
    bounding box, its confidence from the probabilities there, with its outline; numbered 1.. in reading order of
    their top-left pixel."""
    import rasterio
    from rasterio.features import shapes
    from rasterio.transform import Affine
    from rasterio.windows import Window

    groups = join_windows(windows, core)
    boxes = []
    for members in groups:
        y0 = min(windows[w].boxes[label][0] for w, label in members)
        x0 = min(windows[w].boxes[label][1] for w, label in members)
        y1 = max(windows[w].boxes[label][2] for w, label in members)
        x1 = max(windows[w].boxes[label][3] for w, label in members)
        boxes.append((y0, x0, y1, x1, members))
    cracks: List[Tuple[Crack, Dict[str, Any]]] = []
    with rasterio.open(mask_path) as mask, rasterio.open(prob_path) as probs:
        for y0, x0, y1, x1, members in sorted(boxes, key=lambda box: (box[0], box[1])):
            box_window = Window(x0, y0, x1 - x0, y1 - y0)
            pixels = mask.read(1, window=box_window) > 0
            labels, _ = ndimage.label(pixels, structure=EIGHT)
            # the group's own pixels: the components of the box that hold one of its members' pixels
            mine = np.zeros(labels.max() + 1, bool)
            for (row, col), label in members:
                box = windows[(row, col)].boxes[label]
                part = labels[box[0] - y0:box[2] - y0, box[1] - x0:box[3] - x0]
                mine[np.unique(part[part > 0])] = True
            component = mine[labels]
            confidence = probs.read(1, window=box_window) / 255.0
            for crack in measure_mask(component, min_area, min_length, confidence, join_gap=0):  # one component
                rings = [geometry["coordinates"] for geometry, _ in
                         shapes(component.astype(np.uint8), mask=component, connectivity=8,
                                transform=Affine.translation(x0, y0))]
                cracks.append((_shifted(crack, y0, x0, len(cracks) + 1),
                               {"type": "MultiPolygon", "coordinates": rings}))
    return cracks


def _shifted(crack: Crack, dy: int, dx: int, crack_id: int) -> Crack:
    """A crack measured in a window, in raster px."""
    x, y, w, h = crack.bbox
    crack.id, crack.bbox = crack_id, (x + dx, y + dy, w, h)
    crack.centreline = [[(px + dx, py + dy) for px, py in line] for line in crack.centreline]
    return crack
