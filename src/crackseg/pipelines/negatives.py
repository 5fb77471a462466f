"""Crack-free material through the gated model: how often it is called cracked, and hard-negative mining.

A source is either a folder of crack-free photos (every photo counts) or a split of a data root (only its
crack-free tiles count: the pixels a tile owns hold no labelled crack, nor within `MARGIN` px of them, so a
crack's blurred edge is not counted against the model). For each source: the share of photos called cracked, by
the same rule as `predict` (`TiledResult.cracked`: the head gates and the mask holds a crack at least
`min_length` long), or of crack-free tiles called cracked by that rule applied to the tile's own pixels, and the
share of their pixels called crack (None where there is nothing to count). A data root split with an `other/`
folder of label maps (e.g. paveseg's joints, sealed cracks, patches as grey levels) also gets, per grey level,
the share of its pixels called crack.

Mining (`out`): what was wrongly called cracked becomes training data for the next run: each crack-free photo
called cracked, and a window of twice the tile around each crack-free tile called cracked (with its real labels:
a crack elsewhere in the window stays labelled), written as OUT/{train,valid}/{images,masks}/ (every 5th to
valid, `crackseg.data.writer`), so OUT trains as one more --data-root.
"""
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np
import torch
from scipy import ndimage

from crackseg.analysis.measure import has_crack
from crackseg.background import prefetch
from crackseg.data.datasets import photos_of_split, read_pair
from crackseg.data.writer import DataRootWriter, data_root
from crackseg.errors import DatasetError
from crackseg.files.images import list_images, load_image, open_image, pair_files
from crackseg.inference.predictor import Predictor, TiledResult

MARGIN = 8  # px around labelled cracks that are not counted as crack-free


def is_data_root(path: Path, split: str) -> bool:
    """Whether `path` holds SPLIT/images and SPLIT/masks (else it is a folder of crack-free photos)."""
    return (Path(path) / split / "images").is_dir() and (Path(path) / split / "masks").is_dir()


def _items(source: Path, split: str) -> List[Tuple[Path, Optional[Path], Optional[Path]]]:
    """(image, mask or None, label map or None) per photo of the source."""
    if is_data_root(source, split):
        other = source / split / "other"
        maps = list_images(other) if other.is_dir() else {}
        return [(image, mask, maps.get(image.stem)) for image, mask in pair_files(source / split / "images",
                                                                                  source / split / "masks")]
    if (source / "train" / "images").is_dir() or (source / "valid" / "images").is_dir():
        raise DatasetError(f"{source}: a data root without {split}/images and {split}/masks (--split train or valid)")
    return [(photo, None, None) for photo in photos_of_split(source, split)]


class _Tally:
    """Counts of one source."""

    def __init__(self, source: Path, kind: str):
        self.source, self.kind = source, kind
        self.units = self.called = self.pixels = self.crack_pixels = 0
        self.classes: Dict[int, List[int]] = {}  # grey level -> [pixels, pixels called crack]

    def add_classes(self, labels: np.ndarray, truth: np.ndarray, binary: np.ndarray) -> None:
        """Per grey level of a label map (H, W), its pixels outside labelled cracks and those called crack."""
        for level in np.unique(labels[labels > 0]):
            where = (labels == level) & ~truth
            counts = self.classes.setdefault(int(level), [0, 0])
            counts[0] += int(where.sum())
            counts[1] += int((binary & where).sum())

    def summary(self) -> Dict[str, Any]:
        unit = "photos" if self.kind == "photos" else "crack-free tiles"
        result = {"source": str(self.source), "unit": unit, "count": self.units, "called_cracked": self.called,
                  "share_called_cracked": round(self.called / self.units, 4) if self.units else None,
                  "pixels": self.pixels,
                  "share_of_pixels_called_crack": round(self.crack_pixels / self.pixels, 5) if self.pixels else None}
        if self.classes:
            result["classes"] = {str(level): {"pixels": total, "share_called_crack": round(hit / max(total, 1), 5)}
                                 for level, (total, hit) in sorted(self.classes.items())}
        return result


def _crack_free_tiles(result: TiledResult, truth: np.ndarray) -> Iterator[Tuple[int, Tuple[slice, slice]]]:
    """(tile index, owned region) of the tiles whose owned pixels hold no labelled crack within MARGIN px."""
    near = ndimage.binary_dilation(truth, iterations=MARGIN) if truth.any() else truth
    for index, ((y0, y1), (x0, x1)) in enumerate(result.grid.owned()):
        region = (slice(y0, y1), slice(x0, x1))
        if not near[region].any():
            yield index, region


