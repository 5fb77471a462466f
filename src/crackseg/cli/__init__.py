"""The `crackseg` command (also `python -m crackseg`): train, evaluate, predict, measure, merge-summaries, bench,
negatives, pack, export, check-data, synthesize, curves."""
import argparse
import csv
import json
import math
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import torch
from tqdm import tqdm

from crackseg.analysis.measure import JOIN_GAP_PX, MIN_AREA
from crackseg.analysis.severity import ACI224R_EXPOSURES, DEFAULT_EXPOSURE, EC2_EXPOSURES, STANDARDS, Standard, standard
from crackseg.cli.train import STAGES, add_training_arguments, parser_texts, show_messages, train_stage
from crackseg.data.checks import SPLITS, check_data, errors, summary
from crackseg.data.datasets import MIN_CRACK_FRACTION, read_pair
from crackseg.data.hardnegatives import VIDEO_CRACKED, write_test_video
from crackseg.data.hardnegatives import make_pair as hard_negative
from crackseg.data.synthetic import generate
from crackseg.data.synthetic import make_pair as synthetic_crack
from crackseg.files import pretrained
from crackseg.files.checkpoints import CheckpointError, load_checkpoint, update_checkpoint
from crackseg.files.images import DEFAULT_MAX_PIXELS, VIDEO_EXTENSIONS, DatasetError, load_image, load_mask, pair_files
from crackseg.inference import benchmark
from crackseg.inference.acceleration import HEADS, PRECISIONS
from crackseg.inference.predictor import DEFAULT_MIN_LENGTH, ENGINES, Predictor
from crackseg.models import UNetClassifier
from crackseg.outputs.plots import plot_f1_threshold, plot_precision_recall, plot_prediction_grid, plot_training_curves
from crackseg.outputs.report import Measurements, write_report
from crackseg.pipelines.evaluation import evaluate_split, floor_probs, pick_examples, write_json, write_rows
from crackseg.pipelines.negatives import scan_all
from crackseg.pipelines.photos import (
    DISK_FULL,
    expand_inputs,
    merge_summaries,
    output_folder,
    predict_files,
    read_summary,
    shard,
    summary_name,
    unwritable,
)
from crackseg.pipelines.video import predict_video
from crackseg.training.config import ConfigError, best_checkpoint, build_config, resolve_device

GENERATORS = {"cracks": synthetic_crack, "hard-negatives": hard_negative}
SHIPPED = "the ready-made model shipped with crackseg (docs/MODEL.md)"
PACKED = "crackseg-packed.pth"  # pack's output: a new file beside the user, never the package's own weights


def _checkpoint_arguments(group: argparse._ArgumentGroup) -> None:
    group.add_argument("--segmentation-checkpoint", default=None,
                       help=f"stage 1's checkpoint (decoder), e.g. {best_checkpoint('segmentation')} [{SHIPPED}]")
    group.add_argument("--classification-checkpoint", default=None,
                       help="stage 2's checkpoint (encoder, head, stored mask threshold), e.g. "
                            f"{best_checkpoint('classification')} [{SHIPPED}]")


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


def _model_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("model")
    _checkpoint_arguments(group)
    group.add_argument("--mask-threshold", type=float, default=None,
                       help="crack probability at which a pixel is crack [the one stored with the model, else 0.5]")
    group.add_argument("--gate-threshold", type=float, default=None,
                       help="the head's crack probability above which a tile is decoded [the shipped model's; "
                            "0.5 for checkpoints]")
    group.add_argument("--overlap", type=int, default=None, help="tile overlap in px [a quarter of the crop]")
    group.add_argument("--batch-size", type=int, default=32,
                       help="tiles per batch, across images (cut into cache-sized chunks on CPUs) [32]")
    group.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N [auto]")
    group.add_argument("--precision", default="auto", choices=PRECISIONS,
                       help="arithmetic of the model [auto: fp16 on CUDA, bf16 on CPUs with native bf16, else fp32]")
    group.add_argument("--head", default="auto", choices=HEADS,
                       help="the gate's head weights: int8 makes the gate cheaper on CPUs that run in fp32 [auto: "
                            "int8 where the CPU runs in fp32, else as trained]")
    group.add_argument("--engine", default="torch", choices=ENGINES,
                       help="run the model in torch or in onnxruntime (exported once into a cache, or --onnx); "
                            "which is faster depends on the CPU: docs/PERFORMANCE.md [torch]")
    group.add_argument("--onnx", default=None, metavar="DIR",
                       help="a folder written by `crackseg export`: run it in onnxruntime instead of checkpoints")


