"""`crackseg pack`."""
import argparse
from pathlib import Path
from typing import Any

from crackseg.cli.common import checkpoint_arguments
from crackseg.errors import ConfigError
from crackseg.files import pretrained
from crackseg.files.checkpoints import load_checkpoint
from crackseg.models import UNetClassifier


def add_parser(commands: Any) -> None:
    """Add `crackseg pack` to the subcommands."""
    pack = commands.add_parser(
        "pack", help="write two checkpoints as one weights file in the shipped format (float16)",
        description="Combine a stage-1 and a stage-2 checkpoint into one weights file like the one shipped with "
                    "crackseg (float16 where the values fit, with the model's settings and its training "
                    "configuration); prints its SHA-256, which crackseg.files.pretrained.SHA256 must record for a "
                    "shipped file.")
    checkpoint_arguments(pack, required=True)
    pack.add_argument("--gate-threshold", type=float, default=0.5, help="the gate threshold to ship [0.5]")
    pack.add_argument("--mask-threshold", type=float, default=None,
                      help="the mask threshold to ship [the one stored in the stage-2 checkpoint, else 0.5]")
    pack.add_argument("--out", default=PACKED,
                      help=f"the weights file to write; never the shipped one, which must match its SHA-256 [{PACKED}]")
    pack.set_defaults(handler=run)


PACKED = "crackseg-packed.pth"  # pack's output: a new file beside the user, never the package's own weights


def run(args: argparse.Namespace) -> int:
    """`crackseg pack` with its parsed flags; returns the exit code."""
    if Path(args.out).resolve() == pretrained.WEIGHTS.resolve():
        raise ConfigError(f"--out {args.out}: the shipped weights file; every run would fail its SHA-256 check "
                          "after it changed (pack into a new file)")
    paths = {"segmentation": args.segmentation_checkpoint, "classification": args.classification_checkpoint}
    stages = {stage: load_checkpoint(path, stage=stage) for stage, path in paths.items()}
    model = UNetClassifier.from_payloads(stages["segmentation"], stages["classification"], paths["segmentation"],
                                         paths["classification"], threshold=args.gate_threshold)
    mask_threshold = model.mask_threshold if args.mask_threshold is None else args.mask_threshold
    settings = {**model.settings(), "mask_threshold": mask_threshold}
    training = {stage: {"config": payload["config"], "epoch": payload["epoch"], "metrics": payload["metrics"]}
                for stage, payload in stages.items()}
    digest = pretrained.pack(model.state_dict(), settings, training, args.out)
    size = Path(args.out).stat().st_size / 1e6
    print(f"wrote {args.out} ({size:.1f} MB, {sum(p.numel() for p in model.parameters()):,} weights)\n"
          f"SHA-256 {digest}")
    return 0
