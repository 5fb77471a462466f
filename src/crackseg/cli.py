"""Command lines of the two training stages (segmentation.py and classification.py are thin wrappers)."""
import argparse
import sys
from pathlib import Path
from typing import Dict, List, Optional, Tuple

from crackseg.checks import check_data, errors, summary
from crackseg.checkpoints import CheckpointError, load_checkpoint
from crackseg.config import CPU, CPU_STAGES, THESIS, TrainConfig, build_config
from crackseg.data import DatasetError
from crackseg.synthetic import ensure_dataset

SYNTHETIC_COUNTS = {"train": 600, "valid": 150}
MAX_SHOWN = 20  # warnings and notes printed before training
DESCRIPTIONS = {
    "segmentation": "Stage 1: train the U-Net to segment cracks (loss 0.9*BCE + 0.1*(1-Dice)).",
    "classification": "Stage 2: freeze stage 1's encoder and train the crack / no-crack head (BCE).",
}
SHOWN = ("preset", "device", "epochs", "batch_size", "lr", "milestones", "gamma", "width", "crop", "skip_dropout",
         "seed", "workers", "amp", "data_root", "log_dir")


def build_parser(stage: str) -> argparse.ArgumentParser:
    """Flags for every hyperparameter; unset ones come from the preset."""
    parser = argparse.ArgumentParser(
        prog=f"{stage}.py", description=DESCRIPTIONS[stage],
        epilog=f"Presets: thesis = SPEC.md's schedule {THESIS}; cpu = {CPU} with {CPU_STAGES[stage]}. "
               "auto (default) picks thesis when a GPU is visible and cpu otherwise; explicit flags override it. "
               "Flags without a default shown take the preset's value.")
    parser.add_argument("--preset", choices=["auto", "thesis", "cpu"], default=None, help="schedule preset [auto]")
    parser.add_argument("--data-root", default=None,
                        help="folder with {train,valid}/{images,masks}; the synthetic default is generated there if "
                             "the folder is missing or empty [dataset]")
    parser.add_argument("--log-dir", default=None, help=f"where logs and checkpoints go [logs/{stage}]")
    parser.add_argument("--epochs", type=int, default=None, help="number of epochs")
    parser.add_argument("--batch-size", type=int, default=None, help="images per batch (5 crops each)")
    parser.add_argument("--lr", type=float, default=None, help="Adam learning rate")
    parser.add_argument("--milestones", type=int, nargs="+", default=None,
                        help="epochs after which MultiStepLR multiplies the learning rate by --gamma")
    parser.add_argument("--gamma", type=float, default=None, help="learning-rate factor at each milestone")
    if stage == "segmentation":
        parser.add_argument("--width", type=int, default=None, help="base width f of the U-Net")
        parser.add_argument("--crop", type=int, default=None, help="crop side in px (a multiple of 32)")
        parser.add_argument("--skip-dropout", type=float, default=None,
                            help="probability of zeroing a skip map per crop while training, so the bottleneck "
                                 "keeps crack evidence for the gate [thesis 0, cpu 0.5]")
    else:
        parser.add_argument("--segmentation-checkpoint", default="logs/segmentation/checkpoints/best.pth",
                            help="stage 1's best checkpoint; width, crop and skip dropout are read from it "
                                 "[logs/segmentation/checkpoints/best.pth]")
    parser.add_argument("--seed", type=int, default=None, help="global seed (data order, augmentation, init)")
    parser.add_argument("--workers", type=int, default=None, help="data loader worker processes [0]")
    parser.add_argument("--device", default=None, help="auto, cpu, cuda or cuda:N [auto]")
    parser.add_argument("--amp", action="store_true", default=None,
                        help="mixed precision: fp16 on CUDA, bf16 on CPUs with native bf16 support")
    parser.add_argument("--skip-bad", action="store_true", default=None,
                        help="train on the good pairs when the data check finds bad ones (listed) instead of stopping")
    parser.add_argument("--resume", action="store_true", default=None,
                        help="continue the run in --log-dir after its last complete epoch, with its stored "
                             "settings (--epochs may extend it)")
    scale = parser.add_argument_group("several processes or machines (distributed data parallel)")
    scale.add_argument("--processes", type=int, default=None,
                       help="training processes on this machine: one per GPU, or CPU processes (gloo) [1]")
    scale.add_argument("--nodes", type=int, default=None, help="number of machines [1]")
    scale.add_argument("--node-rank", type=int, default=None, help="this machine's index, 0 .. nodes-1 [0]")
    scale.add_argument("--master-addr", default=None, help="address of machine 0 [127.0.0.1]")
    scale.add_argument("--master-port", type=int, default=None, help="free port on machine 0 [2112]")
    return parser


