"""`crackseg interpolate`."""
import argparse
from pathlib import Path
from typing import Any

from crackseg.training.interpolation import interpolate_checkpoint


def add_parser(commands: Any) -> None:
    """Add `crackseg interpolate` to the subcommands."""
    interpolate = commands.add_parser(
        "interpolate", help="blend a fine-tuned stage-1 checkpoint with the model it started from (WiSE-FT)",
        description="Write a stage-1 checkpoint whose every weight is (1 - ALPHA) x the start's + ALPHA x the "
                    "fine-tuned checkpoint's (WiSE-FT): a model between the two, which keeps part of what "
                    "fine-tuning lost. Train stage 2 on it as on any stage-1 checkpoint: `python "
                    "classification.py --segmentation-checkpoint OUT`.")
    interpolate.add_argument("tuned", metavar="CHECKPOINT", help="the fine-tuned stage-1 checkpoint")
    interpolate.add_argument("--start", default="pretrained",
                             help="what it was fine-tuned from (its --init): pretrained or a stage-1 checkpoint "
                                  "[pretrained]")
    interpolate.add_argument("--alpha", type=float, required=True,
                             help="the fine-tuned model's share, 0-1 (0: the start, 1: the fine-tuned model)")
    interpolate.add_argument("--out", required=True, help="the stage-1 checkpoint to write")
    interpolate.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    """`crackseg interpolate` with its parsed flags; returns the exit code."""
    out = interpolate_checkpoint(args.start, Path(args.tuned), args.alpha, Path(args.out))
    print(f"{out}: {args.alpha:g} x {args.tuned} + {1 - args.alpha:g} x {args.start}")
    return 0
