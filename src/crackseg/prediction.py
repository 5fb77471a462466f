"""`crackseg predict`: gated inference over files, folders and globs, writing masks, overlays and a summary."""
import csv
import glob
import sys
from pathlib import Path
from typing import Any, Dict, Iterator, List, Sequence, Tuple

import numpy as np
import torch
from PIL import Image

from crackseg.data import IMAGE_EXTENSIONS, load_image
from crackseg.inference import Predictor, prefetch
from crackseg.plots import crack_overlay

SUMMARY_FIELDS = ("file", "status", "cracked", "max_tile_prob", "crack_share", "tiles_decoded", "tiles_total",
                  "width", "height", "mask", "overlay")


def expand_inputs(inputs: Sequence[str]) -> Tuple[List[Path], List[str]]:
    """Files, folders (searched recursively for images) and glob patterns -> (image paths, problems)."""
    paths: List[Path] = []
    problems: List[str] = []
    for given in inputs:
        path = Path(given)
        if path.is_dir():
            found = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)
            if not found:
                problems.append(f"{given}: no images ({', '.join(IMAGE_EXTENSIONS)}) in this folder")
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


def predict_files(predictor: Predictor, paths: Sequence[Path], out_dir: Path,
                  progress: Any = None) -> List[Dict[str, Any]]:
    """Run the gated model over image files; write `<name>_mask.png` (0/255) and `<name>_overlay.png` per image
    and `summary.csv`. Unreadable files get an error row and do not stop the others. Returns the rows."""
    out_dir.mkdir(parents=True, exist_ok=True)
    names = output_names(paths)
    rows: Dict[int, Dict[str, Any]] = {}
    images: Dict[int, torch.Tensor] = {}

    def readable() -> Iterator[Tuple[int, torch.Tensor]]:
        for index, image in prefetch(lambda i: load_image(paths[i]), range(len(paths))):
            if isinstance(image, Exception):
                rows[index] = {"file": str(paths[index]), "status": f"error: {image}"}
                if progress is not None:
                    progress.write(f"skipped: {image}", file=sys.stderr)
                    progress.update()
                continue
            images[index] = image
            yield index, image

    for result in predictor.tiled(readable()):
        image = images.pop(result.key)
        binary = result.probs >= predictor.mask_threshold
        mask_path = out_dir / f"{names[result.key]}_mask.png"
        overlay_path = out_dir / f"{names[result.key]}_overlay.png"
        Image.fromarray(binary.numpy().astype(np.uint8) * 255).save(mask_path)
        Image.fromarray(crack_overlay(image, binary)).save(overlay_path)
        rows[result.key] = {
            "file": str(paths[result.key]), "status": "ok", "cracked": int(result.cracked),
            "max_tile_prob": round(float(result.tile_probs.max()), 6),
            "crack_share": round(float(binary.float().mean()), 6), "tiles_decoded": int(result.decoded.sum()),
            "tiles_total": len(result.grid), "width": image.shape[2], "height": image.shape[1],
            "mask": mask_path.name, "overlay": overlay_path.name}
        if progress is not None:
            progress.update()
    ordered = [rows[index] for index in sorted(rows)]
    with open(out_dir / "summary.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=SUMMARY_FIELDS)
        writer.writeheader()
        writer.writerows(ordered)
    return ordered
