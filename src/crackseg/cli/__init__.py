"""The `crackseg` command (also `python -m crackseg`): one module per subcommand, each with `add_parser(commands)`
and `run(args)`. The training stages also run as `python segmentation.py` and `python classification.py`
(`crackseg.cli.train`)."""
import argparse
import sys
from typing import List, Optional

from crackseg.cli import (
    bench,
    check_data,
    curves,
    evaluate,
    export,
    interpolate,
    measure,
    merge_summaries,
    negatives,
    pack,
    predict,
    pseudolabel,
    synthesize,
    train,
)
from crackseg.cli.common import check_model_flags, show_messages
from crackseg.errors import CheckpointError, ConfigError, DatasetError
from crackseg.files.writing import DISK_FULL

COMMANDS = (train, evaluate, predict, measure, negatives, pseudolabel, merge_summaries, bench, pack, export, check_data,
            synthesize, curves, interpolate)


def build_parser() -> argparse.ArgumentParser:
    """The `crackseg` parser: each subcommand's module adds its own."""
    parser = argparse.ArgumentParser(prog="crackseg", description="Crack segmentation with a crack / no-crack gate. "
                                     "Train with `python segmentation.py && python classification.py`.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for command in COMMANDS:
        command.add_parser(commands)
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    """Run one subcommand; errors in the data, the checkpoints or the flags are one line and exit code 2."""
    args = build_parser().parse_args(argv)
    show_messages()
    try:
        if hasattr(args, "mask_threshold") and hasattr(args, "overlap"):
            check_model_flags(args)
        return args.handler(args)
    except (DatasetError, CheckpointError, ConfigError, FileNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except OSError as error:  # the disk, not the data: one line, not a traceback
        if error.errno in DISK_FULL:
            print(f"error: disk full ({error.strerror}{f': {error.filename}' if error.filename else ''}); "
                  "the outputs written before are complete: free some space and run again (predict: "
                  "--skip-existing resumes)", file=sys.stderr)
        else:
            print(f"error: {error}", file=sys.stderr)
        return 1
