"""Catalyst training: one Runner holds the loop both stages share; each stage supplies its loss and metrics.

This is the only module that imports Catalyst.
"""
import logging
import sys
import time
import warnings
from collections import Counter
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple

import torch
import torch.nn.functional as F
from accelerate.data_loader import BatchSamplerShard
from accelerate.state import AcceleratorState
from catalyst import dl
from torch import nn
from torch.utils.data import DataLoader

from crackseg.analysis.metrics import binary_counts, classification_scores, segmentation_scores
from crackseg.data.datasets import CracksDataset, Source, collate_crops, find_sources, source_samples
from crackseg.data.transforms import train_transform, valid_transform
from crackseg.files.checkpoints import (
    CheckpointError,
    fingerprint,
    get_rng_state,
    load_checkpoint,
    save_checkpoint,
    set_rng_state,
    submodule_state,
)
from crackseg.files.images import DatasetError
from crackseg.files.pretrained import load_pretrained
from crackseg.inference.acceleration import cpu_has_native_bf16, training_layout
from crackseg.models import UNet, VGGEncoderClassifier
from crackseg.outputs.plots import plot_training_curves
from crackseg.training.config import TrainConfig
from crackseg.training.losses import BCEDiceLoss

log = logging.getLogger(__name__)

Batch = Dict[str, torch.Tensor]


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite; the checkpoints of the last complete epoch stay as they were."""


class SplitTotals:
    """Sums over a split (and, with several processes, over all of them) of the loss and its parts weighted
    by crops, and of the counts [tp, fp, fn, tn] per data source; reduced to metrics once."""

    def __init__(self, parts: Tuple[str, ...], sources: Tuple[str, ...] = ("",)):
        self.names = ("loss",) + parts
        self.sources = sources
        self.sums = torch.zeros(len(self.names) + 1, dtype=torch.float64)  # weighted values..., crops
        self.counts = torch.zeros(len(sources), 4, dtype=torch.long)

    def add(self, values: List[float], crops: int, counts: torch.Tensor) -> None:
        self.sums += torch.tensor([value * crops for value in values] + [crops], dtype=torch.float64)
        self.counts += counts

    def all_reduce(self) -> None:
        totals = torch.cat([self.sums, self.counts.double().flatten()])
        torch.distributed.all_reduce(totals)
        self.sums = totals[:len(self.sums)]
        self.counts = totals[len(self.sums):].round().long().view_as(self.counts)

    def metrics(self, scores: Callable[[torch.Tensor], Dict[str, float]]) -> Dict[str, float]:
        """The loss and its parts, the scores of all sources together and, with several sources, of each one
        (keyed "metric/source")."""
        crops = float(self.sums[-1])
        metrics = {**{name: float(total) / crops for name, total in zip(self.names, self.sums)},
                   **scores(self.counts.sum(0))}
        if len(self.sources) > 1:
            for source, counts in zip(self.sources, self.counts):
                metrics.update({f"{key}/{source}": value for key, value in scores(counts).items()})
        return metrics


def grouped_counts(predicted: torch.Tensor, target: torch.Tensor, groups: torch.Tensor, sources: int) -> torch.Tensor:
    """Counts [tp, fp, fn, tn] per source (sources, 4) of per-crop predictions and targets (N, ...) whose crops
    came from sources `groups` (N,)."""
    groups = groups.to(predicted.device)
    return torch.stack([binary_counts(predicted[groups == g], target[groups == g]) for g in range(sources)])


class CrackRunner(dl.Runner):
    """The shared batch loop. Subclasses define `stage`, `compute_loss`, `count` and `scores`.

    Per loader it sums the losses (weighted by crops) and the counts of `count`, and reduces them once at the
    loader's end, so metrics describe the whole split rather than an average of per-batch values.
    """

    stage = ""
    parts: Tuple[str, ...] = ()  # names of the loss parts compute_loss returns

    def __init__(self, config: TrainConfig, sources: Tuple[str, ...] = ("",), resume_epoch: int = 0,
                 resume_state: Optional[Dict[str, Any]] = None):
        super().__init__()
        self.config = config
        self.sources = sources  # names of the data sources, for per-source metrics
        self.resume_epoch = resume_epoch  # > 0: continue from `last.pth`, which recorded this epoch
        self.resume_state = resume_state  # last.pth as already read, in a single process; else read it here

    def get_loggers(self) -> Dict[str, Any]:
        """Made here, in the process that logs (rank 0), not pickled into it. CSV files keep the epochs a
        resumed run continues from and lose any later ones (a fresh run starts them empty)."""
        log_dir = Path(self.config.log_dir)
        return {"console": ReadableConsoleLogger(), "csv": ResumableCSVLogger(str(log_dir / "csv"), self.resume_epoch),
                "tensorboard": dl.TensorboardLogger(str(log_dir / "tensorboard"))}

    def compute_loss(self, logits: torch.Tensor, batch: Batch) -> Tuple[torch.Tensor, Dict[str, torch.Tensor]]:
        """(loss with graph, {part name: detached value})."""
        raise NotImplementedError

    def outcomes(self, logits: torch.Tensor, batch: Batch) -> Tuple[torch.Tensor, torch.Tensor]:
        """(predicted, target) booleans per crop (N, ...) at the 0.5 probability threshold (logit 0)."""
        raise NotImplementedError

    def scores(self, counts: torch.Tensor) -> Dict[str, float]:
        """Metrics of the split from its summed counts."""
        raise NotImplementedError

    def checkpoint_fields(self, state: Dict[str, torch.Tensor]) -> Dict[str, Any]:
        """Fields of this stage's checkpoints beside the model and the config."""
        return {}

    def on_experiment_start(self, runner: "dl.IRunner") -> None:
        super().on_experiment_start(runner)
        self.best_loss = float("inf")
        if self.resume_epoch:
            # Read here, in the process that trains. A state handed from the parent to spawned workers would
            # travel through shared memory, and the workers' Adam moments would then be one buffer that all
            # of them update.
            state = self.resume_state or load_checkpoint(Path(self.config.log_dir) / "checkpoints" / "last.pth",
                                                         stage=self.stage)
            self.resume_state = None  # its optimizer state is in the optimizer now
            self.engine.unwrap_model(self.model).load_state_dict(state["state"])
            self.optimizer.load_state_dict(state["optimizer"])
            self.scheduler.load_state_dict(state["scheduler"])
            self.scheduler.milestones = Counter(self.config.milestones)  # a resumed run may reschedule the rest
            set_rng_state(state["rng"])
            self.epoch_step, self.best_loss = state["epoch"], state["best_loss"]

    def evaluate_batch(self, model: nn.Module, batch: Batch) -> Tuple[torch.Tensor, List[float], torch.Tensor]:
        """(loss with graph, [loss, parts...] as floats, counts [tp, fp, fn, tn]) of one batch."""
        logits = model(batch["images"])
        loss, parts = self.compute_loss(logits, batch)
        values = [float(loss.detach())] + [float(parts[name]) for name in self.parts]
        predicted, target = self.outcomes(logits.detach(), batch)
        return loss, values, grouped_counts(predicted, target, batch["groups"], len(self.sources)).cpu()

    def on_loader_start(self, runner: "dl.IRunner") -> None:
        # With several processes, accelerate pads every shard to whole batches with samples from the split's
        # start: training needs that (the processes step together), validation would count those samples twice.
        shards = getattr(self.loader, "batch_sampler", None)
        if self.loader_key == "valid" and isinstance(shards, BatchSamplerShard):
            shards.even_batches = False  # every process gets a batch at least: see make_loaders
        super().on_loader_start(runner)  # seeds the global RNG from seed, rank and epoch: one process shuffles
        # With several processes, accelerate shuffles with a generator of its own, created fresh in every run and
        # shared by the processes; seeded here from seed and epoch, a resumed run shuffles as an uninterrupted one.
        generator = getattr(self.loader, "synchronized_generator", None)
        if generator is not None:
            generator.manual_seed(self.config.seed + self.epoch_step)
        self.totals = SplitTotals(self.parts, self.sources)

    def handle_batch(self, batch: Batch) -> None:
        loss, values, counts = self.evaluate_batch(self.model, batch)
        if not all(map(torch.isfinite, torch.tensor(values))):
            last = f"epoch {self.epoch_step - 1}" if self.epoch_step > 1 else "no epoch"
            raise TrainingDiverged(
                f"the {self.loader_key} loss became {values[0]} in epoch {self.epoch_step}, step "
                f"{self.loader_batch_step} of {self.loader_batch_len}: training stopped; the checkpoints of "
                f"{last} are kept in {Path(self.config.log_dir) / 'checkpoints'} (try a lower --lr)")
        self.batch_metrics["loss"] = loss  # BackwardCallback / OptimizerCallback read it here
        self.totals.add(values, len(batch["images"]), counts)

    def on_loader_end(self, runner: "dl.IRunner") -> None:
        if self.engine.num_processes > 1:  # every process saw its shard: add them all up
            self.totals.all_reduce()
        self.loader_metrics.update(self.totals.metrics(self.scores))
        self.loader_metrics["lr"] = self.optimizer.param_groups[0]["lr"]
        super().on_loader_end(runner)

    def on_epoch_end(self, runner: "dl.IRunner") -> None:
        """Log the epoch (Catalyst), then checkpoint it: `best.pth` when the validation loss improved, then
        `last.pth` with everything needed to resume. `last.pth` is written last, so an epoch it records is
        complete in the logs and in `best.pth`; each file is written atomically, so a kill never breaks one."""
        super().on_epoch_end(runner)
        if not self.engine.is_main_process:
            return
        metrics = dict(self.epoch_metrics["valid"])
        model = self.engine.unwrap_model(self.model)
        state = {key: value.detach().cpu().clone() for key, value in model.state_dict().items()}
        common = dict(stage=self.stage, state=state, model=model.settings(), config=self.config.to_dict(),
                      epoch=self.epoch_step, metrics=metrics, **self.checkpoint_fields(state))
        directory = Path(self.config.log_dir) / "checkpoints"
        if metrics["loss"] < self.best_loss:
            self.best_loss = metrics["loss"]
            save_checkpoint(directory / "best.pth", **common)
        save_checkpoint(directory / "last.pth", **common, optimizer=self.optimizer.state_dict(),
                        scheduler=self.scheduler.state_dict(), rng=get_rng_state(), best_loss=self.best_loss)


