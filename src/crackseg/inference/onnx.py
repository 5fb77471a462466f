"""The onnxruntime engine: the two graphs of `crackseg export` run as one gated model.

`OnnxGatedModel` is called like `UNetClassifier` on float32 tiles in [0, 1] and returns (masks, crack
probabilities); `Predictor(..., engine="onnxruntime")` tiles, gates and stitches with it exactly as with torch.
It reads a folder written by `crackseg export` (checked against the SHA-256 values in its model.json) or exports
a `UNetClassifier` first, once, into a cache folder (`cache_dir()`).
"""
import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, List, Optional, Sequence, Tuple

import numpy as np
import torch

from crackseg.errors import CheckpointError
from crackseg.files.checkpoints import PathLike, fingerprint
from crackseg.files.pretrained import sha256
from crackseg.models.gated import gate_decisions

FILES = ("gate.onnx", "decoder.onnx")


def cache_dir() -> Path:
    """Where exported models are kept between runs: $CRACKSEG_CACHE, else $XDG_CACHE_HOME/crackseg, else
    ~/.cache/crackseg."""
    if os.environ.get("CRACKSEG_CACHE"):
        return Path(os.environ["CRACKSEG_CACHE"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "crackseg"


def _sigmoid(logits: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-logits))


class OnnxGatedModel:
    """Gated crack segmentation in onnxruntime: (N, 3, crop, crop) float32 -> (masks (N, 1, crop, crop), crack
    probabilities (N, 1)), both float32 tensors on the CPU; masks are zero where the gate did not decode.

    Args:
        directory: a folder written by `crackseg export` (gate.onnx, decoder.onnx, model.json).
        threshold: the gate's crack probability above which a tile is decoded [the one in model.json].
        threads: onnxruntime's intra-op threads [torch's thread count].
        device: "cuda" runs on onnxruntime's CUDA provider when it is installed; anything else on the CPU.

    Example:
        >>> model = OnnxGatedModel("exported/")
        >>> masks, crack_probs = model(torch.rand(4, 3, model.crop_size, model.crop_size))
    """

    def __init__(self, directory: PathLike, threshold: Optional[float] = None, threads: Optional[int] = None,
                 device: Any = "cpu"):
        import onnxruntime

        directory = Path(directory)
        sidecar_path = directory / "model.json"
        if not sidecar_path.is_file():
            raise CheckpointError(f"{directory}: no model.json; write the folder with `crackseg export --out DIR`")
        sidecar = json.loads(sidecar_path.read_text())
        if sidecar.get("format") != "crackseg-onnx":
            raise CheckpointError(f"{sidecar_path}: not written by `crackseg export`")
        for name in FILES:
            path = directory / name
            if not path.is_file():
                raise CheckpointError(f"{path}: missing; re-run `crackseg export --out {directory}`")
            if sha256(path) != sidecar["files"][name]:
                raise CheckpointError(f"{path}: SHA-256 does not match model.json: the file is damaged or was "
                                      f"replaced; re-run `crackseg export --out {directory}`")
        self.directory = directory
        self.crop_size, self.width = int(sidecar["crop"]), int(sidecar["width"])
        self.threshold = float(sidecar["gate_threshold"] if threshold is None else threshold)
        self.mask_threshold = float(sidecar["mask_threshold"])
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = threads or torch.get_num_threads()
        options.inter_op_num_threads = 1
        options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
        wanted = ["CUDAExecutionProvider"] if torch.device(device).type == "cuda" else []
        providers = [p for p in wanted if p in onnxruntime.get_available_providers()] + ["CPUExecutionProvider"]
        self.gate_session, self.decoder_session = (
            onnxruntime.InferenceSession(str(directory / name), options, providers=providers) for name in FILES)
        self.feature_names: List[str] = [node.name for node in self.decoder_session.get_inputs()]

    @classmethod
    def exported(cls, model: Any, threshold: Optional[float] = None, **kwargs: Any) -> "OnnxGatedModel":
        """A `UNetClassifier` exported once into the cache (`cache_dir()`, keyed by its weights and thresholds)
        and loaded; later calls with the same model load the cached graphs. Without a writable cache, the
        graphs go to a temporary folder kept while this object lives."""
        from crackseg.inference.export import export_onnx  # torch.onnx's exporter loads only when asked

        key = hashlib.sha256(f"{fingerprint(model.state_dict())} {model.width} {model.crop_size} {model.threshold} "
                             f"{model.mask_threshold}".encode()).hexdigest()[:16]
        folder = cache_dir() / "onnx" / key
        threshold = model.threshold if threshold is None else threshold
        if (folder / "model.json").is_file():
            try:
                return cls(folder, threshold=threshold, **kwargs)
            except CheckpointError:  # damaged: export it again
                shutil.rmtree(folder, ignore_errors=True)
        try:
            folder.parent.mkdir(parents=True, exist_ok=True)
            staging = Path(tempfile.mkdtemp(prefix=f".{key}-", dir=folder.parent))
        except OSError:  # no writable cache
            temporary = tempfile.TemporaryDirectory(prefix="crackseg-onnx-")
            export_onnx(model, Path(temporary.name))
            engine = cls(temporary.name, threshold=threshold, **kwargs)
            engine._folder = temporary  # removed with the engine
            return engine
        export_onnx(model, staging)
        try:
            os.replace(staging, folder)  # whole or not at all; another process may have won the race
        except OSError:
            shutil.rmtree(staging, ignore_errors=True)
        return cls(folder, threshold=threshold, **kwargs)

    def encode(self, images: torch.Tensor) -> Tuple[np.ndarray, List[np.ndarray]]:
        """Gate graph: crack logits (N, 1) and the decoder's inputs (bottleneck, skip maps) of every tile."""
        logits, *features = self.gate_session.run(None, {"images": np.ascontiguousarray(images.numpy(), np.float32)})
        return logits, features

    def decode(self, features: Sequence[np.ndarray], rows: Optional[np.ndarray] = None) -> np.ndarray:
        """Decoder graph on the tiles `rows` (all if None): mask logits (len(rows), 1, crop, crop)."""
        feeds = {name: (feature if rows is None else feature[rows])
                 for name, feature in zip(self.feature_names, features)}
        return self.decoder_session.run(None, feeds)[0]

    def unet(self, images: torch.Tensor) -> torch.Tensor:
        """Every tile decoded, no gate: crack probabilities (N, 1, crop, crop)."""
        return torch.from_numpy(_sigmoid(self.decode(self.encode(images)[1])))

    def __call__(self, images: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        logits, features = self.encode(images)
        probs = _sigmoid(logits).astype(np.float32)
        masks = np.zeros((len(probs), 1, self.crop_size, self.crop_size), np.float32)
        cracked = np.nonzero(self.gate(probs))[0]
        if len(cracked) == len(probs):
            masks = _sigmoid(self.decode(features))
        elif len(cracked):
            masks[cracked] = _sigmoid(self.decode(features, cracked))
        return torch.from_numpy(masks), torch.from_numpy(probs)

    def gate(self, crack_probs: Any) -> Any:
        """Which tiles get decoded: the torch model's rule at this threshold."""
        return gate_decisions(crack_probs, self.threshold)
