"""Flags and helpers shared by the subcommands: the model, measurement and length flags."""
import argparse
import csv
import logging
import math
from typing import Any, Dict, Optional

from crackseg.analysis.measure import JOIN_GAP_PX, MIN_AREA
from crackseg.analysis.severity import ACI224R_EXPOSURES, DEFAULT_EXPOSURE, EC2_EXPOSURES, STANDARDS, Standard, standard
from crackseg.analysis.units import length_px
from crackseg.errors import CheckpointError, ConfigError
from crackseg.files.pretrained import WEIGHTS
from crackseg.inference.acceleration import HEADS, PRECISIONS
from crackseg.inference.quantization import GATES
from crackseg.inference.predictor import DEFAULT_MIN_LENGTH, ENGINES, Predictor
from crackseg.models import UNetClassifier
from crackseg.training.config import resolve_device
from crackseg.training.stages import best_checkpoint

SHIPPED = "the ready-made model shipped with crackseg (docs/MODEL.md)"


def checkpoint_arguments(group: Any, required: bool = False) -> None:
    """--segmentation-checkpoint and --classification-checkpoint: the two trained stages, or (unless
    `required`) neither, for the shipped model."""
    shipped = "" if required else f" [{SHIPPED}]"
    group.add_argument("--segmentation-checkpoint", default=None, required=required,
                       help=f"stage 1's checkpoint (decoder), e.g. {best_checkpoint('segmentation')}{shipped}")
    group.add_argument("--classification-checkpoint", default=None, required=required,
                       help="stage 2's checkpoint (encoder, head, stored mask threshold), e.g. "
                            f"{best_checkpoint('classification')}{shipped}")


def load_model(args: argparse.Namespace) -> UNetClassifier:
    """The two checkpoints given on the command line, else the shipped model."""
    given = (args.segmentation_checkpoint, args.classification_checkpoint)
    if given == (None, None):
        return UNetClassifier.pretrained(threshold=getattr(args, "gate_threshold", None))
    if None in given:
        raise CheckpointError("--segmentation-checkpoint and --classification-checkpoint go together (or give "
                              "neither, for the shipped model)")
    threshold = getattr(args, "gate_threshold", None)  # 0 is a threshold (decode every tile), not "unset"
    return UNetClassifier.from_checkpoints(*given, threshold=0.5 if threshold is None else threshold)


def model_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("model")
    checkpoint_arguments(group)
    group.add_argument("--mask-threshold", type=float, default=None,
                       help="crack probability at which a pixel is crack [the one stored with the model, else 0.5]")
    group.add_argument("--gate-threshold", type=float, default=None,
                       help="the head's crack probability above which a tile is decoded [the shipped model's; "
                            "0.5 for checkpoints]")
    group.add_argument("--overlap", type=int, default=None, help="tile overlap in px [an eighth of the crop]")
    group.add_argument("--tile-batch", type=int, default=32,
                       help="tiles per batch, across images (cut into cache-sized chunks on CPUs) [32]")
    group.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N [auto]")
    group.add_argument("--precision", default="auto", choices=PRECISIONS,
                       help="arithmetic of the model [auto: fp16 on CUDA; on CPUs with native bf16 the faster of "
                            "bf16 and fp32, timed on a chunk of tiles; else fp32]")
    group.add_argument("--head", default="auto", choices=HEADS,
                       help="the gate's head weights: int8 makes the gate cheaper on CPUs that run in fp32 [auto: "
                            "int8 where the CPU runs in fp32, else as trained]")
    group.add_argument("--gate-precision", default="auto", choices=GATES,
                       help="the encoder's arithmetic for the gate's decision on every tile, on CPUs: int8 "
                            "(activation ranges from the model's BatchNorm statistics; the gated tiles decoded from "
                            "its features) or float (--precision's) [auto: int8 on CPUs with VNNI or AMX where it ran "
                            "faster here, timed on a chunk of tiles]")
    group.add_argument("--engine", default="torch", choices=ENGINES,
                       help="run the model in torch or in onnxruntime (exported once into a cache, or --onnx); "
                            "which is faster depends on the CPU: docs/PERFORMANCE.md [torch]")
    group.add_argument("--onnx", default=None, metavar="DIR",
                       help="a folder written by `crackseg export`: run it in onnxruntime instead of checkpoints")


