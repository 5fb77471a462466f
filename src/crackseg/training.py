"""Catalyst training: one Runner holds the loop both stages share; each stage supplies its loss and metrics.

This is the only module that imports Catalyst.
"""
import sys
import time
import warnings
from pathlib import Path
from typing import Dict, Tuple

import torch
import torch.nn.functional as F
from catalyst import dl
from torch import nn
from torch.utils.data import DataLoader

from crackseg.checkpoints import load_checkpoint, save_checkpoint
from crackseg.config import TrainConfig
from crackseg.data import CracksDataset, collate_crops
from crackseg.losses import BCEDiceLoss
from crackseg.metrics import binary_counts, classification_scores, segmentation_scores
from crackseg.models import UNet, VGGEncoderClassifier
from crackseg.plots import plot_training_curves
from crackseg.transforms import train_transform, valid_transform

Batch = Dict[str, torch.Tensor]


class CrackRunner(dl.Runner):
    """The shared batch loop. Subclasses define `stage`, `compute_loss`, `count` and `scores`.

    Per loader it sums the losses (weighted by crops) and the counts of `count`, and reduces them once at the
    loader's end, so metrics describe the whole split rather than an average of per-batch values.
    """

    stage = ""

    def __init__(self, config: TrainConfig):
        super().__init__()
        self.config = config

    def compute_loss(self, logits: torch.Tensor, batch: Batch) -> Tuple[torch.Tensor, Dict[str, torch.Tensor]]:
        """(loss with graph, {part name: detached value})."""
        raise NotImplementedError

    def count(self, logits: torch.Tensor, batch: Batch) -> torch.Tensor:
        """Counts [tp, fp, fn, tn] of this batch at the 0.5 probability threshold (logit 0)."""
        raise NotImplementedError

    def scores(self, counts: torch.Tensor) -> Dict[str, float]:
        """Metrics of the split from its summed counts."""
        raise NotImplementedError

    def on_loader_start(self, runner: "dl.IRunner") -> None:
        super().on_loader_start(runner)
        self._sums: Dict[str, float] = {}
        self._crops = 0
        self._counts = torch.zeros(4, dtype=torch.long)

    def handle_batch(self, batch: Batch) -> None:
        logits = self.model(batch["images"])
        loss, parts = self.compute_loss(logits, batch)
        self.batch_metrics["loss"] = loss  # BackwardCallback / OptimizerCallback read it here
        crops = len(batch["images"])
        self._crops += crops
        for name, value in {"loss": loss.detach(), **parts}.items():
            self._sums[name] = self._sums.get(name, 0.0) + float(value) * crops
        self._counts += self.count(logits.detach(), batch).cpu()

    def on_loader_end(self, runner: "dl.IRunner") -> None:
        self.loader_metrics.update({name: total / self._crops for name, total in self._sums.items()})
        self.loader_metrics.update(self.scores(self._counts))
        self.loader_metrics["lr"] = self.optimizer.param_groups[0]["lr"]
        super().on_loader_end(runner)


class SegmentationRunner(CrackRunner):
    """Stage 1: loss a*BCE + (1-a)*(1-Dice) on mask logits; Dice and IoU from pixel counts."""

    stage = "segmentation"
    criterion_fn = BCEDiceLoss(bce_weight=0.9)

    def compute_loss(self, logits, batch):
        loss, parts = self.criterion_fn(logits, batch["masks"])
        return loss, {"bce": parts["bce"], "soft_dice": parts["dice"]}

    def count(self, logits, batch):
        return binary_counts(logits > 0, batch["masks"] > 0.5)

    def scores(self, counts):
        return segmentation_scores(counts)


class ClassificationRunner(CrackRunner):
    """Stage 2: BCE on the head's crack logit; precision, recall, F1 per class and their mean."""

    stage = "classification"

    def compute_loss(self, logits, batch):
        return F.binary_cross_entropy_with_logits(logits.float(), batch["labels"]), {}

    def count(self, logits, batch):
        return binary_counts(logits > 0, batch["labels"] > 0.5)

    def scores(self, counts):
        return classification_scores(counts)


