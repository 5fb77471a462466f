"""ONNX export and the onnxruntime engine: the two graphs give the torch model's probabilities, gate decisions
and stitched masks."""
import json

import numpy as np
import onnxruntime
import pytest
import torch
from test_commands import read_csv, write_checkpoints

from crackseg.cli import main
from crackseg.errors import CheckpointError
from crackseg.files.images import load_image
from crackseg.files.pretrained import sha256
from crackseg.inference import export
from crackseg.inference.export import export_onnx
from crackseg.inference.onnx import OnnxGatedModel
from crackseg.inference.predictor import Predictor
from crackseg.models import UNetClassifier


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


def centre_gate(model, images):
    """Set the head's last bias so that about half the tiles of `images` are decoded, with the threshold in the
    widest gap between their crack logits (no tile sits on the threshold, where rounding could flip it)."""
    with torch.no_grad():
        model.head.layers[-1].weight *= 100
        model.head.layers[-1].bias.zero_()
        probs = torch.cat([r.tile_probs for r in Predictor(model, fast=False, batch_size=5, overlap=8).tiled(images)])
        logits = torch.logit(probs.double()).sort().values
        middle = logits[len(logits) // 4:3 * len(logits) // 4 + 1]
        gap = int((middle[1:] - middle[:-1]).argmax())
        model.head.layers[-1].bias.fill_(float(-(middle[gap] + middle[gap + 1]) / 2))


def test_onnxruntime_engine_tiles_gates_and_stitches_like_torch(tmp_path, tiny_dataset):
    write_checkpoints(tmp_path, gate_bias=0.0)
    model = UNetClassifier.from_checkpoints(tmp_path / "seg.pth", tmp_path / "cls.pth")
    images = [(path.name, load_image(path)) for path in sorted((tiny_dataset / "valid" / "images").iterdir())]
    images.append(("odd size", images[0][1][:, :50, :41]))
    centre_gate(model, images)
    reference = list(Predictor(model, fast=False, batch_size=5, overlap=8).tiled(images))
    onnx = Predictor(model, engine="onnxruntime", batch_size=5, overlap=8)
    assert not onnx.whole_images
    decoded = 0
    for ours, theirs in zip(onnx.tiled(images), reference):
        assert ours.key == theirs.key and ours.probs.shape == theirs.probs.shape
        assert torch.equal(ours.decoded, theirs.decoded)  # tiles gated identically
        assert (ours.tile_probs - theirs.tile_probs).abs().max() <= 1e-3
        assert (ours.probs - theirs.probs).abs().max() <= 1e-3
        assert ((ours.probs >= 0.5) != (theirs.probs >= 0.5)).sum() <= 5
        decoded += int(theirs.decoded.sum())
    total = sum(len(result.grid) for result in reference)
    assert 0 < decoded < total  # the comparison covered both decisions
    with pytest.raises(ValueError, match="tiles"):
        onnx.segment(images[0][1])
    export_onnx(model, tmp_path / "onnx")  # an exported folder runs the same
    exported = Predictor(OnnxGatedModel(tmp_path / "onnx"), engine="onnxruntime", batch_size=5, overlap=8)
    for ours, theirs in zip(exported.tiled(images), reference):
        assert torch.equal(ours.decoded, theirs.decoded) and (ours.probs - theirs.probs).abs().max() <= 1e-3


def test_predict_and_evaluate_run_an_exported_folder(tmp_path, tiny_dataset):
    flags = write_checkpoints(tmp_path, gate_bias=20.0)
    assert main(["export", "--out", str(tmp_path / "onnx"), *flags[:4]]) == 0
    assert main(["predict", str(tiny_dataset / "valid" / "images"), "--out", str(tmp_path / "torch"), *flags]) == 0
    onnx_flags = ["--onnx", str(tmp_path / "onnx"), *flags[4:]]
    assert main(["predict", str(tiny_dataset / "valid" / "images"), "--out", str(tmp_path / "ort"), *onnx_flags]) == 0
    torch_rows, ort_rows = (read_csv(tmp_path / name / "summary.csv") for name in ("torch", "ort"))
    assert [row["tiles_decoded"] for row in ort_rows] == [row["tiles_decoded"] for row in torch_rows]
    for ours, theirs in zip(ort_rows, torch_rows):
        assert abs(float(ours["crack_share"]) - float(theirs["crack_share"])) < 0.01
    assert main(["evaluate", "--data-root", str(tiny_dataset), "--out", str(tmp_path / "eval"), *onnx_flags]) == 0
    metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert "gated" in metrics and "segmentation" not in metrics  # the graphs take tiles, not whole images
    assert metrics["checkpoints"]["engine"] == "onnxruntime"
    assert main(["predict", str(tiny_dataset / "valid" / "images"), "--out", str(tmp_path / "x"), *onnx_flags,
                 *flags[:4]]) == 2  # an exported folder or checkpoints, not both


def test_a_damaged_export_is_refused_with_its_name(tmp_path):
    flags = write_checkpoints(tmp_path, gate_bias=0.0)[:4]
    assert main(["export", "--out", str(tmp_path / "onnx"), *flags]) == 0
    with open(tmp_path / "onnx" / "decoder.onnx", "ab") as handle:
        handle.write(b"\0")
    with pytest.raises(CheckpointError, match="decoder.onnx.*SHA-256"):
        OnnxGatedModel(tmp_path / "onnx")
    with pytest.raises(CheckpointError, match="model.json"):
        OnnxGatedModel(tmp_path)


def test_exported_models_are_cached_and_a_damaged_cache_is_rebuilt(monkeypatch, tmp_path):
    monkeypatch.setenv("CRACKSEG_CACHE", str(tmp_path / "cache"))
    exports = []
    real = export.export_onnx
    monkeypatch.setattr(export, "export_onnx", lambda model, out: exports.append(out) or real(model, out))
    torch.manual_seed(0)
    model = UNetClassifier(width=4, crop_size=32).eval()
    first = OnnxGatedModel.exported(model)
    assert first.directory.parent == tmp_path / "cache" / "onnx" and len(exports) == 1
    second = OnnxGatedModel.exported(model, threshold=0.3)  # the threshold is applied at run time
    assert second.directory == first.directory and len(exports) == 1 and second.threshold == 0.3
    model.mask_threshold = 0.4  # other settings, another export
    assert OnnxGatedModel.exported(model).directory != first.directory and len(exports) == 2
    model.mask_threshold = 0.5
    (first.directory / "gate.onnx").write_bytes(b"broken")
    rebuilt = OnnxGatedModel.exported(model)
    assert rebuilt.directory == first.directory and len(exports) == 3
    images = torch.rand(3, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(rebuilt(images)[1], model(images)[1], rtol=0, atol=1e-4)