def min_length_argument(group: Any) -> None:
    group.add_argument("--min-length", default=None, metavar="LENGTH",
                       help="the shortest crack: a component whose centreline is shorter is not a crack, and an "
                            "image (or frame) is called cracked only when its mask holds a crack, not on the "
                            "head's word alone; px, or mm with a unit ('2.5mm') and --mm-per-px "
                            f"[predict and evaluate: {DEFAULT_MIN_LENGTH:g} px; measure: 0]")


def measure_arguments(group: Any) -> None:
    group.add_argument("--mm-per-px", type=float, default=None,
                       help="ground size of a pixel in mm: adds lengths and widths in mm and areas in mm^2")
    group.add_argument("--min-area", type=int, default=10, help="ignore specks smaller than this many px [10]")
    min_length_argument(group)
    group.add_argument("--join-gap", default=None, metavar="LENGTH",
                       help="pieces of a crack whose ends face each other across a gap up to this long are one "
                            f"crack; px, or mm with a unit and --mm-per-px; 0 never joins [{JOIN_GAP_PX:g} px]")
    group.add_argument("--scale-csv", default=None, metavar="FILE",
                       help="mm per px of each photo, for photos taken at different distances: a CSV with the "
                            "columns image (file name, path as given or output name) and mm_per_px; photos not "
                            "in it take --mm-per-px")
    group.add_argument("--standard", choices=STANDARDS, default=None,
                       help="grade each crack's widths under a named standard (needs a scale): bre251 "
                            "(buildings, BRE Digest 251 classes 0-5), aci224r (reinforced concrete, ACI 224R "
                            "tolerable widths), ec2 (Eurocode 2 wmax), astm-d6433 (pavement, low/medium/high by "
                            "mean width); class columns in cracks.csv, length per class in images.csv [none: "
                            "widths only]")
    group.add_argument("--axis", type=float, default=90.0, metavar="DEG",
                       help="direction of the road (or wall) in the photos, for crack types: 0 = image horizontal, "
                            "90 = image vertical, as in vehicle cameras; longitudinal within 20 degrees of it, "
                            "transverse within 20 of the perpendicular, networks alligator or block [90]")
    group.add_argument("--exposure", default=None,
                       help="the exposure the limit of aci224r or ec2 depends on: aci224r "
                            f"{'/'.join(ACI224R_EXPOSURES)} [{DEFAULT_EXPOSURE['aci224r']}]; ec2 "
                            f"{'/'.join(EC2_EXPOSURES)} [{DEFAULT_EXPOSURE['ec2']}]")


def read_scales(path: Optional[str]) -> Dict[str, float]:
    """--scale-csv: {image: mm_per_px}; a missing column or a value that is not a positive number is one line
    naming the file and the row."""
    if not path:
        return {}
    try:
        with open(path, newline="", encoding="utf-8-sig") as handle:
            rows = list(csv.DictReader(handle))
    except (OSError, UnicodeDecodeError) as error:
        raise ConfigError(f"--scale-csv {path}: cannot read it ({error})") from None
    if not rows or not {"image", "mm_per_px"} <= set(rows[0]):
        raise ConfigError(f"--scale-csv {path}: expected the columns image and mm_per_px")
    scales = {}
    for line, row in enumerate(rows, start=2):
        try:
            value = float(row["mm_per_px"])
        except (TypeError, ValueError):
            value = float("nan")
        if not math.isfinite(value) or value <= 0:
            raise ConfigError(f"--scale-csv {path}, line {line}: mm_per_px {row['mm_per_px']!r} is not a positive "
                              "number")
        scales[row["image"].strip()] = value
    return scales