def _min_length_argument(group: Any) -> None:
    group.add_argument("--min-length", default=None, metavar="LENGTH",
                       help="the shortest crack: a component whose centreline is shorter is not a crack, and an "
                            "image (or frame) is called cracked only when its mask holds a crack, not on the "
                            "head's word alone; px, or mm with a unit ('2.5mm') and --mm-per-px "
                            f"[predict and evaluate: {DEFAULT_MIN_LENGTH:g} px; measure: 0]")


def length_px(text: Optional[str], mm_per_px: Any, default: float, flag: str = "--min-length") -> float:
    """A length flag in px: '30' or '30px' are px, '2.5mm' needs the scale (`mm_per_px` False: the command has no
    scale flag)."""
    if text is None:
        return default
    value = text.strip().lower()
    unit = "mm" if value.endswith("mm") else "px"
    try:
        number = float(value[:-2] if value.endswith(("mm", "px")) else value)
    except ValueError:
        raise ConfigError(f"{flag} {text!r}: expected a length such as 20, 20px or 2.5mm") from None
    if not math.isfinite(number) or number < 0:
        raise ConfigError(f"{flag} {text!r} must be a finite length of 0 or more")
    if unit == "mm":
        if mm_per_px is False:
            raise ConfigError(f"{flag} {text!r} is in mm: this command takes lengths in px (it has no --mm-per-px)")
        if not mm_per_px:
            raise ConfigError(f"{flag} {text!r} is in mm: give --mm-per-px too, or a length in px")
        return number / mm_per_px
    return number


