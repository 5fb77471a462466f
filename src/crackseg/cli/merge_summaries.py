"""`crackseg merge-summaries`."""
import argparse
from pathlib import Path
from typing import Any

from crackseg.cli.rasters import merge_rasters
from crackseg.pipelines.photos import merge_summaries, summary_parts


def add_parser(commands: Any) -> None:
    """Add `crackseg merge-summaries` to the subcommands."""
    merge = commands.add_parser(
        "merge-summaries", help="join the summaries and raster parts of sharded predict runs",
        description="Join summary-I-of-N.csv of `crackseg predict --shard I/N` runs in one output folder into "
                    "summary.csv, checking that every shard is there and no file appears twice; and join each "
                    "georeferenced raster's parts (NAME_mask.part-I-of-N.tif) into NAME_mask.tif and "
                    "NAME_prob.tif, measuring its cracks whole into NAME_cracks.geojson, .gpkg and .csv.")
    merge.add_argument("out", help="the --out folder of the shards")
    merge.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    """`crackseg merge-summaries` with its parsed flags; returns the exit code."""
    out = Path(args.out)
    rasters = merge_rasters(out)
    if summary_parts(out) or not rasters:
        path, count = merge_summaries(out)
        print(f"wrote {path} ({count} rows)")
    return 0