class BestCheckpointCallback(dl.Callback):
    """Writes `last.pth` every epoch and `best.pth` when the validation loss improves (both atomically).

    Catalyst's own CheckpointCallback re-saves the live model as `model.best.pth` after every epoch in
    "model" mode, so its "best" file holds the latest weights; this callback copies the state when it is best.
    """

    def __init__(self, directory: Path, config: TrainConfig):
        super().__init__(order=dl.CallbackOrder.External)
        self.directory = Path(directory)
        self.config = config
        self.best_loss = float("inf")

    def on_epoch_end(self, runner: "dl.IRunner") -> None:
        if not runner.engine.is_main_process:
            return
        metrics = dict(runner.epoch_metrics["valid"])
        state = {k: v.detach().cpu().clone() for k, v in runner.engine.unwrap_model(runner.model).state_dict().items()}
        args = dict(stage=self.config.stage, model_state=state, config=self.config.to_dict(), epoch=runner.epoch_step,
                    metrics=metrics)
        save_checkpoint(self.directory / "last.pth", **args)
        if metrics["loss"] < self.best_loss:
            self.best_loss = metrics["loss"]
            save_checkpoint(self.directory / "best.pth", **args)


def make_loaders(config: TrainConfig) -> Dict[str, DataLoader]:
    """Train (shuffled, augmented) and valid (FiveCrop only) loaders over the data root."""
    datasets = {"train": CracksDataset(config.data_root, "train", train_transform(config.crop)),
                "valid": CracksDataset(config.data_root, "valid", valid_transform(config.crop))}
    common = dict(batch_size=config.batch_size, num_workers=config.workers, collate_fn=collate_crops,
                  persistent_workers=config.workers > 0, pin_memory=config.device.startswith("cuda"))
    return {"train": DataLoader(datasets["train"], shuffle=True,
                                generator=torch.Generator().manual_seed(config.seed), **common),
            "valid": DataLoader(datasets["valid"], shuffle=False, **common)}


def make_engine(config: TrainConfig) -> dl.Engine:
    """CPU or GPU engine; with --amp, fp16 on CUDA and bf16 on CPUs that support it."""
    if config.device.startswith("cuda"):
        return dl.GPUEngine(mixed_precision="fp16" if config.amp else "no")
    precision = "no"
    if config.amp:
        if torch.ops.mkldnn._is_mkldnn_bf16_supported():
            precision = "bf16"
        else:
            print("--amp: this CPU has no fast bfloat16 support; training in float32")
    return dl.CPUEngine(mixed_precision=precision)


def build_model(config: TrainConfig) -> nn.Module:
    """Stage 1: a fresh U-Net. Stage 2: stage 1's encoder (from its best checkpoint), frozen, plus a new head."""
    if config.stage == "segmentation":
        return UNet(config.width, skip_dropout=config.skip_dropout)
    checkpoint = load_checkpoint(config.segmentation_checkpoint, stage="segmentation")
    unet = UNet(checkpoint["config"]["width"])
    unet.load_state_dict(checkpoint["model"])
    return VGGEncoderClassifier(unet.encoder, config.crop)


RUNNERS = {"segmentation": SegmentationRunner, "classification": ClassificationRunner}


def train(config: TrainConfig) -> Dict[str, object]:
    """Train one stage; returns {"best": path, "epoch": best epoch, "metrics": its valid metrics, "seconds",
    "curves": the PNG of the training curves}."""
    torch.manual_seed(config.seed)
    log_dir = Path(config.log_dir)
    model = build_model(config)
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=config.lr)
    scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=list(config.milestones),
                                                     gamma=config.gamma)
    checkpoint_callback = BestCheckpointCallback(log_dir / "checkpoints", config)
    callbacks = [dl.BackwardCallback(metric_key="loss"), dl.OptimizerCallback(metric_key="loss"),
                 dl.SchedulerCallback(mode="epoch"), checkpoint_callback]
    loggers = {"console": dl.ConsoleLogger(), "csv": dl.CSVLogger(str(log_dir / "csv")),
               "tensorboard": dl.TensorboardLogger(str(log_dir / "tensorboard"))}
    runner = RUNNERS[config.stage](config)
    # Catalyst's progress bar calls float() on the batch loss, which must keep its graph for BackwardCallback.
    warnings.filterwarnings("ignore", message="Converting a tensor with requires_grad=True to a scalar")
    started = time.perf_counter()
    runner.train(model=model, engine=make_engine(config), loaders=make_loaders(config), optimizer=optimizer,
                 scheduler=scheduler, callbacks=callbacks, loggers=loggers, num_epochs=config.epochs,
                 seed=config.seed, hparams=config.to_dict(), verbose=sys.stderr.isatty())
    best = load_checkpoint(log_dir / "checkpoints" / "best.pth", stage=config.stage)
    return {"best": log_dir / "checkpoints" / "best.pth", "epoch": best["epoch"], "metrics": best["metrics"],
            "seconds": time.perf_counter() - started, "curves": plot_training_curves(log_dir)}
