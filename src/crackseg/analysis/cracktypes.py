"""Crack types from the centreline geometry: longitudinal, transverse, block, alligator, other.

Types are relative to a road (or wall) axis, `axis_deg` in the measuring convention (0 = image horizontal,
counter-clockwise); the default 90 is the image's vertical axis, the direction of travel in vehicle-camera photos.

- A crack that encloses at least `NETWORK_CELLS` closed cells (`Crack.cells`) is a network: **alligator** when its
  cells are smaller than `BLOCK_CELL_MM` across (the median cell's side, with a scale), **block** when larger
  (ASTM D6433 block cracking: pieces of 0.3 x 0.3 m up to 3 x 3 m); without a scale, **network**.
- Otherwise its dominant direction (`Crack.orientation_deg`) decides: within `TOLERANCE_DEG` of the axis
  **longitudinal**, within it of the perpendicular **transverse** (AASHTO R85 uses +-20 degrees), else **other**.

An image's type (to compare with image-level labels) is that of the most crack length, a network counting first
when it holds at least a third of it.
"""
import csv
import json
import sys
from pathlib import Path
from typing import Dict, Optional, Sequence

import numpy as np

from crackseg.analysis.measure import Crack, measure_mask
from crackseg.files.images import list_images, load_mask

TOLERANCE_DEG = 20.0
NETWORK_CELLS = 3
BLOCK_CELL_MM = 300.0
TYPES = ("longitudinal", "transverse", "block", "alligator", "network", "other")


def angle_to_axis(orientation_deg: float, axis_deg: float) -> float:
    """The angle between a crack's direction and the axis, in [0, 90] degrees (directions, not vectors)."""
    difference = abs(orientation_deg - axis_deg) % 180.0
    return min(difference, 180.0 - difference)


def crack_type(crack: Crack, axis_deg: float = 90.0, mm_per_px: Optional[float] = None) -> str:
    """The type of one crack (see the module's docstring)."""
    if crack.cells >= NETWORK_CELLS:
        if not mm_per_px:
            return "network"
        return "alligator" if np.sqrt(crack.cell_area_px) * mm_per_px < BLOCK_CELL_MM else "block"
    angle = angle_to_axis(crack.orientation_deg, axis_deg)
    if angle <= TOLERANCE_DEG:
        return "longitudinal"
    if angle >= 90.0 - TOLERANCE_DEG:
        return "transverse"
    return "other"


def image_type(cracks: Sequence[Crack], axis_deg: float = 90.0, mm_per_px: Optional[float] = None) -> str:
    """The type holding the most crack length; a network first when it holds a third of it ('none': no crack)."""
    lengths: Dict[str, float] = {}
    for crack in cracks:
        kind = crack_type(crack, axis_deg, mm_per_px)
        lengths[kind] = lengths.get(kind, 0.0) + crack.length_px
    if not lengths:
        return "none"
    total = sum(lengths.values())
    networks = {kind: length for kind, length in lengths.items() if kind in ("alligator", "block", "network")}
    if networks and sum(networks.values()) >= total / 3:
        return max(networks, key=networks.get)
    return max(lengths, key=lengths.get)


def _photo_name(stem: str) -> str:
    """The photo a mask belongs to: its own stem, or that of `crackseg predict`'s NAME.jpg_mask.png."""
    if stem.endswith("_mask"):
        return Path(stem[:-len("_mask")]).stem
    return stem


def type_totals(rows: Sequence[Dict[str, object]], mm_per_px: Optional[float] = None) -> Dict[str, float]:
    """Length per crack type over crack rows of cracks.csv (AASHTO R85's extent: length by type), in mm with a
    scale, else px."""
    unit = "mm" if mm_per_px else "px"
    totals = {kind: 0.0 for kind in TYPES}
    for row in rows:
        totals[str(row["type"])] += float(row[f"length_{unit}"])
    return {f"length_{unit}_{kind}": round(total, 2) for kind, total in totals.items()}


def type_accuracy(labels_csv: Path, mask_folders: Sequence[Path], axis_deg: float = 90.0) -> Dict[str, object]:
    """Image types of the masks in `mask_folders` (labelled masks, or predict's NAME_mask.png) against a labels CSV
    (columns name, type), per labelled type:
    how many, how many typed right, and what they were typed as. Names not found and types other than
    longitudinal, transverse and alligator (e.g. 'mixed') are left out."""
    masks = {_photo_name(stem): path for folder in mask_folders for stem, path in list_images(Path(folder)).items()}
    results: Dict[str, Dict[str, object]] = {}
    with open(labels_csv, newline="") as handle:
        for row in csv.DictReader(handle):
            label = row["type"]
            if label not in ("longitudinal", "transverse", "alligator") or row["name"] not in masks:
                continue
            found = image_type(measure_mask(load_mask(masks[row["name"]])[0].numpy() > 0), axis_deg)
            found = "alligator" if found == "network" else found  # no scale here: a network is taken as alligator
            entry = results.setdefault(label, {"images": 0, "right": 0, "typed_as": {}})
            entry["images"] += 1
            entry["right"] += int(found == label)
            entry["typed_as"][found] = entry["typed_as"].get(found, 0) + 1
    for entry in results.values():
        entry["accuracy"] = round(entry["right"] / entry["images"], 3)
    return {"labels": str(labels_csv), "axis_deg": axis_deg, "types": results}


def main(argv: Optional[Sequence[str]] = None) -> int:
    """`python -m crackseg.analysis.cracktypes LABELS.csv MASKS_DIR...`: type accuracy as JSON."""
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) < 2:
        print("usage: python -m crackseg.analysis.cracktypes LABELS.csv MASKS_DIR [MASKS_DIR ...]", file=sys.stderr)
        return 2
    print(json.dumps(type_accuracy(Path(args[0]), [Path(folder) for folder in args[1:]]), indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
