"""`crackseg predict`: gated inference over files, folders and globs, writing masks, overlays and a summary."""
import glob
import os
import sys
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np
import torch
from PIL import Image

from crackseg.data import DEFAULT_MAX_PIXELS, IMAGE_EXTENSIONS, VIDEO_EXTENSIONS, DatasetError, load_image
from crackseg.inference import Predictor, prefetch
from crackseg.plots import crack_overlay
from crackseg.report import Measurements
from crackseg.tables import append_rows, read_rows, write_csv

SUMMARY_FIELDS = ("file", "status", "cracked", "max_tile_prob", "crack_share", "tiles_decoded", "tiles_total",
                  "width", "height", "mask", "overlay", "cracks", "total_length_px", "max_width_px")
MEASURED = ("cracks", "total_length_px", "max_width_px")  # filled with --measure
MEDIA_EXTENSIONS = IMAGE_EXTENSIONS + VIDEO_EXTENSIONS  # what folders are searched for


def expand_inputs(inputs: Sequence[str]) -> Tuple[List[Path], List[str]]:
    """Files, folders (searched recursively for images) and glob patterns -> (image paths, problems)."""
    paths: List[Path] = []
    problems: List[str] = []
    for given in inputs:
        path = Path(given)
        if path.is_dir():
            found = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in MEDIA_EXTENSIONS)
            if not found:
                problems.append(f"{given}: no images or videos ({', '.join(MEDIA_EXTENSIONS)}) in this folder")
            paths.extend(found)
        elif path.is_file():
            paths.append(path)
        elif glob.has_magic(given):
            found = sorted(Path(p) for p in glob.glob(given, recursive=True) if Path(p).is_file())
            if not found:
                problems.append(f"{given}: no file matches this pattern")
            paths.extend(found)
        else:
            problems.append(f"{given}: no such file or folder")
    unique = list(dict.fromkeys(paths))
    return unique, problems


def output_names(paths: Sequence[Path]) -> List[str]:
    """A distinct output name per input: its stem, with a counter where two inputs share a stem."""
    seen: Dict[str, int] = {}
    names = []
    for path in paths:
        count = seen.get(path.stem, 0)
        seen[path.stem] = count + 1
        names.append(path.stem if count == 0 else f"{path.stem}_{count + 1}")
    return names


def shard(paths: Sequence[Path], index: int, count: int) -> List[Path]:
    """Shard `index` of `count` (0-based): every count-th of the sorted paths, starting at `index`. The shards
    together hold every path exactly once, whatever machine computes them."""
    if not 0 <= index < count:
        raise ValueError(f"--shard {index}/{count}: the index must be in 0..{count - 1}")
    return sorted(paths)[index::count]


def summary_name(shard_spec: Optional[Tuple[int, int]] = None) -> str:
    """summary.csv, or summary-I-of-N.csv for one shard of several (joined by `merge_summaries`)."""
    return "summary.csv" if shard_spec is None else f"summary-{shard_spec[0]}-of-{shard_spec[1]}.csv"


def read_summary(path: Path) -> List[Dict[str, str]]:
    """The complete rows of a summary file."""
    return [row for row in read_rows(path) if row["status"]]


def write_summary(path: Path, rows: Sequence[Dict[str, Any]]) -> None:
    """Write a summary CSV atomically."""
    write_csv(path, SUMMARY_FIELDS, rows)


def merge_summaries(out_dir: Path) -> Tuple[Path, int]:
    """Join the shards' summary-I-of-N.csv files of a folder into summary.csv (sorted by file); returns its path
    and row count. All N shards must be there, and no file may appear twice."""
    parts = sorted(out_dir.glob("summary-*-of-*.csv"))
    if not parts:
        raise FileNotFoundError(f"{out_dir}: no summary-I-of-N.csv files to merge")
    counts = {part.stem.rsplit("-of-", 1)[1] for part in parts}
    if len(counts) != 1:
        raise DatasetError(f"{out_dir}: summaries of different shard counts ({', '.join(sorted(counts))})")
    count = int(counts.pop())
    missing = sorted(set(range(count)) - {int(part.stem.split("-")[1]) for part in parts})
    if missing:
        raise DatasetError(f"{out_dir}: shard(s) {', '.join(map(str, missing))} of {count} have no summary yet")
    rows = [row for part in parts for row in read_summary(part)]
    files = [row["file"] for row in rows]
    if len(set(files)) != len(files):
        raise DatasetError(f"{out_dir}: some files appear in several shard summaries")
    path = out_dir / "summary.csv"
    write_summary(path, sorted(rows, key=lambda row: row["file"]))
    return path, len(rows)