def _measure_arguments(group: Any) -> None:
    group.add_argument("--mm-per-px", type=float, default=None,
                       help="ground size of a pixel in mm: adds lengths and widths in mm and areas in mm^2")
    group.add_argument("--min-area", type=int, default=10, help="ignore specks smaller than this many px [10]")
    _min_length_argument(group)
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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="crackseg", description="Crack segmentation with a crack / no-crack gate. "
                                     "Train with `python segmentation.py && python classification.py`.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    train = commands.add_parser(
        "train", help="train a stage: segmentation (the U-Net), then classification (the gate's head)",
        description="Train one stage, as `python segmentation.py` and `python classification.py` do, with the same "
                    "flags: `crackseg train segmentation && crackseg train classification` runs the whole pipeline "
                    "(on the synthetic default without --data-root).")
    stages = train.add_subparsers(dest="stage", required=True, metavar="STAGE")
    for stage in STAGES:
        stage_parser = stages.add_parser(stage, help=STAGES[stage].description, **parser_texts(stage))
        add_training_arguments(stage_parser, stage)
    train.set_defaults(handler=run_train)

    evaluate = commands.add_parser(
        "evaluate", help="score the model on labelled images at full resolution",
        description="Score whole labelled images: the U-Net on the whole (padded) image and the gated, tiled "
                    "model; Dice, IoU, precision, recall at the mask threshold, ODS and OIS over thresholds "
                    "0.01..0.99, and the gate's decisions per tile and per image. Writes metrics.json, "
                    "per_image.csv, pr_curve.png, f1_threshold.png and predictions.png to --out.")
    source = evaluate.add_argument_group("data (a split of a data root, or two folders)")
    source.add_argument("--data-root", default="dataset", help="folder with SPLIT/{images,masks} [dataset]")
    source.add_argument("--split", default="valid", help="split to score [valid]")
    source.add_argument("--images", default=None, help="folder of images (with --masks; overrides the data root)")
    source.add_argument("--masks", default=None, help="folder of masks named like the images")
    evaluate.add_argument("--out", default="logs/evaluation", help="output folder [logs/evaluation]")
    evaluate.add_argument("--save-threshold", action="store_true",
                          help="store the gated model's ODS threshold in the classification checkpoint, "
                               "so predict uses it")
    evaluate.add_argument("--floor", action="store_true",
                          help="score SPEC's no-training floor (crack probability = 1 - grey level) instead of "
                               "a model")
    _model_arguments(evaluate)
    _min_length_argument(evaluate)
    evaluate.set_defaults(handler=run_evaluate)

    predict = commands.add_parser(
        "predict", help="find cracks in photos of any size",
        description="Gated inference: each image is cut into overlapping tiles of the training crop, the head "
                    "gates every tile, only tiles gated as cracked are decoded, and the mask is stitched back at "
                    "full resolution. Writes NAME_mask.png (0/255), NAME_overlay.png and summary.csv to --out; with "
                    "--measure the cracks' sizes, with --report report.html. Each video gets a folder with "
                    "frames.csv, segments.csv, video.json and the cracked frames' masks. An unreadable file is "
                    "reported and skipped; the exit code is 1 if any input failed. Without checkpoints it runs "
                    "the shipped model.")
    predict.add_argument("inputs", nargs="+", metavar="INPUT",
                         help="image or video files, folders (recursive) or globs")
    videos = predict.add_argument_group("videos (mp4, avi, mov, mkv, ...; each into its own folder in --out)")
    videos.add_argument("--every", type=int, default=1, help="run every N-th frame [1]")
    videos.add_argument("--fps", type=float, default=None, help="run this many frames a second of video instead")
    videos.add_argument("--frames", action="store_true",
                        help="read each folder given as the numbered frames of one video (name order, 25 frames "
                             "a second), with the outputs of a video")
    videos.add_argument("--min-gap", type=float, default=None,
                        help="cracked frames less than this many seconds apart form one segment [2 frame intervals]")
    predict.add_argument("--out", required=True, help="output folder")
    predict.add_argument("--shard", default=None, metavar="I/N",
                         help="process only shard I of N (0-based) of the sorted inputs, e.g. a Slurm array task or "
                              "a Kubernetes indexed job; writes summary-I-of-N.csv (join with merge-summaries)")
    predict.add_argument("--skip-existing", action="store_true",
                         help="resume: skip images whose outputs and summary row are already in --out")
    predict.add_argument("--max-pixels", type=int, default=DEFAULT_MAX_PIXELS,
                         help="refuse larger images (decompression bombs); raise it to read huge photos such as "
                              f"orthomosaics on purpose, 0 for no limit [{DEFAULT_MAX_PIXELS} (~179 MP)]")
    _measure_arguments(predict.add_argument_group("measurement (--measure, --report)"))
    predict.add_argument("--measure", action="store_true",
                         help="measure every crack found: cracks.csv, images.csv, cracks.json, NAME_measure.png")
    predict.add_argument("--report", action="store_true",
                         help="also write report.html, a self-contained inspection report (implies --measure)")
    _model_arguments(predict)
    predict.set_defaults(handler=run_predict)

    measure = commands.add_parser(
        "measure", help="measure the cracks of binary masks (length, width, area, direction)",
        description="Measure each crack (a connected component of crack pixels) of binary masks, ours or anyone's: "
                    "length along its centreline, mean, median and max width, area, direction, bounding box, in "
                    "px and, with --mm-per-px, in mm. Writes cracks.csv (a row per crack), images.csv (a row per "
                    "image), cracks.json (centrelines as polylines) and NAME_measure.png (centrelines coloured by "
                    "width, cracks numbered as in cracks.csv) to --out.")
    measure.add_argument("masks", nargs="+", metavar="MASK", help="mask files, folders (recursive) or globs")
    measure.add_argument("--out", required=True, help="output folder")
    _measure_arguments(measure)
    measure.set_defaults(handler=run_measure)

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
    _model_arguments(negatives)
    _min_length_argument(negatives)
    negatives.set_defaults(handler=run_negatives)

    merge = commands.add_parser(
        "merge-summaries", help="join the summaries of sharded predict runs",
        description="Join summary-I-of-N.csv of `crackseg predict --shard I/N` runs in one output folder into "
                    "summary.csv, checking that every shard is there and no file appears twice.")
    merge.add_argument("out", help="the --out folder of the shards")
    merge.set_defaults(handler=run_merge)

    bench = commands.add_parser(
        "bench", help="measure inference and training speed (JSON)",
        description="Measure, in one run with interleaved rounds: inference crops/s of the plain eager fp32 U-Net "
                    "(on the batch, and one crop at a time), of the fast path (BatchNorm folded, channels-last, "
                    "reduced precision where the hardware has it, cache-sized chunks on CPUs) and of the "
                    "gated model at 0/10/50/100% cracked crops; where the head is int8 (CPUs in fp32) the full "
                    "head gated at 0/100%; the onnxruntime engine always decoding and gated at 0/100%; the ideal "
                    "gated speedup from FLOP counts; stage-1 training crops/s (plain and fast, data loader "
                    "included) and the loader's own crops/s; the CPU's ISA flags. Prints JSON and writes it to "
                    "--out. Random weights unless --agreement-images is given.")
    bench.add_argument("--width", type=int, default=32, help="U-Net base width [32]")
    bench.add_argument("--crop", type=int, default=224, help="crop side in px [224]")
    bench.add_argument("--batch", type=int, default=10, help="crops per inference batch [10]")
    bench.add_argument("--rounds", type=int, default=10, help="timed rounds per variant (the median counts) [10]")
    bench.add_argument("--train-images", type=int, default=2, help="images (x5 crops) per training batch [2]")
    bench.add_argument("--train-steps", type=int, default=2, help="training steps per round [2]")
    bench.add_argument("--no-training", action="store_true", help="skip the training measurements")
    bench.add_argument("--no-onnx", action="store_true",
                       help="skip the onnxruntime engine (its export takes a few seconds)")
    bench.add_argument("--video", action="store_true",
                       help="also measure a video stream: PyAV's decoder alone, and the model on its frames gated "
                            "at 10%% cracked tiles and always decoding (frames/s)")
    bench.add_argument("--precision", default="auto", choices=PRECISIONS,
                       help="reduced precision of the fast path [auto: fp16 on CUDA, bf16 on CPUs with native bf16, "
                            "else fp32]")
    bench.add_argument("--agreement-images", default=None,
                       help="folder of photos: also report, for the fast path, the fp32 int8 head and "
                            "onnxruntime, the Dice of their binarised masks with plain fp32's and the share of "
                            "tiles gated alike, with the trained checkpoints or the shipped model")
    _checkpoint_arguments(bench.add_argument_group("model for --agreement-images"))
    bench.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N [auto]")
    bench.add_argument("--out", default="logs/bench.json", help="JSON output file [logs/bench.json]")
    bench.set_defaults(handler=run_bench)

    pack = commands.add_parser(
        "pack", help="write two checkpoints as one weights file in the shipped format (float16)",
        description="Combine a stage-1 and a stage-2 checkpoint into one weights file like the one shipped with "
                    "crackseg (float16 where the values fit, with the model's settings and its training "
                    "configuration); prints its SHA-256, which crackseg.files.pretrained.SHA256 must record for a "
                    "shipped file.")
    pack.add_argument("--segmentation-checkpoint", required=True, help="stage 1's checkpoint (decoder)")
    pack.add_argument("--classification-checkpoint", required=True, help="stage 2's checkpoint (encoder, head)")
    pack.add_argument("--gate-threshold", type=float, default=0.5, help="the gate threshold to ship [0.5]")
    pack.add_argument("--mask-threshold", type=float, default=None,
                      help="the mask threshold to ship [the one stored in the stage-2 checkpoint, else 0.5]")
    pack.add_argument("--out", default=PACKED,
                      help=f"the weights file to write; never the shipped one, which must match its SHA-256 [{PACKED}]")
    pack.set_defaults(handler=run_pack)

    export = commands.add_parser(
        "export", help="write the gated model as two ONNX graphs (gate, decoder) and model.json",
        description="Export the shipped model (or the two checkpoints given) for ONNX runtimes: gate.onnx "
                    "(images -> crack logits, bottleneck, skip maps) and decoder.onnx (bottleneck, skip maps -> "
                    "mask logits), both with a dynamic batch axis, and model.json (tile size, thresholds, input "
                    "format, how to combine them, SHA-256 of both files).")
    export.add_argument("--out", required=True, help="output folder")
    _checkpoint_arguments(export.add_argument_group("model"))
    export.add_argument("--gate-threshold", type=float, default=None,
                        help="gate threshold to record [the shipped model's; 0.5 for checkpoints]")
    export.set_defaults(handler=run_export)

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
    check.set_defaults(handler=run_check_data)

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
    synthesize.set_defaults(handler=run_synthesize)

    curves = commands.add_parser("curves", help="plot training curves from a stage's log folder",
                                 description="Draw per-epoch train and valid curves (loss and every metric) "
                                             "from the CSV logs of a training run into LOG_DIR/curves.png.")
    curves.add_argument("log_dirs", nargs="+", metavar="LOG_DIR", help="e.g. logs/segmentation")
    curves.set_defaults(handler=run_curves)
    return parser


