"""One raster over several tasks: `predict --shard I/N` runs every N-th window of each georeferenced raster (from
the I-th, in reading order) into part GeoTIFFs, and `merge_raster_parts` joins the N parts into the raster's mask
and probabilities and measures its cracks whole, across the parts' seams as across any window border.

A part is NAME_mask.part-I-of-N.tif and NAME_prob.part-I-of-N.tif (tiled and sparse: only its windows hold
data), and its record NAME_mask.part-I-of-N.json, written last: a part with a record is complete (and skipped by
a `--skip-existing` run). The record names the raster and its grid, the window size, the windows with crack
pixels, the scale, the model and the measurement settings, which every part of a raster must share.
"""
import json
import re
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

from crackseg.errors import DatasetError
from crackseg.files.geo import rasterio_module
from crackseg.files.writing import write_json
from crackseg.inference.predictor import Predictor
from crackseg.pipelines.raster import (
    GDAL_CACHE_MB,
    WINDOW_PX,
    RasterResult,
    WindowRun,
    core_window,
    finished_raster,
    probabilities_path,
    raster_profile,
    run_windows,
    staging_paths,
)
from crackseg.pipelines.seams import labelled

RECORD = re.compile(r"^(?P<stem>.+)\.part-(?P<index>\d+)-of-(?P<count>\d+)\.json$")
SHARED = ("raster_name", "grid", "window", "windows_total", "mm_per_px", "settings")  # equal in every part


def part_paths(mask_path: Path, index: int, count: int) -> Tuple[Path, Path, Path]:
    """A part's mask, probabilities and record, beside the raster's NAME_mask.tif."""
    suffix = f".part-{index}-of-{count}"
    mask_stem, prob_stem = mask_path.stem, probabilities_path(mask_path).stem
    return (mask_path.with_name(f"{mask_stem}{suffix}.tif"), mask_path.with_name(f"{prob_stem}{suffix}.tif"),
            mask_path.with_name(f"{mask_stem}{suffix}.json"))


def _grid(profile: Dict[str, Any]) -> Dict[str, Any]:
    return {"width": profile["width"], "height": profile["height"], "crs": profile["crs"].to_wkt(),
            "transform": list(profile["transform"])[:6]}


def predict_raster_part(predictor: Predictor, path: Path, mask_path: Path, shard: Tuple[int, int],
                        mm_per_px: Optional[float] = None, settings: Optional[Dict[str, Any]] = None,
                        window: int = WINDOW_PX, progress: Any = None) -> Path:
    """Run shard (I, N)'s windows of a raster into its part files; returns the part's record. `settings` (JSON
    values: the model and its thresholds, min_area, min_length, standard, ...) are stored for the merge, which
    measures with them and refuses parts whose settings differ."""
    mask_part, prob_part, record = part_paths(mask_path, *shard)
    run = run_windows(predictor, path, (mask_part, prob_part), mm_per_px, window, shard, progress)
    write_json(record, {"raster": str(path), "raster_name": Path(path).name, "grid": _grid(run.profile),
                        "shard": list(shard), "window": window, "windows_total": run.total,
                        "windows_run": len(range(run.total)[shard[0]::shard[1]]) - run.skipped,
                        "skipped": run.skipped, "with_cracks": sorted(run.windows), "mm_per_px": run.mm_per_px,
                        "settings": dict(settings or {})})
    return record


def raster_parts(out_dir: Path) -> Dict[Path, List[Path]]:
    """The part records under a folder (recursively), grouped by the raster's mask path they are parts of."""
    groups: Dict[Path, List[Path]] = {}
    for record in sorted(out_dir.rglob("*.part-*-of-*.json")):
        match = RECORD.match(record.name)
        if match:
            groups.setdefault(record.with_name(match["stem"] + ".tif"), []).append(record)
    return groups


def _complete(mask_path: Path, records: List[Path]) -> List[Dict[str, Any]]:
    """The records of a raster's parts, checked: all N there, of one raster and grid, window size, model and
    settings."""
    parts = [json.loads(record.read_text()) for record in records]
    counts = {part["shard"][1] for part in parts}
    if len(counts) != 1:
        raise DatasetError(f"{mask_path}: parts of different shard counts ({', '.join(map(str, sorted(counts)))})")
    count = counts.pop()
    missing = sorted(set(range(count)) - {part["shard"][0] for part in parts})
    if missing:
        raise DatasetError(f"{mask_path}: part(s) {', '.join(map(str, missing))} of {count} are not done yet")
    for key in SHARED:
        if len({json.dumps(part.get(key), sort_keys=True) for part in parts}) != 1:
            raise DatasetError(f"{mask_path}: its parts differ in {key}: run them again on the same raster with "
                               "the same flags")
    return sorted(parts, key=lambda part: part["shard"][0])


def merge_raster_parts(mask_path: Path, records: List[Path]) -> Tuple[RasterResult, Dict[str, Any], List[Path]]:
    """Join a raster's N parts into NAME_mask.tif and NAME_prob.tif (COGs, as an unsharded run writes them) and
    measure its cracks whole with the parts' settings; returns the result, the settings and the part files (to
    delete once the caller has written what it needs)."""
    rasterio = rasterio_module()
    parts = _complete(mask_path, records)
    window = parts[0]["window"]
    pieces = [part_paths(mask_path, *part["shard"]) for part in parts]
    windows = {}
    with rasterio.Env(GDAL_CACHEMAX=GDAL_CACHE_MB):
        with rasterio.open(pieces[0][0]) as first:
            profile = raster_profile(first)
        staging = staging_paths(mask_path)
        with rasterio.open(staging[0], "w", **profile) as mask, rasterio.open(staging[1], "w", **profile) as probs:
            for part, (mask_part, prob_part, _) in zip(parts, pieces):
                with rasterio.open(mask_part) as part_mask, rasterio.open(prob_part) as part_probs:
                    for row, col in part["with_cracks"]:
                        core = core_window(row, col, window, profile["height"], profile["width"])
                        binary = part_mask.read(1, window=core)
                        mask.write(binary[None], window=core)
                        probs.write(part_probs.read(window=core), window=core)
                        windows[(row, col)] = labelled(binary > 0, row, col)
    settings = parts[0]["settings"]
    run = WindowRun(windows, sum(part["skipped"] for part in parts), parts[0]["windows_total"],
                    parts[0]["mm_per_px"], profile)
    result = finished_raster(mask_path, run, window, settings.get("min_area", 10), settings.get("min_length", 0.0))
    return result, {**settings, "raster": parts[0]["raster"]}, [path for piece in pieces for path in piece]