def join_gap_px(args: argparse.Namespace) -> float:
    """--join-gap in px (commands without measurement flags join at the default)."""
    return length_px(getattr(args, "join_gap", None), getattr(args, "mm_per_px", None), JOIN_GAP_PX, "--join-gap")


def grading(args: argparse.Namespace) -> Optional[Standard]:
    """--standard and --exposure as a `severity.Standard` (None without --standard)."""
    if args.exposure and args.standard not in DEFAULT_EXPOSURE:
        raise ConfigError(f"--exposure applies to --standard {' or '.join(DEFAULT_EXPOSURE)} only")
    return standard(args.standard, args.exposure) if args.standard else None


def predictor_from_args(args: argparse.Namespace) -> Predictor:
    device = resolve_device(args.device)
    min_length = length_px(args.min_length, getattr(args, "mm_per_px", False), DEFAULT_MIN_LENGTH)
    join_gap = join_gap_px(args)  # both checked before the model loads
    if args.onnx:
        if args.segmentation_checkpoint or args.classification_checkpoint:
            raise ConfigError("--onnx runs an exported model: give it or the checkpoints, not both")
        from crackseg.inference.onnx import OnnxGatedModel

        model: Any = OnnxGatedModel(args.onnx, threshold=args.gate_threshold, device=device)
    else:
        model = load_model(args)
    return Predictor(model, device=device, batch_size=args.tile_batch, overlap=args.overlap,
                     min_length=min_length, min_area=getattr(args, "min_area", MIN_AREA), join_gap=join_gap,
                     precision=args.precision, head=args.head, gate=args.gate_precision,
                     engine="onnxruntime" if args.onnx else args.engine,
                     mask_threshold=model.mask_threshold if args.mask_threshold is None else args.mask_threshold)


def check_model_flags(args: argparse.Namespace) -> None:
    """One-line errors for values of the model flags that cannot work, before any model is loaded."""
    rules = [
        (args.mask_threshold is None or 0 < args.mask_threshold < 1, "--mask-threshold must be in (0, 1)"),
        (args.gate_threshold is None or 0 <= args.gate_threshold < 1, "--gate-threshold must be in [0, 1)"),
        (args.overlap is None or args.overlap >= 0, "--overlap must be 0 or more px"),
        (args.tile_batch >= 1, "--tile-batch must be at least 1"),
        (getattr(args, "max_pixels", 0) >= 0, "--max-pixels must be 0 (no limit) or more"),
    ]
    for ok, message in rules:
        if not ok:
            raise ConfigError(message)


def summary_model(args: argparse.Namespace, predictor: Predictor) -> Dict[str, Any]:
    """Which model ran: its checkpoints or the shipped weights, and its size."""
    source = ({"segmentation": args.segmentation_checkpoint, "classification": args.classification_checkpoint}
              if args.classification_checkpoint else {"onnx": args.onnx} if args.onnx
              else {"shipped": WEIGHTS.name})
    return {**source, "width": predictor.model.width, "crop": predictor.model.crop_size, "engine": predictor.engine,
            "int8_head": predictor.int8_head, "int8_gate": predictor.int8_gate}


class _Console(logging.Handler):
    """Prints the library's progress messages on the current standard output."""

    def emit(self, record: logging.LogRecord) -> None:
        print(self.format(record), flush=True)


def show_messages() -> None:
    """Let the library's progress messages (logger "crackseg", INFO and up) reach the console; the command-line
    layers call this, library users configure logging as they like."""
    logger = logging.getLogger("crackseg")
    if not any(isinstance(handler, _Console) for handler in logger.handlers):
        logger.addHandler(_Console())
    logger.setLevel(logging.INFO)
    logger.propagate = False
