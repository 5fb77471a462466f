"""`crackseg merge-summaries`."""
import argparse
from pathlib import Path
from typing import Any

from crackseg.pipelines.photos import merge_summaries


def add_parser(commands: Any) -> None:
    """Add `crackseg merge-summaries` to the subcommands."""
    merge = commands.add_parser(
        "merge-summaries", help="join the summaries of sharded predict runs",
        description="Join summary-I-of-N.csv of `crackseg predict --shard I/N` runs in one output folder into "
                    "summary.csv, checking that every shard is there and no file appears twice.")
    merge.add_argument("out", help="the --out folder of the shards")
    merge.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    """`crackseg merge-summaries` with its parsed flags; returns the exit code."""
    path, count = merge_summaries(Path(args.out))
    print(f"wrote {path} ({count} rows)")
    return 0
