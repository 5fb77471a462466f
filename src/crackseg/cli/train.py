"""Command lines of the two training stages: `python segmentation.py` / `python classification.py` (thin
wrappers) and `crackseg train segmentation|classification` take the same flags."""
import argparse
import logging
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple

from crackseg.data.checks import check_data, check_negatives, errors, summary
from crackseg.data.datasets import Source, source_names
from crackseg.data.synthetic import ensure_dataset
from crackseg.data.transforms import SAMPLINGS
from crackseg.files.checkpoints import CheckpointError, load_checkpoint
from crackseg.files.images import DatasetError
from crackseg.files.pretrained import load_pretrained
from crackseg.training.config import (
    CPU,
    CPU_STAGES,
    THESIS,
    ConfigError,
    TrainConfig,
    best_checkpoint,
    build_config,
    default_log_dir,
)

SYNTHETIC_COUNTS = {"train": 600, "valid": 150}
MAX_SHOWN = 20  # warnings and notes printed before training
SHOWN = ("preset", "device", "epochs", "batch_size", "lr", "milestones", "gamma", "width", "crop", "skip_dropout",
         "freeze_encoder", "sampling", "markings", "joints", "seed", "workers", "amp", "data_root", "data_weights",
         "negatives", "log_dir")
DEFAULT_ROOT = "dataset"
# stage 2 takes these from stage 1 unless given
INHERITED = ("data_root", "data_weights", "negatives", "sampling", "markings", "joints")


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


def _segmentation_start(args: Dict[str, Any]) -> Dict[str, Any]:
    """--init: the width of the weights it names; returns them as {"init": payload}."""
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
    args.update({key: stage_one["config"][key] for key in INHERITED
                 if args.get(key) is None and key in stage_one["config"]})
    return {"stage_one": stage_one}


@dataclass(frozen=True)
class Stage:
    """What is particular to a training stage's command line: its description, its own flags, what it starts
    from (`start` fills parsed flags in place before the preset resolves the rest, and returns the checkpoints it
    read, so that training need not read them again) and a hint for checkpoint errors. The training side of a
    stage is its runner (`training.RUNNERS`)."""

    name: str
    description: str
    add_flags: Callable[[argparse.ArgumentParser], None]
    start: Callable[[Dict[str, Any]], Dict[str, Any]]
    checkpoint_hint: Optional[str] = None


STAGES = {stage.name: stage for stage in (
    Stage("segmentation", "Stage 1: train the U-Net to segment cracks (loss 0.9*BCE + 0.1*(1-Dice)).",
          _segmentation_flags, _segmentation_start),
    Stage("classification", "Stage 2: freeze stage 1's encoder and train the crack / no-crack head (BCE).",
          _classification_flags, _classification_start,
          "run `python segmentation.py` first, or pass --segmentation-checkpoint"),
)}


def build_parser(stage: str) -> argparse.ArgumentParser:
    """The command line of `python STAGE.py`: flags for every hyperparameter; unset ones come from the preset."""
    parser = argparse.ArgumentParser(prog=f"{stage}.py", **parser_texts(stage))
    add_training_arguments(parser, stage)
    return parser


def parser_texts(stage: str) -> Dict[str, str]:
    """The description and epilog of a stage's command line, wherever it is built."""
    return {"description": STAGES[stage].description,
            "epilog": f"Presets: thesis = SPEC.md's schedule {THESIS}; cpu = {CPU} with {CPU_STAGES[stage]}. auto "
                      "(default) picks thesis when a GPU is visible and cpu otherwise; explicit flags override it. "
                      "Flags without a default shown take the preset's value."}


