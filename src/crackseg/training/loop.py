"""A training run of one stage: its data loaders, its engine and precision, the Catalyst run, validation."""
import logging
import sys
import time
import warnings
from pathlib import Path
from typing import Any, Dict, List, Optional

import torch
from accelerate.state import AcceleratorState
from catalyst import dl
from torch import nn
from torch.utils.data import DataLoader

from crackseg.data.datasets import CracksDataset, Source, collate_crops, find_sources, source_samples
from crackseg.data.transforms import train_transform, valid_transform
from crackseg.errors import DatasetError
from crackseg.files.checkpoints import load_checkpoint
from crackseg.inference.acceleration import training_layout
from crackseg.outputs.plots import plot_training_curves
from crackseg.training.config import TrainConfig, mixed_precision
from crackseg.training.runner import SplitTotals, runner_class

log = logging.getLogger(__name__)

def config_sources(config: TrainConfig) -> List[Source]:
    """The data sources of a config: its data roots, then its folders of crack-free photos (not checked)."""
    return find_sources(config.data_root, config.data_weights, config.negatives)


def make_loaders(config: TrainConfig, sources: Optional[List[Source]] = None) -> Dict[str, DataLoader]:
    """Train (shuffled, augmented, sources repeated by weight) and valid (FiveCrop only) loaders over the data
    sources (default: the config's, unchecked).

    The shuffle order comes from the global RNG, which Catalyst seeds at every loader start from the seed and
    the epoch: epoch k draws the same order and augmentations in a resumed run as in an uninterrupted one.
    """
    sources = sources if sources is not None else config_sources(config)
    transforms = {"train": train_transform(config.crop, config.sampling, config.markings, config.joints, config.zoom),
                  "valid": valid_transform(config.crop)}
    datasets = {}
    for split, transform in transforms.items():
        samples, groups = source_samples(sources, split)
        datasets[split] = CracksDataset(None, split, transform, pairs=samples, groups=groups)
    # Loader workers are started afresh every epoch (not persistent): their random streams then come from the
    # global RNG as seeded for that epoch, so a resumed run augments exactly as an uninterrupted one.
    common = dict(num_workers=config.workers, collate_fn=collate_crops, pin_memory=config.device.startswith("cuda"))
    # Validation shards are not padded (see CrackRunner.on_loader_start), so each of several processes needs a
    # batch of its own: smaller batches where the split is small (the metrics are sums, the same in any batches).
    processes = config.processes * config.nodes
    valid = len(datasets["valid"])
    if valid < processes:
        raise DatasetError(f"the valid split has {valid} image(s) for {processes} processes: each process needs "
                           f"one (use --processes {valid} or fewer)")
    return {"train": DataLoader(datasets["train"], shuffle=True, batch_size=config.batch_size, **common),
            "valid": DataLoader(datasets["valid"], shuffle=False,
                                batch_size=min(config.batch_size, valid // processes), **common)}


def make_engine(config: TrainConfig, precision: str) -> dl.Engine:
    """One process on CPU or GPU, or Catalyst's distributed data-parallel engine for --processes/--nodes
    (gloo on CPU, NCCL on GPU), with `precision` from `mixed_precision`."""
    # accelerate keeps one state per process and refuses an engine whose precision differs from the first one's
    # (say, stage 1 with --amp and stage 2 without, in one Python session): every run starts from a clean state.
    AcceleratorState._reset_state(reset_partial_state=True)
    cuda = config.device.startswith("cuda")
    if config.processes * config.nodes > 1:
        return dl.DistributedDataParallelEngine(
            address=config.master_addr, port=config.master_port, world_size=config.processes * config.nodes,
            workers_dist_rank=config.node_rank * config.processes, num_node_workers=config.processes,
            process_group_kwargs={"backend": "nccl" if cuda else "gloo"}, mixed_precision=precision, cpu=not cuda)
    if cuda:
        return dl.GPUEngine(mixed_precision=precision)
    return dl.CPUEngine(mixed_precision=precision)


def build_model(config: TrainConfig, loaded: Optional[Dict[str, Any]] = None) -> nn.Module:
    """The network a stage trains (see each runner's `build_model`); `loaded`: checkpoints already read."""
    return runner_class(config.stage).build_model(config, loaded)


@torch.no_grad()
def validate(config: TrainConfig, checkpoint: Dict[str, Any]) -> Dict[str, float]:
    """The validation metrics of a checkpoint in this one process, computed as training computes them."""
    sources = config_sources(config)
    runner = runner_class(config.stage)(config, tuple(source.name for source in sources))
    model = build_model(config)
    model.load_state_dict(checkpoint["state"])
    model.eval()
    totals = SplitTotals(runner.parts, runner.sources)
    for batch in make_loaders(config, sources)["valid"]:
        _, values, counts = runner.evaluate_batch(model, batch)
        totals.add(values, len(batch["images"]), counts)
    return totals.metrics(runner.scores)


def train(config: TrainConfig, sources: Optional[List[Source]] = None,
          loaded: Optional[Dict[str, Any]] = None) -> Dict[str, object]:
    """Train one stage on the config's data sources (or the given, checked ones), or resume it from `last.pth`
    with config.resume; returns {"best": path, "epoch": best
    epoch, "metrics": its valid metrics, "seconds", "curves": the PNG of the training curves}. `loaded` holds
    checkpoints the caller has read already (`cli.resolve`: "stage_one", "init", "last"), so that each file is
    read once; it is emptied.

    With several processes the workers train copies of the model; the results are read back from the
    checkpoints they wrote.
    """
    torch.manual_seed(config.seed)
    log_dir = Path(config.log_dir)
    loaded = loaded if loaded is not None else {}
    resume_epoch = 0
    if config.resume:
        if loaded.get("last") is None:
            loaded["last"] = load_checkpoint(log_dir / "checkpoints" / "last.pth", stage=config.stage)
        resume_epoch = loaded["last"]["epoch"]
        log.info(f"resuming after epoch {resume_epoch} of {config.epochs} from {log_dir / 'checkpoints'}")
    model = build_model(config, loaded)
    precision = mixed_precision(config)
    model = training_layout(model, reduced=precision != "no")
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=config.lr)
    scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=list(config.milestones),
                                                     gamma=config.gamma)
    callbacks = [dl.BackwardCallback(metric_key="loss"), dl.OptimizerCallback(metric_key="loss"),
                 dl.SchedulerCallback(mode="epoch")]
    sources = sources if sources is not None else config_sources(config)
    # Spawned workers read last.pth themselves (see on_experiment_start); a single process uses it as read.
    single = config.processes * config.nodes == 1
    runner = runner_class(config.stage)(config, tuple(source.name for source in sources), resume_epoch,
                                   loaded.get("last") if single else None)
    loaded.clear()  # consumed: the runner holds last.pth until it has restored it, nothing else is kept
    # Catalyst's progress bar calls float() on the batch loss, which must keep its graph for BackwardCallback.
    warnings.filterwarnings("ignore", message="Converting a tensor with requires_grad=True to a scalar")
    started = time.perf_counter()
    runner.train(model=model, engine=make_engine(config, precision), loaders=make_loaders(config, sources),
                 optimizer=optimizer, scheduler=scheduler, callbacks=callbacks, num_epochs=config.epochs,
                 seed=config.seed, hparams=config.to_dict(), verbose=sys.stderr.isatty())
    best = load_checkpoint(log_dir / "checkpoints" / "best.pth", stage=config.stage)
    return {"best": log_dir / "checkpoints" / "best.pth", "epoch": best["epoch"], "metrics": best["metrics"],
            "seconds": time.perf_counter() - started, "curves": plot_training_curves(log_dir)}
