"""Command lines of the two training stages: `python segmentation.py` / `python classification.py` (thin
wrappers) and `crackseg train segmentation|classification` take the same flags."""
import argparse
import sys
from typing import Any, Dict, List, Optional

from crackseg.cli.common import show_messages
from crackseg.data.transforms import SAMPLINGS
from crackseg.errors import CheckpointError, ConfigError, DatasetError
from crackseg.training.config import CPU, THESIS, default_log_dir
from crackseg.training.launch import check_log_dir, checked_sources, prepare_data, resolve
from crackseg.training.stages import STAGES

SHOWN = ("preset", "device", "epochs", "batch_size", "lr", "milestones", "gamma", "width", "crop", "skip_dropout",
         "freeze_encoder", "sampling", "markings", "joints", "zoom", "bce_weight", "teacher", "teacher_weights", "seed",
         "workers", "amp", "data_root", "data_weights", "negatives", "log_dir")


def build_parser(stage: str) -> argparse.ArgumentParser:
    """The command line of `python STAGE.py`: flags for every hyperparameter; unset ones come from the preset."""
    parser = argparse.ArgumentParser(prog=f"{stage}.py", **parser_texts(stage))
    add_training_arguments(parser, stage)
    return parser


def parser_texts(stage: str) -> Dict[str, str]:
    """The description and epilog of a stage's command line, wherever it is built."""
    return {"description": STAGES[stage].description,
            "epilog": f"Presets: thesis = the original system's schedule {THESIS}; cpu = {CPU} with "
                      f"{STAGES[stage].cpu_schedule}. auto (default) picks thesis when a GPU is visible and cpu "
                      "otherwise; explicit flags override it. Flags without a default shown take the preset's value."}


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
    parser.add_argument("--zoom", type=float, nargs=2, default=None, metavar=("LOW", "HIGH"),
                        help="with --sampling window: cut each window at a random zoom between LOW and HIGH "
                             "(log-uniform; 2 = twice as close, cracks twice as wide), so the model learns cracks "
                             "at more widths than its data shows, e.g. the open cracks of close-ups [1 1: none; "
                             "stage 2: stage 1's]")
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


def add_parser(commands: Any) -> None:
    """`crackseg train STAGE`: the flags of `python STAGE.py`."""
    train = commands.add_parser(
        "train", help="train a stage: segmentation (the U-Net), then classification (the gate's head)",
        description="Train one stage, as `python segmentation.py` and `python classification.py` do, with the same "
                    "flags: `crackseg train segmentation && crackseg train classification` runs the whole pipeline "
                    "(on the synthetic default without --data-root).")
    stages = train.add_subparsers(dest="stage", required=True, metavar="STAGE")
    for stage in STAGES:
        stage_parser = stages.add_parser(stage, help=STAGES[stage].description, **parser_texts(stage))
        add_training_arguments(stage_parser, stage)
    train.set_defaults(handler=run_parsed)


def run_parsed(args: argparse.Namespace) -> int:
    """`crackseg train STAGE ...`, parsed."""
    flags = {key: value for key, value in vars(args).items() if key not in ("command", "stage", "handler")}
    return train_stage(args.stage, flags)


def run(stage: str, argv: Optional[List[str]] = None) -> int:
    """Entry point of `python STAGE.py`: parse its flags, then `train_stage`."""
    return train_stage(stage, vars(build_parser(stage).parse_args(argv)))


def train_stage(stage: str, args: Dict[str, Any]) -> int:
    """Resolve parsed flags, make sure there is data, train, print the best validation metrics; the exit code."""
    from crackseg.training.loop import train  # imports Catalyst (slow): only after the flags parse
    from crackseg.training.runner import TrainingDiverged

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
