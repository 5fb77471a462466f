"""`crackseg evaluate`."""
import argparse
from pathlib import Path
from typing import Any, Dict

from tqdm import tqdm

from crackseg.cli.common import min_length_argument, model_arguments, predictor_from_args, summary_model
from crackseg.data.datasets import MIN_CRACK_FRACTION, read_pair
from crackseg.errors import CheckpointError, DatasetError
from crackseg.files.checkpoints import update_checkpoint
from crackseg.files.images import pair_files
from crackseg.files.writing import write_json
from crackseg.outputs.plots import plot_f1_threshold, plot_precision_recall, plot_prediction_grid
from crackseg.pipelines.evaluation import evaluate_split, floor_probs, pick_examples, write_rows


def add_parser(commands: Any) -> None:
    """Add `crackseg evaluate` to the subcommands."""
    evaluate = commands.add_parser(
        "evaluate", help="score the model on labelled images at full resolution",
        description="Score whole labelled images: the U-Net on the whole (padded) image and the gated, tiled "
                    "model; Dice, IoU, precision, recall at the mask threshold, ODS and OIS over thresholds "
                    "0.01..0.99, and the gate's decisions per tile and per image. Writes metrics.json, "
                    "curves.json (scores at every threshold), per_image.csv, pr_curve.png, f1_threshold.png "
                    "and predictions.png to --out.")
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
    model_arguments(evaluate)
    min_length_argument(evaluate)
    evaluate.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    """`crackseg evaluate` with its parsed flags; returns the exit code."""
    if (args.images is None) != (args.masks is None):
        raise DatasetError("--images and --masks go together")
    if args.save_threshold and not args.classification_checkpoint:
        raise CheckpointError("--save-threshold stores the threshold in --classification-checkpoint; the shipped "
                              "model is read-only (pass --mask-threshold to predict instead)")
    images = Path(args.images) if args.images else Path(args.data_root) / args.split / "images"
    masks = Path(args.masks) if args.masks else Path(args.data_root) / args.split / "masks"
    pairs = pair_files(images, masks)
    predictor = None if args.floor else predictor_from_args(args)
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
    write_json(out / "curves.json", result["curves"])
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
    print(f"wrote metrics.json, curves.json, per_image.csv, pr_curve.png, f1_threshold.png, predictions.png to {out}")
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
