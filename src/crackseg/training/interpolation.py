"""Weight-space interpolation of a fine-tuned U-Net with the one it was fine-tuned from (WiSE-FT: Wortsman et al.,
"Robust fine-tuning of zero-shot models", CVPR 2022): every weight (1 - alpha) x the start's + alpha x the
fine-tuned model's. Two models fine-tuned from one start lie in one basin, so the blend is a model too, and often
better than either where the fine-tuning lost what the start knew: for crackseg-v3's trials, a fine-tuned model
learnt hard negatives and lost Dice where v2 was good, and the blend gives back part of each (docs/MODEL.md).

BatchNorm's running statistics are blended like the weights (an approximation: the blend's true statistics
differ a little); counters are the fine-tuned model's. The stage-2 head is not blended (it starts from random
weights each time): train it on the blend, as on any stage-1 checkpoint.
"""
from pathlib import Path
from typing import Dict

import torch

from crackseg.errors import CheckpointError, ConfigError
from crackseg.files.checkpoints import load_checkpoint, save_checkpoint
from crackseg.files.pretrained import unet_weights


def interpolate(start: Dict[str, torch.Tensor], tuned: Dict[str, torch.Tensor], alpha: float,
                names: str = "the two models") -> Dict[str, torch.Tensor]:
    """(1 - alpha) * start + alpha * tuned for every floating-point tensor; other tensors (counters) from `tuned`.
    The two must hold the same tensors with the same shapes (`names` says which files, in the error)."""
    if not 0.0 <= alpha <= 1.0:
        raise ConfigError(f"--alpha must be in [0, 1] (0: the start, 1: the fine-tuned model), got {alpha}")
    if set(start) != set(tuned):
        missing = sorted(set(start) ^ set(tuned))
        raise CheckpointError(f"{names} are not the same network: {len(missing)} tensors in one only, e.g. "
                              f"{missing[0]}")
    blend = {}
    for key, value in tuned.items():
        if start[key].shape != value.shape:
            raise CheckpointError(f"{names} are not the same network: {key} is {tuple(start[key].shape)} in one, "
                                  f"{tuple(value.shape)} in the other (another --width?)")
        blend[key] = (torch.lerp(start[key].float(), value.float(), alpha).to(value.dtype)
                      if value.is_floating_point() else value.clone())
    return blend


def interpolate_checkpoint(start: str, tuned: Path, alpha: float, out: Path) -> Path:
    """Write the blend of stage-1 checkpoint `tuned` with `start` ("pretrained", the shipped model, or a stage-1
    checkpoint) to `out`: a stage-1 checkpoint with `tuned`'s settings and training configuration."""
    payload = load_checkpoint(tuned, stage="segmentation")
    state = interpolate(unet_weights(start)[0], payload["state"], alpha, f"{start} and {tuned}")
    save_checkpoint(out, "segmentation", state, payload["model"], payload["config"], payload["epoch"], {},
                    interpolated={"start": str(start), "tuned": str(tuned), "alpha": alpha})
    return Path(out)
