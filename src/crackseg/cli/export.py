"""`crackseg export`."""
import argparse
from pathlib import Path
from typing import Any

from crackseg.cli.common import checkpoint_arguments, load_model


def add_parser(commands: Any) -> None:
    """Add `crackseg export` to the subcommands."""
    export = commands.add_parser(
        "export", help="write the gated model as two ONNX graphs (gate, decoder) and model.json",
        description="Export the shipped model (or the two checkpoints given) for ONNX runtimes: gate.onnx "
                    "(images -> crack logits, bottleneck, skip maps) and decoder.onnx (bottleneck, skip maps -> "
                    "mask logits), both with a dynamic batch axis, and model.json (tile size, thresholds, input "
                    "format, how to combine them, SHA-256 of both files).")
    export.add_argument("--out", required=True, help="output folder")
    checkpoint_arguments(export.add_argument_group("model"))
    export.add_argument("--gate-threshold", type=float, default=None,
                        help="gate threshold to record [the shipped model's; 0.5 for checkpoints]")
    export.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    """`crackseg export` with its parsed flags; returns the exit code."""
    from crackseg.inference.export import export_onnx  # imports onnx machinery only when asked

    sidecar = export_onnx(load_model(args), Path(args.out))
    print(f"wrote gate.onnx, decoder.onnx and model.json to {args.out} (tiles of {sidecar['crop']} px, gate "
          f"threshold {sidecar['gate_threshold']}, mask threshold {sidecar['mask_threshold']})")
    return 0
