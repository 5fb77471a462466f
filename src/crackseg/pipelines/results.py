"""What predict writes for each image or video frame: its summary fields, its mask and overlay, and its
measurements; and the measurements of results written before (a resumed run measures their masks again)."""
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


def save_png(array: np.ndarray, path: Path) -> None:
    """Write a PNG atomically: a kill leaves the old file or the new one, never half of one."""
    with atomic(path, "wb") as file:
        Image.fromarray(array).save(file, format="PNG")


def result_fields(result: TiledResult, binary: torch.Tensor) -> Dict[str, Any]:
    """The summary fields of one gated, tiled result; `binary` (H, W) is its mask at the mask threshold."""
    return {"cracked": int(result.cracked), "max_tile_prob": round(float(result.tile_probs.max()), 6),
            "crack_share": round(float(binary.float().mean()), 6), "tiles_decoded": int(result.decoded.sum()),
            "tiles_total": len(result.grid)}


def write_result(out_dir: Path, name: str, key: str, image: torch.Tensor, binary: torch.Tensor,
                 result: TiledResult, row: Dict[str, Any], measurements: Optional[Measurements]) -> None:
    """NAME_mask.png (0/255) and NAME_overlay.png into `out_dir`, and with `measurements` the cracks measured;
    `row` gets the file names and the measured fields.

    Args:
        key: what identifies the input in the tables (its path; a video's frame: path#index).
        image: (3, H, W) uint8 RGB; binary: (H, W) booleans.
    """
    row["mask"], row["overlay"] = f"{name}_mask.png", f"{name}_overlay.png"
    save_png(binary.numpy().astype(np.uint8) * 255, out_dir / row["mask"])
    save_png(crack_overlay(image, binary), out_dir / row["overlay"])
    if measurements is not None:
        measured = measurements.add(key, name, binary.numpy(), image.permute(1, 2, 0).numpy(), extra=row,
                                    probs=result.probs.numpy())
        row.update({field: measured[field] for field in MEASURED})


def remeasure(measurements: Measurements, out_dir: Path, key: str, name: str, row: Dict[str, Any],
              image: Optional[torch.Tensor] = None) -> None:
    """Measure a result written by an earlier run again from its mask file (its probabilities are gone, so its
    cracks have no confidence); with its `image` (3, H, W) the numbered overlay is drawn again too."""
    mask = np.asarray(Image.open(out_dir / row["mask"])) > 0
    if image is None:
        measurements.add(key, name, mask, extra=row, redraw=False)
    else:
        measurements.add(key, name, mask, image.permute(1, 2, 0).numpy(), extra=row)
