"""Georeferenced rasters on the command line: `predict` runs one whole, or one shard's windows of it, and
`merge-summaries` joins a sharded raster's parts; both write its cracks as GIS files."""
import argparse
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple

from tqdm import tqdm

from crackseg.analysis.severity import standard
from crackseg.cli.common import summary_model
from crackseg.errors import DatasetError
from crackseg.files.pretrained import sha256
from crackseg.inference.predictor import Predictor
from crackseg.outputs.gis import write_gis
from crackseg.pipelines.photos import unwritable
from crackseg.pipelines.raster import RasterResult, predict_raster
from crackseg.pipelines.raster_parts import merge_raster_parts, part_paths, predict_raster_part, raster_parts


def predict_one_raster(args: argparse.Namespace, predictor: Predictor, raster: Path, out: Path, name: str,
                       settings: Dict[str, Any], spec: Optional[Tuple[int, int]], fail: Callable[[str], None]) -> None:
    """A georeferenced raster, window by window: NAME_mask.tif (same CRS and transform), NAME_prob.tif, and its
    cracks as NAME_cracks.geojson, .gpkg and .csv in map coordinates (typed, and graded under the measurement
    `settings`' standard). With --shard I/N only every N-th window, into part files for `merge-summaries`; with
    --skip-existing a raster (or part) already done is not run again."""
    (out / name).parent.mkdir(parents=True, exist_ok=True)
    mask_path = out / f"{name}_mask.tif"
    whole = out / f"{name}_cracks.csv"  # written last, by the run or by the merge of its parts
    done = [whole] + ([part_paths(mask_path, *spec)[2]] if spec else [])  # a part's record: written last too
    if args.skip_existing and any(path.is_file() for path in done):
        print(f"{raster}: done before ({next(path for path in done if path.is_file()).name}): skipped")
        return
    model = {key: sha256(value)[:16] if key in ("segmentation", "classification") else value  # by content, not path
             for key, value in summary_model(args, predictor).items() if key not in ("engine", "int8_head")}
    stored = {"min_area": predictor.min_area, "min_length": predictor.min_length, "standard": args.standard,
              "exposure": args.exposure, "axis_deg": settings["axis_deg"],
              "model": {**model, "mask_threshold": predictor.mask_threshold,
                        "gate_threshold": predictor.model.threshold, "tile": predictor.tile,
                        "overlap": predictor.overlap}}
    try:
        with tqdm(desc=raster.name, unit="window", disable=None) as progress:
            if spec:
                record = predict_raster_part(predictor, raster, mask_path, spec, args.mm_per_px, stored,
                                             args.window, progress)
                print(f"{raster}: shard {spec[0]} of {spec[1]}'s windows done ({record.name}); join the parts with "
                      f"crackseg merge-summaries {out}")
                return
            result = predict_raster(predictor, raster, mask_path, args.mm_per_px, predictor.min_area,
                                    predictor.min_length, args.window, progress)  # as parsed for the predictor
        written = gis_outputs(result, out / f"{name}_cracks", stored)
    except DatasetError as error:
        fail(str(error))
        return
    except OSError as error:
        fail(unwritable(error, raster, out))
        return
    describe(raster, result, written, out)


def gis_outputs(result: RasterResult, out_stem: Path, stored: Dict[str, Any]) -> List[Path]:
    """OUT_STEM.geojson, .gpkg and .csv of a raster's cracks, graded and typed with the stored settings."""
    grade = standard(stored["standard"], stored["exposure"]) if stored["standard"] else None
    return write_gis(out_stem, result.cracks, result.outlines, result.mm_per_px, result.crs, result.transform,
                     grade, stored["axis_deg"])


def describe(raster: Any, result: RasterResult, written: List[Path], out: Path) -> None:
    """The line a finished raster prints."""
    print(f"{raster}: {result.pixels / 1e6:.1f} MP in {result.windows} windows ({result.skipped} nodata, not run), "
          f"{len(result.cracks)} cracks at {result.mm_per_px:g} mm per px; {result.mask.name}, "
          f"{result.probabilities.name}, {', '.join(path.name for path in written)} in {out}")


def merge_rasters(out: Path) -> int:
    """Join every sharded raster's parts under `out` and write its GIS files, then delete the parts (a merge that
    fails before keeps them, to be run again); returns how many rasters were joined."""
    groups = raster_parts(out)
    for mask_path, records in groups.items():
        result, stored, parts = merge_raster_parts(mask_path, records)
        stem = mask_path.with_name(mask_path.name[:-len("_mask.tif")] + "_cracks")
        describe(stored["raster"], result, gis_outputs(result, stem, stored), mask_path.parent)
        for part in parts:
            part.unlink()
    return len(groups)