def add_training_arguments(parser: argparse.ArgumentParser, stage: str) -> None:
    """Add a stage's training flags to `parser` (`python STAGE.py` and `crackseg train STAGE` share them)."""
    parser.add_argument("--preset", choices=["auto", "thesis", "cpu"], default=None, help="schedule preset [auto]")
    parser.add_argument("--data-root", nargs="+", action="extend", default=None, metavar="DIR",
                        help="folder with {train,valid}/{images,masks}; repeat it (or list several) to train on "
                             "several sets at once, with metrics per set and overall. The synthetic default is "
                             "generated into ./dataset when it is missing or empty, and nowhere else unless "
                             "--synthetic is given [dataset; stage 2: stage 1's]")
    parser.add_argument("--data-weights", type=int, nargs="+", default=None, metavar="N",
                        help="one per --data-root: how many times each training image of that root is used an "
                             "epoch, to weigh a small or important set [1 each]")
    parser.add_argument("--negatives", nargs="+", action="extend", default=None, metavar="DIR",
                        help="folder of crack-free photos (no masks needed), added with empty masks; repeatable. "
                             "Every 5th file in name order is used for validation, the rest for training")
    parser.add_argument("--synthetic", action="store_true", default=None,
                        help="generate the synthetic default into --data-root if it is missing or empty")
    parser.add_argument("--log-dir", default=None, help=f"where logs and checkpoints go [{default_log_dir(stage)}]")
    parser.add_argument("--epochs", type=int, default=None, help="number of epochs")
    parser.add_argument("--batch-size", type=int, default=None, help="images per batch (5 crops each)")
    parser.add_argument("--lr", type=float, default=None, help="Adam learning rate")
    parser.add_argument("--milestones", type=int, nargs="+", default=None,
                        help="epochs after which MultiStepLR multiplies the learning rate by --gamma")
    parser.add_argument("--gamma", type=float, default=None, help="learning-rate factor at each milestone")
    STAGES[stage].add_flags(parser)
    parser.add_argument("--sampling", choices=SAMPLINGS, default=None,
                        help="training crops: 'window' = FiveCrop of a random window of 2x the crop (every region "
                             "of a large photo is seen across epochs), 'five' = FiveCrop of the whole image, as "
                             "the original [five; stage 2: stage 1's]")
    parser.add_argument("--markings", type=float, default=None, metavar="P",
                        help="share of training images (or windows) painted with a synthetic road marking, "
                             "with no crack labelled under it, so that marking edges are not taken for cracks "
                             "[0; stage 2: stage 1's]")
    parser.add_argument("--joints", type=float, default=None, metavar="P",
                        help="share of training images (or windows) cut by a synthetic joint (a dead-straight "
                             "dark line, as a saw cut in concrete), labelled no crack, so that joints are not taken "
                             "for cracks [0; stage 2: stage 1's]")
    parser.add_argument("--seed", type=int, default=None, help="global seed (data order, augmentation, init)")
    parser.add_argument("--workers", type=int, default=None, help="data loader worker processes [0]")
    parser.add_argument("--device", default=None, help="auto, cpu, cuda or cuda:N [auto]")
    parser.add_argument("--amp", action="store_true", default=None,
                        help="mixed precision: fp16 on CUDA, bf16 on CPUs with native bf16 support")
    parser.add_argument("--skip-bad", action="store_true", default=None,
                        help="train on the good pairs when the data check finds bad ones (listed) instead of stopping")
    parser.add_argument("--overwrite", action="store_true", default=None,
                        help="replace a previous run in --log-dir (without it, an occupied --log-dir is an error)")
    parser.add_argument("--resume", action="store_true", default=None,
                        help="continue the run in --log-dir after its last complete epoch, with its stored "
                             "settings (--epochs and --milestones may change the rest of its schedule)")
    scale = parser.add_argument_group("several processes or machines (distributed data parallel)")
    scale.add_argument("--processes", type=int, default=None,
                       help="training processes on this machine: one per GPU, or CPU processes (gloo) [1]")
    scale.add_argument("--nodes", type=int, default=None, help="number of machines [1]")
    scale.add_argument("--node-rank", type=int, default=None, help="this machine's index, 0 .. nodes-1 [0]")
    scale.add_argument("--master-addr", default=None, help="address of machine 0 [127.0.0.1]")
    scale.add_argument("--master-port", type=int, default=None, help="free port on machine 0 [2112]")


def resolve(stage: str, args: Dict[str, Any]) -> Tuple[TrainConfig, Dict[str, Any]]:
    """Parsed flags into a config, and the checkpoints read on the way (for `training.train`, so each is read
    once): stage 2 takes width and crop from stage 1's checkpoint ("stage_one"); --resume takes the interrupted
    run's stored settings ("last"), except the epochs, the device and the process layout if given."""
    args = dict(args)
    if args["resume"]:
        log_dir = Path(args["log_dir"] or default_log_dir(stage))
        last = load_checkpoint(log_dir / "checkpoints" / "last.pth", stage=stage)
        stored = dict(last["config"])
        changeable = ("epochs", "milestones", "device", "workers", "processes", "nodes", "node_rank", "master_addr",
                      "master_port")
        stored.update({key: args[key] for key in changeable if args.get(key) is not None})
        return build_config(stage, {**stored, "resume": True}), {"last": last}
    loaded = STAGES[stage].start(args)
    return build_config(stage, args), loaded