def run_train(args: argparse.Namespace) -> int:
    flags = {key: value for key, value in vars(args).items() if key not in ("command", "stage", "handler")}
    return train_stage(args.stage, flags)


def _predictor(args: argparse.Namespace) -> Predictor:
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
    return Predictor(model, device=device, batch_size=args.batch_size, overlap=args.overlap,
                     min_length=min_length, min_area=getattr(args, "min_area", MIN_AREA), join_gap=join_gap,
                     precision=args.precision, head=args.head, engine="onnxruntime" if args.onnx else args.engine,
                     mask_threshold=model.mask_threshold if args.mask_threshold is None else args.mask_threshold)


def run_evaluate(args: argparse.Namespace) -> int:
    if (args.images is None) != (args.masks is None):
        raise DatasetError("--images and --masks go together")
    if args.save_threshold and not args.classification_checkpoint:
        raise CheckpointError("--save-threshold stores the threshold in --classification-checkpoint; the shipped "
                              "model is read-only (pass --mask-threshold to predict instead)")
    images = Path(args.images) if args.images else Path(args.data_root) / args.split / "images"
    masks = Path(args.masks) if args.masks else Path(args.data_root) / args.split / "masks"
    pairs = pair_files(images, masks)
    predictor = None if args.floor else _predictor(args)
    mask_threshold = predictor.mask_threshold if predictor else (
        0.5 if args.mask_threshold is None else args.mask_threshold)
    progress = lambda rows: tqdm(rows, total=len(pairs), desc="evaluate", unit="image", disable=None)  # noqa: E731
    result = evaluate_split(pairs, predictor, mask_threshold, MIN_CRACK_FRACTION, progress)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    summary: Dict[str, Any] = {"images_dir": str(images), "masks_dir": str(masks), **result["summary"]}
    if predictor:
        summary["checkpoints"] = summary_model(args, predictor)
        summary["tiling"] = {"tile": predictor.tile, "overlap": predictor.overlap,
                             "gate_threshold": predictor.model.threshold}
    write_json(out / "metrics.json", summary)
    write_rows(out / "per_image.csv", result["rows"])
    plot_precision_recall(result["curves"], summary, out / "pr_curve.png")
    plot_f1_threshold(result["curves"], mask_threshold, out / "f1_threshold.png")
    main = "gated" if predictor else "floor"
    examples = []
    for label, index in pick_examples(result["rows"], main).items():
        image, mask = read_pair(*pairs[index])
        probs = next(predictor.tiled([(index, image)])).probs if predictor else floor_probs(image)
        dice = result["rows"][index][f"{main}_dice"]
        examples.append((f"{label}: {pairs[index][0].name}\nDice {dice:.3f}", image, mask[0].bool(),
                         probs >= mask_threshold))
    plot_prediction_grid(examples, out / "predictions.png", title=f"{main}, mask threshold {mask_threshold:.2f}")
    print(format_summary(summary))
    if args.save_threshold and predictor and args.classification_checkpoint:
        threshold = summary["gated"]["ods_threshold"]
        update_checkpoint(args.classification_checkpoint, "classification", mask_threshold=threshold)
        print(f"saved mask threshold {threshold:.2f} (gated ODS) to {args.classification_checkpoint}")
    print(f"wrote metrics.json, per_image.csv, pr_curve.png, f1_threshold.png, predictions.png to {out}")
    return 0


