"""Catalyst runners: one holds the loop both stages share; each stage supplies its model, loss and metrics.

This module and `loop` are the only ones that import Catalyst.
"""
import logging
from collections import Counter
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple

import torch
import torch.nn.functional as F
from accelerate.data_loader import BatchSamplerShard
from catalyst import dl
from torch import nn

from crackseg.analysis.metrics import binary_counts, classification_scores, segmentation_scores
from crackseg.errors import CheckpointError
from crackseg.files.checkpoints import (
    fingerprint,
    get_rng_state,
    load_checkpoint,
    save_checkpoint,
    set_rng_state,
    submodule_state,
)
from crackseg.files.pretrained import unet_weights
from crackseg.models import UNet, VGGEncoderClassifier
from crackseg.training.config import TrainConfig, mixed_precision
from crackseg.training.distillation import Distiller
from crackseg.training.losses import BCEDiceLoss
from crackseg.training.stages import STAGES

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
        """Add a batch: its loss parts (means over `crops` crops) and its pixel counts per source."""
        self.sums += torch.tensor([value * crops for value in values] + [crops], dtype=torch.float64)
        self.counts += counts

    def all_reduce(self) -> None:
        """Sum the totals of every process (distributed training), in place."""
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
        # Catalyst's scheduler callback has stepped already and put the next epoch's learning rate in the epoch's
        # line; the line shows the rate this epoch trained with, as the train loader recorded it
        self.epoch_metrics["_epoch_"]["lr"] = self.epoch_metrics["train"]["lr"]
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
    """Stage 1: loss a*BCE + (1-a)*(1-Dice) on mask logits (a = config.bce_weight), plus the teacher's part with
    --teacher (`distillation`); Dice and IoU from pixel counts."""

    stage = "segmentation"
    parts = ("bce", "soft_dice")

    def __init__(self, config: TrainConfig, *args: Any, **kwargs: Any):
        super().__init__(config, *args, **kwargs)
        self.criterion_fn = BCEDiceLoss(bce_weight=config.bce_weight)
        self.distiller = None
        if config.teacher:  # one weight per data source: the data roots', then 0 for folders of negatives
            weights = list(config.teacher_weights) or [1.0] * len(config.data_root)
            self.distiller = Distiller(config.teacher, weights + [0.0] * len(config.negatives),
                                       mixed_precision(config))
            self.parts = self.parts + ("distil",)

    @staticmethod
    def build_model(config: TrainConfig, loaded: Optional[Dict[str, Any]] = None) -> nn.Module:
        """A U-Net, fresh or from `config.init` (as already read: loaded["init"])."""
        unet = UNet(config.width, skip_dropout=config.skip_dropout)
        if config.init:
            try:
                unet.load_state_dict(unet_weights(config.init, (loaded or {}).get("init"))[0])
            except RuntimeError as error:
                raise CheckpointError(f"--init {config.init}: its weights do not fit a width-{config.width} U-Net "
                                      f"({str(error).splitlines()[0]})") from None
        if config.freeze_encoder:
            unet.freeze_encoder()
        return unet

    def compute_loss(self, logits, batch):
        loss, parts = self.criterion_fn(logits, batch["masks"])
        named = {"bce": parts["bce"], "soft_dice": parts["dice"]}
        if self.distiller is not None:
            distil = self.distiller.loss(batch["images"], logits, batch["groups"])
            loss, named["distil"] = loss + distil, distil.detach()
        return loss, named

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


def runner_class(stage: str) -> type:
    """The Catalyst runner of a stage (`stages.Stage.runner` names it)."""
    return globals()[STAGES[stage].runner]