def save_png(array: np.ndarray, path: Path) -> None:
    """Write a PNG atomically: a kill leaves the old file or the new one, never half of one."""
    temporary = path.with_name(path.name + ".tmp")
    Image.fromarray(array).save(temporary, format="PNG")
    os.replace(temporary, path)


def predict_files(predictor: Predictor, paths: Sequence[Path], out_dir: Path, progress: Any = None,
                  names: Optional[Sequence[str]] = None, summary: str = "summary.csv", skip_existing: bool = False,
                  max_pixels: Optional[int] = DEFAULT_MAX_PIXELS,
                  measurements: Optional[Measurements] = None) -> List[Dict[str, Any]]:
    """Run the gated model over image files; write `<name>_mask.png` (0/255) and `<name>_overlay.png` per image
    and the summary (a row per image, appended as each image is done, then sorted). Unreadable files get an
    error row and do not stop the others. With `skip_existing`, images with an "ok" row in the summary and their
    outputs on disk are not run again (with `measurements`, their masks are measured again from the files).
    With `measurements`, every mask's cracks are measured too. Returns the rows, in input order."""
    out_dir.mkdir(parents=True, exist_ok=True)
    names = list(names or output_names(paths))
    summary_path = out_dir / summary
    done: Dict[str, Dict[str, Any]] = {}
    if skip_existing:
        done = {row["file"]: row for row in read_summary(summary_path) if row["status"] == "ok"
                and (out_dir / row["mask"]).is_file() and (out_dir / row["overlay"]).is_file()}
    todo = [index for index, path in enumerate(paths) if str(path) not in done]
    if progress is not None:
        progress.update(len(paths) - len(todo))
    rows: Dict[int, Dict[str, Any]] = {index: done[str(path)] for index, path in enumerate(paths)
                                      if str(path) in done}
    if measurements is not None:
        for index in sorted(rows):
            mask = np.asarray(Image.open(out_dir / rows[index]["mask"])) > 0
            measurements.add(str(paths[index]), names[index], mask, load_image(paths[index], max_pixels)
                             .permute(1, 2, 0).numpy(), extra=rows[index])
    images: Dict[int, torch.Tensor] = {}
    write_summary(summary_path, [rows[index] for index in sorted(rows)])

    def record(index: int, row: Dict[str, Any]) -> None:
        rows[index] = row
        append_rows(summary_path, SUMMARY_FIELDS, [row])  # as images finish: a kill keeps them
        if progress is not None:
            progress.update()

    def readable() -> Iterator[Tuple[int, torch.Tensor]]:
        for index, image in prefetch(lambda i: load_image(paths[i], max_pixels), todo):
            if isinstance(image, Exception):
                if progress is not None:
                    progress.write(f"skipped: {image}", file=sys.stderr)
                record(index, {"file": str(paths[index]), "status": f"error: {image}"})
                continue
            images[index] = image
            yield index, image

    for result in predictor.tiled(readable()):
        image = images.pop(result.key)
        binary = result.probs >= predictor.mask_threshold
        mask_path = out_dir / f"{names[result.key]}_mask.png"
        overlay_path = out_dir / f"{names[result.key]}_overlay.png"
        save_png(binary.numpy().astype(np.uint8) * 255, mask_path)
        save_png(crack_overlay(image, binary), overlay_path)
        row = {"file": str(paths[result.key]), "status": "ok", "cracked": int(result.cracked),
               "max_tile_prob": round(float(result.tile_probs.max()), 6),
               "crack_share": round(float(binary.float().mean()), 6), "tiles_decoded": int(result.decoded.sum()),
               "tiles_total": len(result.grid), "width": image.shape[2], "height": image.shape[1],
               "mask": mask_path.name, "overlay": overlay_path.name}
        if measurements is not None:
            measured = measurements.add(row["file"], names[result.key], binary.numpy(),
                                        image.permute(1, 2, 0).numpy(), extra=row)
            row.update({key: measured[key] for key in MEASURED})
        record(result.key, row)
    ordered = [rows[index] for index in sorted(rows)]
    write_summary(summary_path, ordered)
    return ordered