def format_summary(summary: Dict[str, Any]) -> str:
    """A few lines a person can read: pixel scores per source, then the gate."""
    lines = [f"{summary['images']} images, {summary['crack_pixels']} crack pixels"]
    for name in ("segmentation", "gated", "floor"):
        if name in summary:
            s = summary[name]
            lines.append(f"{name:>12}: Dice {s['dice']:.4f}  IoU {s['iou']:.4f}  P {s['precision']:.4f}  "
                         f"R {s['recall']:.4f} @ {s['mask_threshold']:.2f} | ODS {s['ods']:.4f} "
                         f"@ {s['ods_threshold']:.2f}  OIS {s['ois']:.4f}")
    if "gate" in summary:
        gate = summary["gate"]
        for level in ("crop", "image"):
            g = gate[level]
            lines.append(f"{'gate ' + level:>12}: F1 crack {g['f1_1']:.4f}  no crack {g['f1_0']:.4f}  "
                         f"mean {g['f1_mean']:.4f}  confusion [[TN FP] [FN TP]] {g['confusion']}")
        lines.append(f"{'decoder':>12}: ran on {gate['tiles_decoded']} of {gate['tiles_total']} tiles "
                     f"({100 * gate['decoded_share']:.1f}%)")
    return "\n".join(lines)


def parse_shard(text: Optional[str]) -> Optional[Tuple[int, int]]:
    """'I/N' -> (I, N), checked; None stays None."""
    if text is None:
        return None
    try:
        index, count = (int(part) for part in text.split("/"))
    except ValueError:
        raise ConfigError(f"--shard {text}: expected I/N, e.g. 0/4") from None
    if count < 1 or not 0 <= index < count:
        raise ConfigError(f"--shard {text}: I must be in 0..N-1")
    return index, count