def _decoded(image_path: Path, mask: Optional[Path], label_map: Optional[Path]
             ) -> Tuple[torch.Tensor, Optional[np.ndarray], Optional[np.ndarray]]:
    """An item of a source read: image (3, H, W) uint8, labelled crack (H, W) bool or None, label map or None."""
    image, truth = read_pair(image_path, mask) if mask is not None else (load_image(image_path), None)
    truth = None if truth is None else truth[0].numpy() > 0
    labels = None
    if label_map is not None:
        labels = np.asarray(open_image(label_map).convert("L"))
        if labels.shape != tuple(image.shape[1:]):
            raise DatasetError(f"{label_map}: label map of {labels.shape[1]}x{labels.shape[0]} px for an image "
                               f"of {image.shape[2]}x{image.shape[1]} px")
    return image, truth, labels


def scan(predictor: Predictor, source: Path, split: str = "valid", out: Optional[DataRootWriter] = None,
         progress: Any = None) -> Dict[str, Any]:
    """Run the model over one source; the shares called crack (see the module's docstring); with `out`, write
    what was wrongly called cracked through it as training data."""
    source = Path(source)
    items = _items(source, split)
    tally = _Tally(source, "tiles" if items and items[0][1] is not None else "photos")
    mined = 0

    loaded: Dict[int, Tuple[torch.Tensor, Optional[np.ndarray], Optional[np.ndarray]]] = {}

    def images() -> Iterator[Tuple[int, torch.Tensor]]:
        for index, value in prefetch(lambda index: _decoded(*items[index]), range(len(items))):
            if isinstance(value, DatasetError):
                raise value
            if isinstance(value, Exception):
                raise DatasetError(f"{items[index][0]}: {value}")
            loaded[index] = value
            yield index, value[0]

    for result in predictor.tiled(images()):
        image, truth, labels = loaded.pop(result.key)
        binary = result.binary.numpy()
        name = f"{source.name}_{items[result.key][0].stem}"  # sources share one output root
        if truth is None:
            tally.units += 1
            tally.called += int(result.cracked)
            tally.pixels += binary.size
            tally.crack_pixels += int(binary.sum())
            if out is not None and result.cracked:
                out.write(mined, name, image, np.zeros(binary.shape, bool))
                mined += 1
        else:
            free = np.zeros(binary.shape, bool)
            for index, region in _crack_free_tiles(result, truth):
                free[region] = True
                called = bool(result.decoded[index]) and has_crack(binary[region], result.min_area,
                                                                     result.min_length)
                tally.units += 1
                tally.called += int(called)
                if out is not None and called:
                    _write_window(out, mined, f"{name}_t{index}", image, truth, result.grid.box(index),
                                  result.grid.tile)
                    mined += 1
            tally.pixels += int(free.sum())
            tally.crack_pixels += int((binary & free).sum())
            if labels is not None:
                tally.add_classes(labels, truth, binary)
        if progress is not None:
            progress.update()
    summary = tally.summary()
    if out is not None:
        summary["mined"] = mined
    return summary


def _write_window(out: DataRootWriter, count: int, name: str, image: torch.Tensor, truth: np.ndarray,
                  corner: Tuple[int, int], tile: int) -> None:
    """A window of 2 x tile px centred on the tile (shifted to fit the image), with its real labels."""
    height, width = truth.shape
    side_y, side_x = min(2 * tile, height), min(2 * tile, width)
    top = int(np.clip(corner[0] - tile // 2, 0, height - side_y))
    left = int(np.clip(corner[1] - tile // 2, 0, width - side_x))
    window = (slice(top, top + side_y), slice(left, left + side_x))
    out.write(count, name, image[:, window[0], window[1]], truth[window])


def scan_all(predictor: Predictor, sources: Sequence[Path], split: str = "valid", out: Optional[Path] = None,
             progress: Any = None) -> List[Dict[str, Any]]:
    """`scan` per source, all mining into one `out` (an empty or missing folder; names start with the source
    folder's name), which is written only if the whole run succeeds (`data_root`)."""
    if out is None:
        return [scan(predictor, Path(source), split, None, progress) for source in sources]
    with data_root(out, "--mine") as writer:
        return [scan(predictor, Path(source), split, writer, progress) for source in sources]
