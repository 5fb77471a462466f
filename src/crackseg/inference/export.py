"""`crackseg export`: the gated model as two ONNX graphs, for C++, C#, Java, JavaScript or edge runtimes.

The decoder runs on a data-dependent subset of the tiles, so the model is cut in two where the gate decides:
`gate.onnx` (images -> crack logits, bottleneck, skip maps) and `decoder.onnx` (bottleneck, skip maps -> mask
logits), both with a dynamic batch axis. `model.json` beside them says how to feed and combine them, the
thresholds, and the SHA-256 of both files.
"""
import warnings
from pathlib import Path
from typing import Any, Dict, List

import torch
from torch import nn

from crackseg.files.pretrained import sha256
from crackseg.files.writing import write_json
from crackseg.models import UNetClassifier


class GateGraph(nn.Module):
    """images (N, 3, s, s) in [0, 1] -> (crack logits (N, 1), bottleneck, skip1..skip4)."""

    def __init__(self, model: UNetClassifier):
        super().__init__()
        self.encoder, self.head = model.encoder, model.head

    def forward(self, images: torch.Tensor) -> List[torch.Tensor]:
        bottleneck, skips = self.encoder(images)
        return [self.head(bottleneck), bottleneck, *skips]


class DecoderGraph(nn.Module):
    """(bottleneck, skip1..skip4) of the tiles to decode -> mask logits (N, 1, s, s)."""

    def __init__(self, model: UNetClassifier):
        super().__init__()
        self.decoder = model.decoder

    def forward(self, bottleneck: torch.Tensor, skip1: torch.Tensor, skip2: torch.Tensor, skip3: torch.Tensor,
                skip4: torch.Tensor) -> torch.Tensor:
        return self.decoder(bottleneck, [skip1, skip2, skip3, skip4])


def export_onnx(model: UNetClassifier, out_dir: Path) -> Dict[str, Any]:
    """Write gate.onnx, decoder.onnx and model.json into `out_dir`; returns the contents of model.json."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    model = model.eval().float()
    skip_names = [f"skip{index + 1}" for index in range(len(model.encoder.skip_channels))]  # finest first
    batch = torch.export.Dim("batch", min=1, max=65536)
    images = torch.rand(2, 3, model.crop_size, model.crop_size)
    gate, decoder = GateGraph(model).eval(), DecoderGraph(model).eval()
    with torch.no_grad():
        gate_outputs = gate(images)
    with warnings.catch_warnings():  # the decoder's five inputs share one batch axis, which torch remarks on
        warnings.filterwarnings("ignore", message=".*axis name.*will not be used.*")
        torch.onnx.export(gate, (images,), out_dir / "gate.onnx", input_names=["images"],
                          output_names=["crack_logits", "bottleneck", *skip_names],
                          dynamic_shapes={"images": {0: batch}}, dynamo=True, external_data=False, verbose=False)
        features = tuple(gate_outputs[1:])
        torch.onnx.export(decoder, features, out_dir / "decoder.onnx",
                          input_names=["bottleneck", *skip_names], output_names=["mask_logits"],
                          dynamic_shapes={name: {0: batch} for name in ["bottleneck", *skip_names]}, dynamo=True,
                          external_data=False, verbose=False)
    sidecar = {
        "format": "crackseg-onnx", "crop": model.crop_size, "width": model.width,
        "gate_threshold": model.threshold, "mask_threshold": model.mask_threshold,
        "input": f"images: float32 (N, 3, {model.crop_size}, {model.crop_size}), RGB, values in [0, 1] "
                 "(uint8 / 255), tiles of a photo cut with overlap",
        "use": "p = sigmoid(crack_logits); run decoder.onnx on the bottleneck and skip maps of the tiles with "
               "p > gate_threshold; mask = sigmoid(mask_logits) >= mask_threshold; other tiles have no crack",
        "files": {name: sha256(out_dir / name) for name in ("gate.onnx", "decoder.onnx")}}
    write_json(out_dir / "model.json", sidecar)
    return sidecar
