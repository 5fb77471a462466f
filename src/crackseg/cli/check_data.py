"""`crackseg check-data`."""
import argparse
import sys
from pathlib import Path
from typing import Any

from crackseg.data.checks import SPLITS, check_data, errors, summary
from crackseg.training.config import build_config


def add_parser(commands: Any) -> None:
    """Add `crackseg check-data` to the subcommands."""
    check = commands.add_parser(
        "check-data", help="check a data root file by file before training",
        description="Report, file by file: unreadable or truncated images and masks, images without masks and "
                    "masks without images, size mismatches, soft masks (binarised at 50%, a warning) and masks "
                    "with many grey levels (an error), grey/RGBA/palette/16-bit images (converted, a note), "
                    "images smaller than the crop, empty splits. Training runs the same check first. Exit code "
                    "1 when there are errors.")
    check.add_argument("root", nargs="?", default="dataset", help="data root with {train,valid}/{images,masks} "
                                                                 "[dataset]")
    check.add_argument("--crop", type=int, default=None,
                       help="training crop size images must reach [that of the auto preset: 224 on GPU, 64 on CPU]")
    check.add_argument("--splits", nargs="+", default=list(SPLITS), help="splits to check [train valid]")
    check.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    """`crackseg check-data` with its parsed flags; returns the exit code."""
    crop = args.crop or build_config("segmentation", {}).crop
    reports = check_data(Path(args.root), crop, args.splits)
    for report in reports.values():
        for finding in report.findings:
            print(finding, file=sys.stderr if finding.level == "error" else sys.stdout)
    print(f"{args.root} (crop {crop} px):\n{summary(reports)}")
    return 1 if errors(reports) else 0