class SegmentationRunner(CrackRunner):
    """Stage 1: loss a*BCE + (1-a)*(1-Dice) on mask logits; Dice and IoU from pixel counts."""

    stage = "segmentation"
    parts = ("bce", "soft_dice")
    criterion_fn = BCEDiceLoss(bce_weight=0.9)

    @staticmethod
    def build_model(config: TrainConfig, loaded: Optional[Dict[str, Any]] = None) -> nn.Module:
        """A U-Net, fresh or from `config.init` (as already read: loaded["init"])."""
        unet = UNet(config.width, skip_dropout=config.skip_dropout)
        if config.init:
            try:
                unet.load_state_dict(initial_unet_state(config.init, (loaded or {}).get("init")))
            except RuntimeError as error:
                raise CheckpointError(f"--init {config.init}: its weights do not fit a width-{config.width} U-Net "
                                      f"({str(error).splitlines()[0]})") from None
        if config.freeze_encoder:
            unet.freeze_encoder()
        return unet

    def compute_loss(self, logits, batch):
        loss, parts = self.criterion_fn(logits, batch["masks"])
        return loss, {"bce": parts["bce"], "soft_dice": parts["dice"]}

    def outcomes(self, logits, batch):
        return logits > 0, batch["masks"] > 0.5

    def scores(self, counts):
        return segmentation_scores(counts)


