"""Hyperparameters: one dataclass, the presets, and the rules that resolve them."""
from dataclasses import asdict, dataclass
from typing import Any, Dict, Optional, Tuple

import logging

import torch

from crackseg.errors import ConfigError
from crackseg.inference.acceleration import cpu_has_native_bf16
from crackseg.training.stages import STAGES, default_log_dir

log = logging.getLogger(__name__)

# SPEC.md's schedule, the same for both stages.
THESIS = dict(epochs=64, batch_size=12, lr=1e-2, milestones=(2, 32, 48), gamma=0.1, width=32, crop=224, seed=17,
              skip_dropout=0.0, sampling="five", markings=0.0, joints=0.0, zoom=(1.0, 1.0), bce_weight=0.9)
# Sized to train both stages on a 2-core CPU in minutes (smaller width and crops; images of 2x the crop).
# Skip dropout: on schedules this short the bottleneck of a plain U-Net collapses (the decoder segments from the
# shallow skips alone) and the gate then has nothing to classify; see README, "Why skip dropout".
# FiveCrop sampling ("five"): on CFD at 12 epochs it beat "window" (full-resolution Dice 0.663 vs 0.630, docs/MODEL.md)
CPU = dict(batch_size=8, lr=3e-3, gamma=0.1, width=16, crop=64, seed=17, skip_dropout=0.5, sampling="five",
           markings=0.0, joints=0.0, zoom=(1.0, 1.0))


def preset_values(preset: str, stage: str) -> Dict[str, Any]:
    """The hyperparameters a preset sets for a stage."""
    if preset == "thesis":
        return dict(THESIS)
    if preset == "cpu":
        return {**CPU, **STAGES[stage].cpu_schedule}
    raise ValueError(f"unknown preset {preset!r}; expected thesis, cpu or auto")


def resolve_device(device: str) -> str:
    """'auto' becomes 'cuda' when a GPU is visible, else 'cpu'."""
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


@dataclass
class TrainConfig:
    """Everything one training stage needs; saved into its checkpoints."""

    stage: str
    data_root: Tuple[str, ...] = ("dataset",)  # one or more folders with {train,valid}/{images,masks}
    data_weights: Tuple[int, ...] = ()  # per data root: how often each of its training images is used an epoch
    negatives: Tuple[str, ...] = ()  # folders of crack-free photos (empty masks); every 5th is for validation
    synthetic: bool = False  # generate the embedded default into data_root (always so for the default root)
    log_dir: str = ""
    preset: str = "auto"
    epochs: int = THESIS["epochs"]
    batch_size: int = THESIS["batch_size"]
    lr: float = THESIS["lr"]
    milestones: Tuple[int, ...] = THESIS["milestones"]
    gamma: float = THESIS["gamma"]
    width: int = THESIS["width"]
    crop: int = THESIS["crop"]
    seed: int = THESIS["seed"]
    skip_dropout: float = THESIS["skip_dropout"]
    init: Optional[str] = None  # stage 1: start from "pretrained" (the shipped model) or a stage-1 checkpoint
    freeze_encoder: bool = False  # stage 1 with init: train the decoder alone (stage-2 heads stay valid)
    sampling: str = THESIS["sampling"]  # "five": FiveCrop of the whole image; "window": of a random 2x-crop window
    markings: float = THESIS["markings"]  # share of training images painted with a synthetic road marking
    joints: float = THESIS["joints"]  # share of training images cut by a synthetic joint
    zoom: Tuple[float, float] = THESIS["zoom"]  # window sampling: each window cut at a random zoom in this range
    bce_weight: float = THESIS["bce_weight"]  # stage 1's loss: bce_weight * BCE + (1 - bce_weight) * (1 - Dice)
    teacher: Optional[str] = None  # stage 1: distil from these weights ("pretrained" or a stage-1 checkpoint)
    teacher_weights: Tuple[float, ...] = ()  # per data root: the weight of the teacher's part on its crops [1 each]
    workers: int = 0
    device: str = "auto"
    amp: bool = False
    segmentation_checkpoint: Optional[str] = None  # stage 2 only: stage 1's best checkpoint
    skip_bad: bool = False  # train on the good pairs when the data check finds bad ones
    resume: bool = False  # continue from log_dir/checkpoints/last.pth
    overwrite: bool = False  # replace a previous run in log_dir
    processes: int = 1  # training processes on this machine (distributed data parallel when > 1)
    nodes: int = 1  # machines taking part
    node_rank: int = 0  # this machine's index, 0 .. nodes - 1
    master_addr: str = "127.0.0.1"  # address of node 0
    master_port: int = 2112

    def to_dict(self) -> Dict[str, Any]:
        """The config as plain values (tuples as lists), as checkpoints store it."""
        values = asdict(self)
        for key in ("milestones", "data_root", "data_weights", "negatives", "zoom", "teacher_weights"):
            values[key] = list(values[key])
        return values


