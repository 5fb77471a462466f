"""`crackseg pseudolabel`."""
import argparse
import json
from pathlib import Path
from typing import Any

from tqdm import tqdm

from crackseg.cli.common import min_length_argument, model_arguments, predictor_from_args
from crackseg.data.writer import check_empty
from crackseg.errors import DatasetError
from crackseg.files.writing import write_text
from crackseg.pipelines.pseudolabels import label_all


def add_parser(commands: Any) -> None:
    """Add `crackseg pseudolabel` to the subcommands."""
    pseudolabel = commands.add_parser(
        "pseudolabel", help="label folders of cracked photos without masks with the model's masks, for training",
        description="Run the model (the teacher: the shipped one without checkpoints) over folders of photos known "
                    "to show a crack but without masks (e.g. Ozgenel's crack photos; --split picks every 5th for "
                    "valid, the rest for train, or all) and write each photo it calls cracked, with its mask, to "
                    "OUT/{train,valid}/{images,masks} (every 5th written to valid): one more --data-root, so that a "
                    "model trained with many hard negatives keeps the cracks its teacher finds (docs/MODEL.md). "
                    "Photos it does not call cracked are left out (an empty mask would teach them as crack-free) "
                    "and counted, as are unreadable ones (skipped with a note); OUT is written only if the run "
                    "completes, and no photo labelled is an error. Prints per folder, as JSON, photos, labelled, "
                    "left out, unreadable and the share of pixels labelled crack.")
    pseudolabel.add_argument("sources", nargs="+", metavar="FOLDER", help="folders of cracked photos")
    pseudolabel.add_argument("--out", required=True, help="an empty or missing folder")
    pseudolabel.add_argument("--split", default="train", help="split of each folder: train, valid or all [train]")
    pseudolabel.add_argument("--json", default=None, metavar="FILE", help="also write the results to FILE")
    model_arguments(pseudolabel)
    min_length_argument(pseudolabel)
    pseudolabel.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    """`crackseg pseudolabel` with its parsed flags; returns the exit code."""
    out = Path(args.out)
    check_empty(out, "pseudolabel")  # before the model loads
    teacher = predictor_from_args(args)
    with tqdm(desc="cracked photos", unit="photo", disable=None) as progress:  # stderr: stdout is the JSON
        results = label_all(teacher, [Path(source) for source in args.sources], out, args.split, progress)
    text = json.dumps(results, indent=1)
    print(text)
    if args.json:
        write_text(Path(args.json), text + "\n")
    if not any(result["labelled"] for result in results):
        raise DatasetError(f"no photo was called cracked: nothing written to {out}")
    return 0