class ClassificationRunner(CrackRunner):
    """Stage 2: BCE on the head's crack logit; precision, recall, F1 per class and their mean."""

    stage = "classification"

    @staticmethod
    def build_model(config: TrainConfig, loaded: Optional[Dict[str, Any]] = None) -> nn.Module:
        """Stage 1's encoder (from its best checkpoint, or as already read: loaded["stage_one"]), frozen, plus a
        new head."""
        checkpoint = (loaded or {}).get("stage_one") or load_checkpoint(config.segmentation_checkpoint,
                                                                         stage="segmentation")
        unet = UNet.from_settings(checkpoint["model"], config.segmentation_checkpoint)
        unet.load_state_dict(checkpoint["state"])
        return VGGEncoderClassifier(unet.encoder, config.crop)

    def checkpoint_fields(self, state):
        # which stage-1 encoder the head was trained on: UNetClassifier.from_checkpoints refuses another decoder
        return {"encoder_fingerprint": fingerprint(submodule_state(state, "encoder"))}

    def compute_loss(self, logits, batch):
        return F.binary_cross_entropy_with_logits(logits.float(), batch["labels"]), {}

    def outcomes(self, logits, batch):
        return logits > 0, batch["labels"] > 0.5

    def scores(self, counts):
        return classification_scores(counts)


