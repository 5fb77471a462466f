"""`crackseg synthesize`."""
import argparse
from pathlib import Path
from typing import Any

from crackseg.data.hardnegatives import make_pair as hard_negative
from crackseg.data.synthetic import generate
from crackseg.data.synthetic import make_pair as synthetic_crack
from crackseg.data.testvideo import VIDEO_CRACKED, write_test_video
from crackseg.errors import DatasetError


def add_parser(commands: Any) -> None:
    """Add `crackseg synthesize` to the subcommands."""
    synthesize = commands.add_parser(
        "synthesize", help="write a synthetic data root: cracks (the embedded default) or hard negatives",
        description="Write OUT/{train,valid}/{images,masks} from a deterministic generator. cracks: the embedded "
                    "default (textured asphalt and concrete with cracks). hard-negatives: brick, block and stone "
                    "masonry, tiles, paving, concrete joints, planking, lane markings, road studs, covers, kerbs "
                    "and stains, blurred and JPEG-compressed at random, labelled crack-free; a share also carries "
                    "a labelled crack. Pass OUT to training as one more --data-root. video: OUT/specificity.mp4, "
                    "40 frames of flat noisy concrete, mpeg4, a crack in frames 10-19 only (docs/MODEL.md).")
    synthesize.add_argument("out", help="an empty or missing folder")
    synthesize.add_argument("--kind", choices=list(GENERATORS) + ["video"], default="cracks",
                            help="generator [cracks]")
    synthesize.add_argument("--train", type=int, default=600, help="training images [600]")
    synthesize.add_argument("--valid", type=int, default=150, help="validation images [150]")
    synthesize.add_argument("--size", type=int, default=256, help="image side in px (2x the crop to train on) [256]")
    synthesize.add_argument("--seed", type=int, default=17, help="seed: the same seed writes the same images [17]")
    synthesize.set_defaults(handler=run)


GENERATORS = {"cracks": synthetic_crack, "hard-negatives": hard_negative}


def run(args: argparse.Namespace) -> int:
    """`crackseg synthesize` with its parsed flags; returns the exit code."""
    out = Path(args.out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise DatasetError(f"{out}: not an empty folder; synthesize writes only into an empty or missing one")
    if args.kind == "video":
        out.mkdir(parents=True, exist_ok=True)
        print(f"wrote {write_test_video(out / 'specificity.mp4', seed=args.seed)}: a crack in frames "
              f"{VIDEO_CRACKED.start}-{VIDEO_CRACKED.stop - 1} only")
        return 0
    counts = {"train": args.train, "valid": args.valid}
    generate(out, args.seed, args.size, counts, GENERATORS[args.kind], args.kind)
    print(f"wrote {args.train} + {args.valid} {args.kind} images of {args.size} px to {out} (seed {args.seed})")
    return 0