def resolve(stage: str, argv: Optional[List[str]]) -> TrainConfig:
    """Parse flags into a config; stage 2 takes width and crop from stage 1's checkpoint; --resume takes the
    interrupted run's stored settings, except the epochs, the device and the process layout if given."""
    args = vars(build_parser(stage).parse_args(argv))
    if args["resume"]:
        log_dir = Path(args["log_dir"] or f"logs/{stage}")
        stored = load_checkpoint(log_dir / "checkpoints" / "last.pth", stage=stage)["config"]
        changeable = ("epochs", "device", "workers", "processes", "nodes", "node_rank", "master_addr", "master_port")
        stored.update({key: args[key] for key in changeable if args.get(key) is not None})
        return build_config(stage, {**stored, "resume": True})
    if stage == "classification":
        checkpoint = load_checkpoint(args["segmentation_checkpoint"], stage="segmentation")
        args.update({key: checkpoint["config"][key] for key in ("width", "crop", "skip_dropout")})
    return build_config(stage, args)


def checked_pairs(config: TrainConfig) -> Dict[str, List[Tuple[Path, Path]]]:
    """Check the data root file by file (see `crackseg check-data`); print what was found; return the good pairs
    per split. Errors stop the run, unless --skip-bad is given and every split keeps some good pairs."""
    reports = check_data(Path(config.data_root), config.crop)
    findings = [finding for report in reports.values() for finding in report.findings]
    problems = errors(reports)
    print(f"data check of {config.data_root}:\n{summary(reports)}")
    shown = [f for f in findings if f.level != "error"][:MAX_SHOWN]
    for finding in shown:
        print(f"  {finding}")
    if len(findings) - len(problems) > len(shown):
        print(f"  ... and {len(findings) - len(problems) - len(shown)} more: crackseg check-data {config.data_root}")
    if problems:
        lines = "\n".join(f"  {finding}" for finding in problems)
        if not config.skip_bad or not all(report.pairs for report in reports.values()):
            raise DatasetError(f"{len(problems)} problem(s) in {config.data_root}:\n{lines}\nfix them, or pass "
                               "--skip-bad to train on the good pairs")
        print(f"--skip-bad: skipping {len(problems)} bad file(s):\n{lines}")
    return {split: report.pairs for split, report in reports.items()}


def run(stage: str, argv: Optional[List[str]] = None) -> int:
    """Entry point of a stage: resolve flags, make sure there is data, train, print the best validation metrics."""
    from crackseg.training import train  # imports Catalyst, which is slow: only after the flags parse

    try:
        config = resolve(stage, argv)
        print(f"{stage}: " + ", ".join(f"{key}={getattr(config, key)}" for key in SHOWN), flush=True)
        ensure_dataset(config.data_root, config.seed, 2 * config.crop, SYNTHETIC_COUNTS)
        result = train(config, checked_pairs(config))
    except (DatasetError, CheckpointError) as error:
        print(f"error: {error}", file=sys.stderr)
        if isinstance(error, CheckpointError) and stage == "classification":
            print("hint: run `python segmentation.py` first, or pass --segmentation-checkpoint", file=sys.stderr)
        return 2
    metrics = ", ".join(f"{key}={value:.4f}" for key, value in sorted(result["metrics"].items()))
    print(f"\n{stage} done in {result['seconds'] / 60:.1f} min; best epoch {result['epoch']} "
          f"(lowest valid loss), saved to {result['best']}\nvalid: {metrics}\n"
          f"training curves: {result['curves']}", flush=True)
    return 0