class ReadableConsoleLogger(dl.ConsoleLogger):
    """Catalyst's console lines with 4 significant digits (its own print 17); the CSV and TensorBoard logs keep
    full precision."""

    def log_metrics(self, metrics: Dict[str, float], scope: str, runner: "dl.IRunner") -> None:
        if scope not in ("loader", "epoch"):
            return
        values = metrics if scope == "loader" else metrics["_epoch_"]
        prefix = runner.loader_key if scope == "loader" else "* Epoch"
        print(f"{prefix} ({runner.epoch_step}/{runner.num_epochs}) "
              + " | ".join(f"{key}: {float(values[key]):.4g}" for key in sorted(values)), flush=True)


class ResumableCSVLogger(dl.CSVLogger):
    """Catalyst's CSV logger appends to old files and repeats the header; this one keeps the rows of epochs
    1..`keep_epochs` of existing files (a resumed run) and writes a header only into an empty file."""

    def __init__(self, logdir: str, keep_epochs: int = 0):
        super().__init__(logdir)
        for path in Path(logdir).glob("*.csv"):
            lines = path.read_text().splitlines(keepends=True)
            kept = [line for line in lines[1:] if keep_epochs and int(line.split(",", 1)[0]) <= keep_epochs]
            path.write_text("".join(lines[:1] + kept) if kept else "")

    def _make_header(self, metrics: Dict[str, float], loader_key: str) -> None:
        if self.loggers[loader_key].tell() == 0:
            super()._make_header(metrics, loader_key)


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
    transforms = {"train": train_transform(config.crop, config.sampling, config.markings, config.joints),
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


def mixed_precision(config: TrainConfig) -> str:
    """Catalyst's mixed precision for --amp: fp16 on CUDA, bf16 on CPUs with native bf16, else "no" (fp32)."""
    if not config.amp:
        return "no"
    if config.device.startswith("cuda"):
        return "fp16"
    if cpu_has_native_bf16():
        return "bf16"
    log.info("--amp: this CPU has no native bfloat16 arithmetic; training in float32")
    return "no"


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


def initial_unet_state(init: str, payload: Optional[Dict[str, Any]] = None) -> Dict[str, torch.Tensor]:
    """The U-Net weights `--init` names: "pretrained" (the shipped model's encoder and decoder) or a stage-1
    checkpoint file; `payload` is that file as already read."""
    if init == "pretrained":
        state = (payload or load_pretrained())["state"]
        return {key: value for key, value in state.items() if key.split(".", 1)[0] in ("encoder", "decoder")}
    return (payload or load_checkpoint(init, stage="segmentation"))["state"]


def build_model(config: TrainConfig, loaded: Optional[Dict[str, Any]] = None) -> nn.Module:
    """The network a stage trains (see each runner's `build_model`); `loaded`: checkpoints already read."""
    return RUNNERS[config.stage].build_model(config, loaded)


RUNNERS = {"segmentation": SegmentationRunner, "classification": ClassificationRunner}


@torch.no_grad()
def validate(config: TrainConfig, checkpoint: Dict[str, Any]) -> Dict[str, float]:
    """The validation metrics of a checkpoint in this one process, computed as training computes them."""
    sources = config_sources(config)
    runner = RUNNERS[config.stage](config, tuple(source.name for source in sources))
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
    runner = RUNNERS[config.stage](config, tuple(source.name for source in sources), resume_epoch,
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
