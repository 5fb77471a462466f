"""`crackseg negatives`."""
import argparse
import json
from pathlib import Path
from typing import Any

from tqdm import tqdm

from crackseg.cli.common import min_length_argument, model_arguments, predictor_from_args
from crackseg.data.writer import check_empty
from crackseg.files.writing import write_text
from crackseg.pipelines.negatives import scan_all


def add_parser(commands: Any) -> None:
    """Add `crackseg negatives` to the subcommands."""
    negatives = commands.add_parser(
        "negatives", help="how often crack-free material is called cracked; mine it for the next training run",
        description="Run the model over crack-free material: folders of crack-free photos (every photo counts; "
                    "--split picks every 5th for valid, the rest for train, or all) and data roots (only the "
                    "tiles whose pixels hold no labelled crack within 8 px count; a SPLIT/other/ folder of label "
                    "maps gets the share called crack per grey level). Prints per source, as JSON, the share of "
                    "photos or crack-free tiles called cracked (as predict calls them: gated and holding a crack "
                    "of --min-length) and of their pixels called crack. With --mine OUT, writes each crack-free "
                    "photo and a 2-tile window around each crack-free tile wrongly called cracked to "
                    "OUT/{train,valid}/{images,masks} (real labels, every 5th to valid): one more --data-root "
                    "for the next training run (docs/MODEL.md, hard-negative mining).")
    negatives.add_argument("sources", nargs="+", metavar="SOURCE", help="folders of crack-free photos or data roots")
    negatives.add_argument("--split", default="valid", help="split of each source: train, valid (or all, for "
                                                            "folders of photos) [valid]")
    negatives.add_argument("--mine", default=None, metavar="OUT", help="write what was called cracked here")
    negatives.add_argument("--json", default=None, metavar="FILE", help="also write the results to FILE")
    model_arguments(negatives)
    min_length_argument(negatives)
    negatives.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    """`crackseg negatives` with its parsed flags; returns the exit code."""
    if args.mine:
        check_empty(Path(args.mine), "--mine")  # before the model loads
    predictor = predictor_from_args(args)
    with tqdm(desc="crack-free material", unit="photo", disable=None) as progress:  # stderr: stdout is the JSON
        results = scan_all(predictor, [Path(source) for source in args.sources], args.split,
                           Path(args.mine) if args.mine else None, progress)
    text = json.dumps(results, indent=1)
    print(text)
    if args.json:
        write_text(Path(args.json), text + "\n")
    return 0
