"""ONNX export: the two graphs run in onnxruntime give the torch model's probabilities and gate decisions."""
import json

import numpy as np
import onnxruntime
import pytest
import torch

from crackseg.commands import main
from crackseg.models import UNetClassifier
from crackseg.pretrained import sha256

from test_commands import write_checkpoints


def run(path, feeds):
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, feeds)


def test_exported_graphs_match_the_torch_model(tmp_path):
    flags = write_checkpoints(tmp_path, gate_bias=0.0)[:4]
    assert main(["export", "--out", str(tmp_path / "onnx"), *flags]) == 0
    sidecar = json.loads((tmp_path / "onnx" / "model.json").read_text())
    assert sidecar["crop"] == 32 and sidecar["gate_threshold"] == 0.5
    for name in ("gate.onnx", "decoder.onnx"):
        assert sidecar["files"][name] == sha256(tmp_path / "onnx" / name)
    model = UNetClassifier.from_checkpoints(tmp_path / "seg.pth", tmp_path / "cls.pth")
    torch.manual_seed(2)
    for batch in (1, 7):  # the batch axis is dynamic
        images = torch.rand(batch, 3, 32, 32)
        gate = run(tmp_path / "onnx" / "gate.onnx", {"images": images.numpy()})
        crack_probs = 1 / (1 + np.exp(-gate[0]))
        with torch.no_grad():
            masks, torch_probs = model(images)
            reference = torch.sigmoid(model.decoder(*model.encoder(images)))
        assert np.abs(crack_probs - torch_probs.numpy()).max() <= 1e-3
        assert np.array_equal(crack_probs > 0.5, torch_probs.numpy() > 0.5)  # tiles gated identically
        names = ["bottleneck", "skip1", "skip2", "skip3", "skip4"]
        mask_logits = run(tmp_path / "onnx" / "decoder.onnx", dict(zip(names, gate[1:])))[0]
        onnx_masks = 1 / (1 + np.exp(-mask_logits))
        assert onnx_masks.shape == (batch, 1, 32, 32)
        assert np.abs(onnx_masks - reference.numpy()).max() <= 1e-3
        assert ((onnx_masks >= 0.5) != (reference.numpy() >= 0.5)).sum() <= 5


@pytest.mark.parametrize("part", ["gate.onnx"])
def test_export_of_the_shipped_model_records_its_settings(tmp_path, part):
    assert main(["export", "--out", str(tmp_path)]) == 0
    sidecar = json.loads((tmp_path / "model.json").read_text())
    shipped = UNetClassifier.pretrained()
    assert (sidecar["crop"], sidecar["width"]) == (shipped.crop_size, shipped.width)
    assert (tmp_path / part).stat().st_size > 1e6
