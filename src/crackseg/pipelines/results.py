"""What predict writes for each image or video frame: its summary fields, its mask and overlay, and its
measurements; and the measurements of results written before (a resumed run measures their masks again, with
the crack probabilities kept beside them, so their cracks get the same confidence)."""
from pathlib import Path
from typing import Any, Dict, Optional

import numpy as np
import torch
from PIL import Image

from crackseg.files.writing import atomic
from crackseg.inference.predictor import TiledResult
from crackseg.outputs.measurements import Measurements
from crackseg.outputs.plots import crack_overlay

MEASURED = ("cracks", "total_length_px", "max_width_px")  # summary fields filled with --measure
PROBABILITIES = "{}_prob.png"  # with --measure: the crack probabilities x 255 (8-bit), what confidence is taken on


def save_png(array: np.ndarray, path: Path) -> None:
    """Write a PNG atomically: a kill leaves the old file or the new one, never half of one."""
    with atomic(path, "wb") as file:
        Image.fromarray(array).save(file, format="PNG")


def result_fields(result: TiledResult) -> Dict[str, Any]:
    """The summary fields of one gated, tiled result."""
    return {"cracked": int(result.cracked), "max_tile_prob": round(float(result.tile_probs.max()), 6),
            "crack_share": round(float(result.binary.float().mean()), 6), "tiles_decoded": int(result.decoded.sum()),
            "tiles_total": len(result.grid)}


def write_result(out_dir: Path, name: str, key: str, image: torch.Tensor, result: TiledResult,
                 row: Dict[str, Any], measurements: Optional[Measurements]) -> None:
    """NAME_mask.png (0/255) and NAME_overlay.png into `out_dir`, and with `measurements` the cracks measured
    and NAME_prob.png, the probabilities their confidence is taken on (to 1/255, so that a resumed run measures
    the same); `row` gets the file names and the measured fields.

    Args:
        key: what identifies the input in the tables (its path; a video's frame: path#index).
        image: (3, H, W) uint8 RGB.
    """
    binary = result.binary
    row["mask"], row["overlay"] = f"{name}_mask.png", f"{name}_overlay.png"
    kept = out_dir / PROBABILITIES.format(name)
    if measurements is not None:  # before the mask: a result whose mask is on disk has its probabilities too
        probs = np.round(result.probs.numpy() * 255).astype(np.uint8)
        save_png(probs, kept)
    else:  # an earlier run's would not be this mask's: a resumed --measure must not take its confidence from it
        kept.unlink(missing_ok=True)
    save_png(binary.numpy().astype(np.uint8) * 255, out_dir / row["mask"])
    save_png(crack_overlay(image, binary), out_dir / row["overlay"])
    if measurements is not None:
        measured = measurements.add(key, name, binary.numpy(), image.permute(1, 2, 0).numpy(), extra=row,
                                    probs=probs / 255.0)
        row.update({field: measured[field] for field in MEASURED})


def remeasure(measurements: Measurements, out_dir: Path, key: str, name: str, row: Dict[str, Any],
              image: Optional[torch.Tensor] = None) -> None:
    """Measure a result written by an earlier run again from its mask file, its cracks' confidence from its
    NAME_prob.png (none when that run did not measure); with its `image` (3, H, W) the numbered overlay is drawn
    again too."""
    mask = np.asarray(Image.open(out_dir / row["mask"])) > 0
    kept = out_dir / PROBABILITIES.format(name)
    probs = np.asarray(Image.open(kept)) / 255.0 if kept.is_file() else None
    if image is None:
        measurements.add(key, name, mask, extra=row, probs=probs, redraw=False)
    else:
        measurements.add(key, name, mask, image.permute(1, 2, 0).numpy(), extra=row, probs=probs)