def build_config(stage: str, overrides: Dict[str, Any]) -> TrainConfig:
    """Resolve a config: explicit values (not None) win over the preset; 'auto' picks thesis on GPU, cpu on CPU."""
    explicit = {key: value for key, value in overrides.items() if value is not None}
    device = resolve_device(explicit.get("device", "auto"))
    preset = explicit.get("preset", "auto")
    if preset == "auto":
        preset = "thesis" if device.startswith("cuda") else "cpu"
    values = {**preset_values(preset, stage), **explicit, "preset": preset, "device": device, "stage": stage}
    values.setdefault("log_dir", default_log_dir(stage))
    for key in ("milestones", "data_root", "data_weights", "negatives", "zoom", "teacher_weights"):
        if key in values:  # checkpoints written before several roots were possible stored one path
            values[key] = tuple([values[key]] if isinstance(values[key], str) else values[key])
    config = TrainConfig(**values)
    check_config(config)
    return config


HEAD_MULTIPLE = 32  # the head average-pools the 1/16 bottleneck by 2


def check_config(config: TrainConfig) -> None:
    """Refuse values that would fail or waste a run later, with the flag's name."""
    rules = [
        (config.epochs >= 1, f"--epochs must be at least 1, got {config.epochs}"),
        (config.batch_size >= 1, f"--batch-size must be at least 1, got {config.batch_size}"),
        (config.lr > 0, f"--lr must be positive, got {config.lr}"),
        (config.gamma > 0, f"--gamma must be positive, got {config.gamma}"),
        (all(m >= 1 for m in config.milestones), f"--milestones must be epochs >= 1, got {list(config.milestones)}"),
        (config.width >= 1, f"--width must be at least 1, got {config.width}"),
        (config.crop >= HEAD_MULTIPLE and config.crop % HEAD_MULTIPLE == 0,
         f"--crop must be a multiple of {HEAD_MULTIPLE} (the gate's head pools the 1/16 bottleneck by 2), got "
         f"{config.crop}: try {max(HEAD_MULTIPLE, round(config.crop / HEAD_MULTIPLE) * HEAD_MULTIPLE)}"),
        (0 <= config.skip_dropout < 1, f"--skip-dropout must be in [0, 1), got {config.skip_dropout}"),
        (0 <= config.markings <= 1, f"--markings must be in [0, 1], got {config.markings}"),
        (0 <= config.joints <= 1, f"--joints must be in [0, 1], got {config.joints}"),
        (len(config.zoom) == 2 and 0 < config.zoom[0] <= config.zoom[1],
         f"--zoom takes LOW HIGH with 0 < LOW <= HIGH, got {list(config.zoom)}"),
        (config.sampling == "window" or tuple(config.zoom) == (1.0, 1.0),
         f"--zoom {' '.join(map(str, config.zoom))} needs --sampling window (FiveCrop of the whole photo is not "
         "zoomed)"),
        (0 <= config.bce_weight <= 1, f"--bce-weight must be in [0, 1], got {config.bce_weight}"),
        (config.workers >= 0, f"--workers must be 0 or more, got {config.workers}"),
        (config.processes >= 1 and config.nodes >= 1, "--processes and --nodes must be at least 1"),
        (0 <= config.node_rank < config.nodes, f"--node-rank must be in 0..{config.nodes - 1}, got {config.node_rank}"),
        (0 < config.master_port < 65536, f"--master-port must be a port number, got {config.master_port}"),
        (not config.data_weights or len(config.data_weights) == len(config.data_root),
         f"--data-weights: {len(config.data_weights)} weight(s) for {len(config.data_root)} data root(s); give one "
         "per --data-root"),
        (not config.freeze_encoder or config.init,
         "--freeze-encoder needs --init: a frozen random encoder cannot learn"),
        (all(weight >= 1 for weight in config.data_weights),
         "--data-weights: every weight must be a whole number >= 1"),
        (not config.teacher_weights or config.teacher, "--teacher-weights needs --teacher: the weights to distil from"),
        (not config.teacher_weights or len(config.teacher_weights) == len(config.data_root),
         f"--teacher-weights: {len(config.teacher_weights)} weight(s) for {len(config.data_root)} data root(s); give "
         "one per --data-root"),
        (all(weight >= 0 for weight in config.teacher_weights), "--teacher-weights must be 0 or more"),
    ]
    for ok, message in rules:
        if not ok:
            raise ConfigError(message)


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