def check_model_flags(args: argparse.Namespace) -> None:
    """One-line errors for values of the model flags that cannot work, before any model is loaded."""
    rules = [
        (args.mask_threshold is None or 0 < args.mask_threshold < 1, "--mask-threshold must be in (0, 1)"),
        (args.gate_threshold is None or 0 <= args.gate_threshold < 1, "--gate-threshold must be in [0, 1)"),
        (args.overlap is None or args.overlap >= 0, "--overlap must be 0 or more px"),
        (args.batch_size >= 1, "--batch-size must be at least 1"),
        (getattr(args, "max_pixels", 0) >= 0, "--max-pixels must be 0 (no limit) or more"),
    ]
    for ok, message in rules:
        if not ok:
            raise ConfigError(message)


def run_predict(args: argparse.Namespace) -> int:
    shard_spec = parse_shard(args.shard)
    if args.every < 1 or (args.fps is not None and args.fps <= 0):
        raise ConfigError("--every must be at least 1 and --fps positive")
    out = output_folder(args.out)  # before the model loads, as are the measurement settings
    measuring = args.measure or args.report
    scale_used = str(args.min_length).lower().endswith("mm") or str(args.join_gap).lower().endswith("mm")
    unused = [flag for flag, value in (("--standard", args.standard), ("--exposure", args.exposure),
                                       ("--scale-csv", args.scale_csv),
                                       ("--mm-per-px", args.mm_per_px and not scale_used)) if value and not measuring]
    if unused:
        raise ConfigError(f"{', '.join(unused)} only apply to measured cracks: add --measure or --report")
    # the measurement settings, read and checked once: each folder of results (images, each video) gets its own
    measuring_settings = dict(mm_per_px=args.mm_per_px, min_area=args.min_area,
                              min_length=length_px(args.min_length, args.mm_per_px, DEFAULT_MIN_LENGTH),
                              standard=grading(args) if measuring else None, axis_deg=args.axis,
                              join_gap=join_gap_px(args), scales=read_scales(args.scale_csv))
    checked = Measurements(out, **measuring_settings)
    names, problems = expand_inputs(args.inputs, out, frame_folders=args.frames)  # all inputs: shards agree
    unscaled = [path for path, name in names.items() if not checked.scale_of(str(path), name)]
    if checked.standard and unscaled:
        raise ConfigError(f"--standard {args.standard} needs the scale of every photo: {len(unscaled)} are not in "
                          f"--scale-csv ({', '.join(map(str, unscaled[:3]))}{', ...' if len(unscaled) > 3 else ''});"
                          " add them or give --mm-per-px for the rest")
    for problem in problems:
        print(f"error: {problem}", file=sys.stderr)
    if not names:
        print("error: no input images", file=sys.stderr)
        return 1
    paths = shard(list(names), *shard_spec) if shard_spec else list(names)
    total = len(paths)
    videos = [path for path in paths if path.suffix.lower() in VIDEO_EXTENSIONS or path.is_dir()]
    paths = [path for path in paths if path not in videos]
    predictor = _predictor(args)
    if args.overlap is not None and args.overlap >= predictor.tile:
        raise ConfigError(f"--overlap must be less than the tile ({predictor.tile} px)")

    def measurements_in(folder: Path) -> Optional[Measurements]:
        """The measurements of the images, or of one video, written into their own folder."""
        return Measurements(folder, **measuring_settings) if measuring else None

    def fail(problem: str) -> None:
        problems.append(problem)
        print(f"error: {problem}", file=sys.stderr)

    rows: List[Dict[str, Any]] = []
    finished = 0  # inputs done, for the line a Ctrl-C prints
    measurements: Optional[Measurements] = None  # those in progress, written on a Ctrl-C too
    try:
        for video in videos:
            folder = out / names[video]
            measurements = measurements_in(folder)
            try:
                with tqdm(desc=video.name, unit="frame", disable=None) as progress:  # its total: from the video
                    summary = predict_video(predictor, video, folder, args.every, args.fps, args.min_gap,
                                            args.skip_existing, measurements, progress)
            except DatasetError as error:
                fail(str(error))
            except OSError as error:
                fail(unwritable(error, video, out))
            else:
                for problem in summary["errors"]:  # frames lost, a stream cut short
                    fail(problem)
                print(f"{video}: {summary['frames_processed']} frames, {summary['cracked_frames']} cracked in "
                      f"{len(summary['segments'])} segment(s), {100 * summary['decoded_share']:.1f}% of tiles "
                      f"decoded, {summary['frames_per_second']} frames/s; frames.csv, segments.csv, video.json "
                      f"in {folder}")
                if measurements is not None:
                    _write_measurements(args, predictor, measurements)
            measurements = None
            finished += 1
        if paths:
            measurements = measurements_in(out)
            with tqdm(total=len(paths), desc="predict", unit="image", disable=None) as progress:
                rows = predict_files(predictor, paths, out, progress, names=[names[path] for path in paths],
                                     summary=summary_name(shard_spec), skip_existing=args.skip_existing,
                                     max_pixels=args.max_pixels or None, measurements=measurements)
            if measurements is not None:
                _write_measurements(args, predictor, measurements)
                measurements = None
    except KeyboardInterrupt:
        if paths and finished == len(videos):  # among the images: their summary rows say how far
            finished += len(read_summary(out / summary_name(shard_spec)))
        if measurements is not None and measurements.images:  # the tables match the masks written so far
            _write_measurements(args, predictor, measurements)
        print(f"interrupted after {finished} of {total} inputs; --skip-existing resumes", file=sys.stderr)
        return 130
    failed = [row for row in rows if row["status"] != "ok"]
    cracked = sum(int(row.get("cracked") or 0) for row in rows)
    if paths:
        print(f"{len(rows) - len(failed)} images: {cracked} with cracks; masks, overlays and "
              f"{summary_name(shard_spec)} in {out} (mask threshold {predictor.mask_threshold:.2f})")
    if failed or problems:
        print(f"error: {len(failed) + len(problems)} input(s) failed", file=sys.stderr)
        return 1
    return 0