def check_log_dir(config: TrainConfig) -> None:
    """A fresh run never replaces another run's checkpoints and logs without being told to."""
    log_dir = Path(config.log_dir)
    previous = [path for path in (log_dir / "checkpoints" / "last.pth", log_dir / "checkpoints" / "best.pth",
                                  log_dir / "csv" / "valid.csv") if path.is_file()]
    if previous and not config.resume and not config.overwrite:
        raise DatasetError(f"{log_dir} already holds a run ({previous[0].relative_to(log_dir)}): pass --resume to "
                           "continue it, --overwrite to replace it, or another --log-dir")


def prepare_data(config: TrainConfig) -> None:
    """Generate the synthetic default where it belongs (the default root, or any root with --synthetic); any
    other root must exist."""
    for root in config.data_root:
        if config.synthetic or root == DEFAULT_ROOT:
            ensure_dataset(root, config.seed, 2 * config.crop, SYNTHETIC_COUNTS)
        elif not Path(root).is_dir():
            raise DatasetError(f"{root}: no such folder (--data-root); pass --synthetic to generate the synthetic "
                               "dataset there")
    for folder in config.negatives:
        if not Path(folder).is_dir():
            raise DatasetError(f"{folder}: no such folder (--negatives)")


def checked_sources(config: TrainConfig) -> List[Source]:
    """Check every data root and folder of negatives file by file (see `crackseg check-data`); print what was
    found; return the sources with their good pairs. Errors stop the run, unless --skip-bad is given and every
    data root keeps some good pairs in each split."""
    folders = list(config.data_root) + list(config.negatives)
    weights = list(config.data_weights) or [1] * len(config.data_root)
    sources, problems = [], []
    for index, (name, folder) in enumerate(zip(source_names(folders), folders)):
        negatives = index >= len(config.data_root)
        reports = check_negatives(Path(folder), config.crop) if negatives else check_data(Path(folder), config.crop)
        findings = [finding for report in reports.values() for finding in report.findings]
        found = errors(reports)
        kind = "crack-free photos" if negatives else "data"
        print(f"check of {kind} in {folder}:\n{summary(reports)}")
        shown = [f for f in findings if f.level != "error"][:MAX_SHOWN]
        for finding in shown:
            print(f"  {finding}")
        if len(findings) - len(found) > len(shown):
            print(f"  ... and {len(findings) - len(found) - len(shown)} more: crackseg check-data {folder}")
        if found and not negatives and not all(report.pairs for report in reports.values()):
            found.append(f"{folder}: a split has no usable pair left")
        problems += found
        sources.append(Source(name, {split: report.pairs for split, report in reports.items()},
                              1 if negatives else weights[index]))
    if problems:
        lines = "\n".join(f"  {finding}" for finding in problems)
        if not config.skip_bad or any(isinstance(problem, str) for problem in problems):
            raise DatasetError(f"{len(problems)} problem(s) in the data:\n{lines}\nfix them, or pass --skip-bad to "
                               "train on the good pairs")
        print(f"--skip-bad: skipping {len(problems)} bad file(s):\n{lines}")
    return sources


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


def run(stage: str, argv: Optional[List[str]] = None) -> int:
    """Entry point of `python STAGE.py`: parse its flags, then `train_stage`."""
    return train_stage(stage, vars(build_parser(stage).parse_args(argv)))


def train_stage(stage: str, args: Dict[str, Any]) -> int:
    """Resolve parsed flags, make sure there is data, train, print the best validation metrics; the exit code."""
    from crackseg.training.runner import TrainingDiverged, train  # imports Catalyst (slow): only after the flags parse

    show_messages()
    try:
        config, loaded = resolve(stage, args)
        print(f"{stage}: " + ", ".join(f"{key}={getattr(config, key)}" for key in SHOWN), flush=True)
        check_log_dir(config)
        prepare_data(config)
        result = train(config, checked_sources(config), loaded)
    except (DatasetError, CheckpointError, ConfigError, TrainingDiverged) as error:
        print(f"error: {error}", file=sys.stderr)
        if isinstance(error, CheckpointError) and STAGES[stage].checkpoint_hint:
            print(f"hint: {STAGES[stage].checkpoint_hint}", file=sys.stderr)
        return 2
    metrics = ", ".join(f"{key}={value:.4f}" for key, value in sorted(result["metrics"].items()))
    print(f"\n{stage} done in {result['seconds'] / 60:.1f} min; best epoch {result['epoch']} "
          f"(lowest valid loss), saved to {result['best']}\nvalid: {metrics}\n"
          f"training curves: {result['curves']}", flush=True)
    return 0
