"""Starting a training run: flags into a config, the log folder, the data made or checked file by file."""
from pathlib import Path
from typing import Any, Dict, List, Tuple

from crackseg.data.checks import check_data, check_negatives, errors, summary
from crackseg.data.datasets import Source, source_names
from crackseg.data.synthetic import ensure_dataset
from crackseg.errors import DatasetError
from crackseg.files.checkpoints import load_checkpoint
from crackseg.training.config import TrainConfig, build_config
from crackseg.training.stages import STAGES, default_log_dir

SYNTHETIC_COUNTS = {"train": 600, "valid": 150}

MAX_SHOWN = 20  # warnings and notes printed before training

DEFAULT_ROOT = "dataset"



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