def _write_measurements(args: argparse.Namespace, predictor: Predictor, measurements: Measurements) -> None:
    """cracks.csv, images.csv, cracks.json and, with --report, report.html, into the measurements' folder."""
    written = [path.name for path in measurements.write()]
    if args.report:
        model = summary_model(args, predictor)
        source = (f"the shipped model {model['shipped']}" if "shipped" in model else
                  f"exported model {model['onnx']}" if "onnx" in model else
                  f"checkpoints {model['segmentation']} and {model['classification']}")
        scale = (f"{args.mm_per_px:g} mm per pixel" if args.mm_per_px else "none (lengths in pixels)")
        if args.scale_csv:
            scale = f"each photo's from {args.scale_csv}; the others: {scale}"
        settings = {"inputs": ", ".join(args.inputs), "model": f"{source} (U-Net width {model['width']}, "
                    f"{model['crop']} px tiles, {predictor.engine}{', int8 gate head' if predictor.int8_head else ''})",
                    "tiles": f"{predictor.tile} px, overlapping by {predictor.overlap} px; a tile's mask is decoded "
                             f"when the gate's crack probability exceeds {predictor.model.threshold:.2f}",
                    "crack pixels": f"crack probability of at least {predictor.mask_threshold:.2f}",
                    "a crack": f"at least {predictor.min_area} px in area and {predictor.min_length:g} px long; "
                               f"pieces across gaps up to {predictor.join_gap:g} px joined",
                    "scale": scale}
        written.append(write_report(measurements, settings, measurements.out_dir / "report.html").name)
    print(f"measured {sum(len(entry.cracks) for entry in measurements.images)} cracks: {', '.join(written)} in "
          f"{measurements.out_dir}")


def summary_model(args: argparse.Namespace, predictor: Predictor) -> Dict[str, Any]:
    """Which model ran: its checkpoints or the shipped weights, and its size."""
    source = ({"segmentation": args.segmentation_checkpoint, "classification": args.classification_checkpoint}
              if args.classification_checkpoint else {"onnx": args.onnx} if args.onnx
              else {"shipped": pretrained.WEIGHTS.name})
    return {**source, "width": predictor.model.width, "crop": predictor.model.crop_size, "engine": predictor.engine,
            "int8_head": predictor.int8_head}


