"""Checkpoint files: a network's weights, the settings that build it, and the training run's metadata."""
import hashlib
import os
import random
from pathlib import Path
from typing import Any, Dict, Optional, TypedDict, Union

import numpy as np
import torch

from crackseg.errors import CheckpointError
from crackseg.files.writing import atomic

FORMAT = "crackseg-checkpoint"
STAGES = ("segmentation", "classification")
PathLike = Union[str, os.PathLike]


class CheckpointPayload(TypedDict, total=False):
    """What a checkpoint file holds (`save_checkpoint` writes it, `load_checkpoint` returns it).

    Keys:
        format: always FORMAT. stage: "segmentation" or "classification".
        model: the settings that build the network (its `settings()`: width, depth, skip dropout or crop size).
        state: the network's state dict. config: the `TrainConfig` of the run, as a dict.
        epoch: the epoch it was written after. metrics: that epoch's validation metrics.
        optimizer, scheduler, rng, best_loss: in last.pth, to resume.
        mask_threshold: stored by `evaluate --save-threshold`.
        encoder_fingerprint: stage 2: which stage-1 encoder its head was trained on.
    """

    format: str
    stage: str
    model: Dict[str, Any]
    state: Dict[str, torch.Tensor]
    config: Dict[str, Any]
    epoch: int
    metrics: Dict[str, float]
    optimizer: Dict[str, Any]
    scheduler: Dict[str, Any]
    rng: Dict[str, Any]
    best_loss: float
    mask_threshold: float
    encoder_fingerprint: str


def save_checkpoint(path: PathLike, stage: str, state: Dict[str, torch.Tensor], model: Dict[str, Any],
                    config: Dict[str, Any], epoch: int, metrics: Optional[Dict[str, float]] = None,
                    **extra: Any) -> None:
    """Write a checkpoint atomically (to a temporary file first, then renamed over `path`): the network's weights
    (`state`), the settings that build it (`model`, from its `settings()`), the training configuration, the
    epoch and its validation metrics, and any `extra` fields."""
    if stage not in STAGES:
        raise ValueError(f"unknown stage {stage!r}, expected one of {STAGES}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {"format": FORMAT, "stage": stage, "model": dict(model), "state": state, "config": dict(config),
               "epoch": epoch, "metrics": dict(metrics or {}), **extra}
    _write(path, payload)


def _upgrade(payload: Dict[str, Any]) -> Dict[str, Any]:
    """A checkpoint written before checkpoints carried their network's settings (the first crackseg-v1 runs) held
    its weights under "model" and the settings only in the training configuration; read it as today's."""
    config = payload["config"]
    payload["state"] = payload.pop("model")
    payload["model"] = ({"width": config["width"], "skip_dropout": config.get("skip_dropout", 0.0), "depth": 4}
                        if payload["stage"] == "segmentation" else
                        {"width": config["width"], "crop_size": config["crop"], "depth": 4})
    return payload


def _write(path: Path, payload: Dict[str, Any]) -> None:
    """Durably and atomically: a crash or a power loss leaves either the old file or the new one."""
    with atomic(path, "wb", durable=True) as file:
        torch.save(payload, file)


def load_checkpoint(path: PathLike, stage: Optional[str] = None, map_location: Any = "cpu") -> CheckpointPayload:
    """Load a checkpoint written by `save_checkpoint`, checking that it exists and (optionally) its stage."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as error:  # torch raises many types for corrupt or foreign files
        raise CheckpointError(f"{path}: not a readable checkpoint ({error.__class__.__name__}: {error})") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a crackseg checkpoint")
    if stage is not None and payload["stage"] != stage:
        raise CheckpointError(f"{path}: a {payload['stage']} checkpoint, but a {stage} checkpoint is needed")
    if "state" not in payload:
        try:
            payload = _upgrade(payload)
        except KeyError as missing:
            raise CheckpointError(f"{path}: an old checkpoint without {missing} in its configuration; retrain "
                                  "this stage") from None
    return payload


def update_checkpoint(path: PathLike, stage: str, **fields: Any) -> None:
    """Add or replace top-level fields of a checkpoint (e.g. a chosen mask threshold), atomically."""
    payload = load_checkpoint(path, stage=stage)
    payload.update(fields)
    _write(Path(path), payload)


def submodule_state(state: Dict[str, torch.Tensor], prefix: str) -> Dict[str, torch.Tensor]:
    """The entries of a state dict under `prefix.`, with the prefix removed."""
    start = prefix + "."
    return {key[len(start):]: value for key, value in state.items() if key.startswith(start)}


def fingerprint(state: Dict[str, torch.Tensor]) -> str:
    """A short SHA-256 of a state dict's names and values, whatever the memory layout of its tensors."""
    digest = hashlib.sha256()
    for key in sorted(state):
        value = state[key].detach().cpu().contiguous()
        digest.update(key.encode())
        digest.update((value.float() if value.is_floating_point() else value.long()).numpy().tobytes())
    return digest.hexdigest()[:16]


def get_rng_state() -> Dict[str, Any]:
    """The states of Python's, NumPy's and torch's (CPU and CUDA) generators, in types `weights_only` loads."""
    kind, keys, position, has_gauss, cached = np.random.get_state()
    return {"python": random.getstate(), "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
            "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "position": position,
                      "has_gauss": has_gauss, "cached": cached}}


def set_rng_state(state: Dict[str, Any]) -> None:
    """Restore what `get_rng_state` returned."""
    random.setstate(state["python"])
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    numpy = state["numpy"]
    np.random.set_state((numpy["kind"], numpy["keys"].numpy().astype(np.uint32), numpy["position"],
                         numpy["has_gauss"], numpy["cached"]))
