"""The ready-made model shipped inside the package: one weights file, verified by its SHA-256 before loading.

The file holds the state of a `UNetClassifier` (encoder, decoder, head) stored in float16 (float32 for a tensor
with values beyond float16's range), the settings that build it (`model`: width, crop size, thresholds) and what
it was trained on (`training`). `pack` writes such a file from the two best checkpoints of a training run;
docs/MODEL.md gives the recipe.
"""
import hashlib
import io
from pathlib import Path
from typing import Any, Dict, Optional, Tuple

import torch

from crackseg.errors import CheckpointError
from crackseg.files.checkpoints import PathLike, load_checkpoint
from crackseg.files.writing import atomic

FORMAT = "crackseg-pretrained"
WEIGHTS = Path(__file__).parents[1] / "weights" / "crackseg-v2.pth"
SHA256 = "3de8dc3855199b790832385cc84cd78280f0ba6e353886f998c85f8c657bd266"  # of WEIGHTS


def sha256(path: PathLike) -> str:
    """The SHA-256 of a file, in hex."""
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def load_pretrained(path: Optional[PathLike] = None, expected_sha256: Optional[str] = None) -> Dict[str, Any]:
    """The shipped model's payload (weights in float32 under "state", settings under "model", its file under
    "path"), after checking the file (default: the shipped one) against its SHA-256 (default: the one recorded
    for the shipped file). A missing, altered or unreadable file is a CheckpointError naming it."""
    path = Path(path or WEIGHTS)
    expected = SHA256 if expected_sha256 is None else expected_sha256
    if not path.is_file():
        raise CheckpointError(f"{path}: the shipped weights file is missing; reinstall crackseg, or pass your own "
                              "checkpoints")
    data = path.read_bytes()
    actual = hashlib.sha256(data).hexdigest()
    if actual != expected:
        raise CheckpointError(f"{path}: SHA-256 {actual[:16]}... does not match the recorded {expected[:16]}...: "
                              "the file is damaged or was replaced; reinstall crackseg")
    try:
        payload = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises many types for corrupt files
        raise CheckpointError(f"{path}: not a readable weights file ({error.__class__.__name__})") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a crackseg weights file")
    payload["path"] = str(path)
    payload["state"] = {key: value.float() if value.is_floating_point() else value
                        for key, value in payload["state"].items()}
    return payload


def pack(state: Dict[str, torch.Tensor], model: Dict[str, Any], training: Dict[str, Any], out: PathLike) -> str:
    """Write a weights file and return its SHA-256. Floating-point tensors are stored as float16, except those
    with a value beyond float16's range (a BatchNorm running variance can exceed 65504), kept as float32 so that
    none turns into inf."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    stored = {key: _compact(value.detach().cpu().contiguous()) for key, value in state.items()}
    with atomic(out, "wb", durable=True) as file:
        torch.save({"format": FORMAT, "model": dict(model), "training": dict(training), "state": stored}, file)
    return sha256(out)


def _compact(tensor: torch.Tensor) -> torch.Tensor:
    """float16 when every value fits in it, else the tensor as it is."""
    if not tensor.is_floating_point() or (tensor.numel() and tensor.abs().max() > torch.finfo(torch.float16).max):
        return tensor
    return tensor.half()


def unet_weights(weights: str, payload: Optional[Dict[str, Any]] = None) -> Tuple[Dict[str, torch.Tensor], int]:
    """The U-Net weights (encoder and decoder) and width that `weights` names: "pretrained" (the shipped model)
    or a stage-1 checkpoint file; `payload` is that file as already read."""
    payload = payload or (load_pretrained() if weights == "pretrained" else load_checkpoint(weights,
                                                                                           stage="segmentation"))
    state = {key: value for key, value in payload["state"].items() if key.split(".", 1)[0] in ("encoder", "decoder")}
    return state, payload["model"]["width"]