def run_measure(args: argparse.Namespace) -> int:
    out = output_folder(args.out)
    names, problems = expand_inputs(args.masks, out)
    for problem in problems:
        print(f"error: {problem}", file=sys.stderr)
    if not names:
        print("error: no masks to measure", file=sys.stderr)
        return 1
    measurements = Measurements(out, args.mm_per_px, args.min_area, length_px(args.min_length, args.mm_per_px, 0),
                                grading(args), args.axis, join_gap_px(args), read_scales(args.scale_csv))
    failed = 0
    try:
        for path, name in tqdm(list(names.items()), desc="measure", unit="mask", disable=None):
            try:
                measurements.add(str(path), name, load_mask(path, refuse_photos=True)[0].numpy().astype(bool))
            except DatasetError as error:
                print(f"error: {error}", file=sys.stderr)
                failed += 1
            except OSError as error:
                print(f"error: {unwritable(error, path, out)}", file=sys.stderr)
                failed += 1
    except KeyboardInterrupt:
        written = ", ".join(path.name for path in measurements.write())
        print(f"interrupted after {len(measurements.images) + failed} of {len(names)} masks; {written} hold the "
              f"{len(measurements.images)} measured", file=sys.stderr)
        return 130
    written = ", ".join(path.name for path in measurements.write())
    cracks = sum(len(entry.cracks) for entry in measurements.images)
    print(f"{len(measurements.images)} masks, {cracks} cracks: {written} and overlays in {out}")
    return 1 if failed or problems else 0


def run_negatives(args: argparse.Namespace) -> int:
    if args.mine and Path(args.mine).exists() and any(Path(args.mine).iterdir()):
        raise DatasetError(f"{args.mine}: not empty; --mine writes only into an empty or missing folder")
    predictor = _predictor(args)
    with tqdm(desc="crack-free material", unit="photo", disable=None) as progress:  # stderr: stdout is the JSON
        results = scan_all(predictor, [Path(source) for source in args.sources], args.split,
                           Path(args.mine) if args.mine else None, progress)
    text = json.dumps(results, indent=1)
    print(text)
    if args.json:
        Path(args.json).write_text(text + "\n")
    return 0


def run_merge(args: argparse.Namespace) -> int:
    path, count = merge_summaries(Path(args.out))
    print(f"wrote {path} ({count} rows)")
    return 0


def run_bench(args: argparse.Namespace) -> int:
    device = torch.device(resolve_device(args.device))
    report: Dict[str, Any] = {
        "date": time.strftime("%Y-%m-%d %H:%M"), "command": "crackseg " + " ".join(sys.argv[1:]),
        "machine": benchmark.machine(),
        "config": {"width": args.width, "crop": args.crop, "batch": args.batch, "rounds": args.rounds,
                   "device": str(device), "precision": args.precision}}
    report["flops"] = benchmark.flops(UNetClassifier(args.width, args.crop).eval(), args.crop)
    report["inference"] = benchmark.inference(args.width, args.crop, args.batch, args.rounds, device, args.precision,
                                              onnx=not args.no_onnx)
    report["inference"]["gated_0_share_of_ideal"] = (report["inference"]["gated_over_fast"]["0"]
                                                     / report["flops"]["ideal_gated_speedup_at_0"])
    if not args.no_training:
        report["training"] = benchmark.training(args.width, args.crop, args.train_images, args.train_steps,
                                                args.rounds, device, args.precision)
    if args.video:
        report["video"] = benchmark.video_stream(args.width, args.crop, args.rounds, device, args.precision)
    if args.agreement_images:
        paths, problems = expand_inputs([args.agreement_images])
        if problems:
            raise DatasetError("; ".join(problems))
        args.gate_threshold = None
        images = lambda: ((path, load_image(path)) for path in paths)  # noqa: E731
        report["agreement"] = {"images": len(paths), **benchmark.agreement(load_model(args), device, args.precision,
                                                                          images, onnx=not args.no_onnx)}
    text = json.dumps(report, indent=2)
    print(text)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(text + "\n")
    return 0


def run_pack(args: argparse.Namespace) -> int:
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


def run_export(args: argparse.Namespace) -> int:
    from crackseg.inference.export import export_onnx  # imports onnx machinery only when asked

    sidecar = export_onnx(load_model(args), Path(args.out))
    print(f"wrote gate.onnx, decoder.onnx and model.json to {args.out} (tiles of {sidecar['crop']} px, gate "
          f"threshold {sidecar['gate_threshold']}, mask threshold {sidecar['mask_threshold']})")
    return 0


def run_check_data(args: argparse.Namespace) -> int:
    crop = args.crop or build_config("segmentation", {}).crop
    reports = check_data(Path(args.root), crop, args.splits)
    for report in reports.values():
        for finding in report.findings:
            print(finding, file=sys.stderr if finding.level == "error" else sys.stdout)
    print(f"{args.root} (crop {crop} px):\n{summary(reports)}")
    return 1 if errors(reports) else 0


def run_synthesize(args: argparse.Namespace) -> int:
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


def run_curves(args: argparse.Namespace) -> int:
    for log_dir in args.log_dirs:
        print(f"wrote {plot_training_curves(Path(log_dir))}")
    return 0


def main(argv: Optional[List[str]] = None) -> int:
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
