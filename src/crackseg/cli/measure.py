"""`crackseg measure`."""
import argparse
import sys
from typing import Any

from tqdm import tqdm

from crackseg.analysis.units import length_px
from crackseg.cli.common import grading, join_gap_px, measure_arguments, read_scales
from crackseg.errors import DatasetError
from crackseg.files.images import load_mask
from crackseg.outputs.measurements import Measurements
from crackseg.pipelines.photos import expand_inputs, output_folder, unwritable


def add_parser(commands: Any) -> None:
    """Add `crackseg measure` to the subcommands."""
    measure = commands.add_parser(
        "measure", help="measure the cracks of binary masks (length, width, area, direction)",
        description="Measure each crack (a connected component of crack pixels) of binary masks, ours or anyone's: "
                    "length along its centreline, mean, median and max width, area, direction, bounding box, in "
                    "px and, with --mm-per-px, in mm. Writes cracks.csv (a row per crack), images.csv (a row per "
                    "image), cracks.json (centrelines as polylines) and NAME_measure.png (centrelines coloured by "
                    "width, cracks numbered as in cracks.csv) to --out.")
    measure.add_argument("masks", nargs="+", metavar="MASK", help="mask files, folders (recursive) or globs")
    measure.add_argument("--out", required=True, help="output folder")
    measure_arguments(measure)
    measure.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    """`crackseg measure` with its parsed flags; returns the exit code."""
    out = output_folder(args.out)
    names, problems = expand_inputs(args.masks, out)
    for problem in problems:
        print(f"error: {problem}", file=sys.stderr)
    if not names:
        print("error: no masks to measure", file=sys.stderr)
        return 1
    measurements = Measurements(out, args.mm_per_px, args.min_area, length_px(args.min_length, args.mm_per_px, 0),
                                grading(args), args.axis, join_gap_px(args), read_scales(args.scale_csv))
    failed = 0
    try:
        for path, name in tqdm(list(names.items()), desc="measure", unit="mask", disable=None):
            try:
                measurements.add(str(path), name, load_mask(path, refuse_photos=True)[0].numpy().astype(bool))
            except DatasetError as error:
                print(f"error: {error}", file=sys.stderr)
                failed += 1
            except OSError as error:
                print(f"error: {unwritable(error, path, out)}", file=sys.stderr)
                failed += 1
    except KeyboardInterrupt:
        written = ", ".join(path.name for path in measurements.write())
        print(f"interrupted after {len(measurements.images) + failed} of {len(names)} masks; {written} hold the "
              f"{len(measurements.images)} measured", file=sys.stderr)
        return 130
    written = ", ".join(path.name for path in measurements.write())
    cracks = sum(len(entry.cracks) for entry in measurements.images)
    print(f"{len(measurements.images)} masks, {cracks} cracks: {written} and overlays in {out}")
    return 1 if failed or problems else 0
