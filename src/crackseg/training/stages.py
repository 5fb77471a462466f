"""The two training stages, each defined in one place: what it trains (its runner), its own flags, what it
starts from, its schedule in the cpu preset, and where its logs go."""
import argparse
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Optional

from crackseg.errors import CheckpointError
from crackseg.files.checkpoints import load_checkpoint
from crackseg.files.pretrained import load_pretrained

# stage 2 takes these from stage 1 unless given
INHERITED = ("data_root", "data_weights", "negatives", "sampling", "markings", "joints", "zoom")


def default_log_dir(stage: str) -> str:
    """Where a stage's logs and checkpoints go unless --log-dir says otherwise."""
    return f"logs/{stage}"


def best_checkpoint(stage: str) -> str:
    """The checkpoint of a stage's best epoch in its default log folder."""
    return f"{default_log_dir(stage)}/checkpoints/best.pth"


def _segmentation_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--width", type=int, default=None, help="base width f of the U-Net")
    parser.add_argument("--crop", type=int, default=None, help="crop side in px (a multiple of 32)")
    parser.add_argument("--skip-dropout", type=float, default=None,
                        help="probability of zeroing a skip map per crop while training, so the bottleneck keeps "
                             "crack evidence for the gate [thesis 0, cpu 0.5]")
    parser.add_argument("--init", default=None, metavar="WEIGHTS",
                        help="start from these weights instead of random ones: 'pretrained' (the model shipped "
                             "with crackseg; its width is used) or a stage-1 checkpoint, to fine-tune")
    parser.add_argument("--freeze-encoder", action="store_true", default=None,
                        help="with --init: train the decoder alone. The encoder stays as it was, so a stage-2 "
                             "head trained on it (the shipped model's too) still gates the new decoder, and each "
                             "step costs about a third less")
    parser.add_argument("--bce-weight", type=float, default=None, metavar="A",
                        help="the loss is A*BCE + (1-A)*(1-Dice). Dice does not count the crack-free pixels, "
                             "so a lower A keeps many crack-free images (hard negatives) from pulling the crack "
                             "probabilities of every surface down [0.9, as the original]")
    parser.add_argument("--teacher", default=None, metavar="WEIGHTS",
                        help="distil: also train towards the masks of these weights ('pretrained' or a stage-1 "
                             "checkpoint) on the crops of the data roots --teacher-weights names, to keep what "
                             "they knew where they were good while fine-tuning on hard negatives")
    parser.add_argument("--teacher-weights", type=float, nargs="+", default=None, metavar="W",
                        help="one per --data-root: the weight of the teacher's loss on its crops (0: none); give "
                             "the hard negatives 0 [1 each]")



def _segmentation_start(args: Dict[str, Any]) -> Dict[str, Any]:
    """--init: the width of the weights it names; returns them as {"init": payload}. --teacher: its file is
    checked."""
    if args.get("teacher") not in (None, "pretrained"):  # a wrong file is named now, not at the first batch
        load_checkpoint(args["teacher"], stage="segmentation")
    if args.get("init") == "pretrained":
        payload = load_pretrained()
        shipped = payload["model"]["width"]
        if args["width"] not in (None, shipped):
            raise CheckpointError(f"--init pretrained: the shipped model has width {shipped}, not {args['width']}")
        args["width"] = shipped
        return {"init": payload}
    if args.get("init"):
        payload = load_checkpoint(args["init"], stage="segmentation")
        args["width"] = payload["model"]["width"] if args["width"] is None else args["width"]
        return {"init": payload}
    return {}



def _classification_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--segmentation-checkpoint", default=best_checkpoint("segmentation"),
                        help="stage 1's best checkpoint; width, crop and skip dropout are read from it "
                             f"[{best_checkpoint('segmentation')}]")



def _classification_start(args: Dict[str, Any]) -> Dict[str, Any]:
    """Stage 1's network settings and crop, and its data unless given; returns its checkpoint as
    {"stage_one": payload}."""
    stage_one = load_checkpoint(args["segmentation_checkpoint"], stage="segmentation")
    args.update(width=stage_one["model"]["width"], skip_dropout=stage_one["model"]["skip_dropout"],
                crop=stage_one["config"]["crop"])  # the U-Net takes any size: the crop is a training setting
    inherited = {key: stage_one["config"][key] for key in INHERITED
                 if args.get(key) is None and key in stage_one["config"]}
    if "zoom" in inherited and inherited.get("sampling", args.get("sampling")) != "window":
        del inherited["zoom"]  # stage 2 asked for FiveCrop of whole photos: stage 1's zoom does not apply
    args.update(inherited)
    return {"stage_one": stage_one}



@dataclass(frozen=True)
class Stage:
    """Everything particular to a training stage.

    Attributes:
        name: "segmentation" or "classification".
        description: one line, for --help.
        runner: the name of its Catalyst runner class in `crackseg.training.runner` (imported with Catalyst,
            only when training starts).
        add_flags: adds the stage's own flags to a parser.
        start: fills parsed flags in place from what the stage starts from (the weights of --init, stage 1's
            checkpoint) before the preset resolves the rest; returns the checkpoints it read, so that training
            need not read them again.
        cpu_schedule: epochs and milestones of the cpu preset.
        checkpoint_hint: what to do when the checkpoint it starts from is missing.
    """

    name: str
    description: str
    runner: str
    add_flags: Callable[[argparse.ArgumentParser], None]
    start: Callable[[Dict[str, Any]], Dict[str, Any]]
    cpu_schedule: Dict[str, Any] = field(default_factory=dict)
    checkpoint_hint: Optional[str] = None


# The cpu preset's epochs keep the embedded default within minutes on a 2-core CPU in fp32 (README, "Measured").
STAGES = {stage.name: stage for stage in (
    Stage("segmentation", "Stage 1: train the U-Net to segment cracks (loss 0.9*BCE + 0.1*(1-Dice); --bce-weight).",
          "SegmentationRunner", _segmentation_flags, _segmentation_start, dict(epochs=9, milestones=(7,))),
    Stage("classification", "Stage 2: freeze stage 1's encoder and train the crack / no-crack head (BCE).",
          "ClassificationRunner", _classification_flags, _classification_start, dict(epochs=4, milestones=(3,)),
          "run `python segmentation.py` first, or pass --segmentation-checkpoint"),
)}
