"""`crackseg curves`."""
import argparse
from pathlib import Path
from typing import Any

from crackseg.outputs.plots import plot_training_curves


def add_parser(commands: Any) -> None:
    """Add `crackseg curves` to the subcommands."""
    curves = commands.add_parser("curves", help="plot training curves from a stage's log folder",
                                 description="Draw per-epoch train and valid curves (loss and every metric) "
                                             "from the CSV logs of a training run into LOG_DIR/curves.png.")
    curves.add_argument("log_dirs", nargs="+", metavar="LOG_DIR", help="e.g. logs/segmentation")
    curves.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    """`crackseg curves` with its parsed flags; returns the exit code."""
    for log_dir in args.log_dirs:
        print(f"wrote {plot_training_curves(Path(log_dir))}")
    return 0
