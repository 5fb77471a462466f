"""The int8 gate: activation ranges from BatchNorm, the int8 encoder against the float one, the gated model's
decisions and masks against the float gate's, and how `--gate-precision` chooses."""
import pytest
import torch

from crackseg.cli import main
from crackseg.errors import ConfigError
from crackseg.inference import quantization
from crackseg.inference.acceleration import fold_batchnorm, inference_copy
from crackseg.inference.predictor import Predictor
from crackseg.inference.quantization import (
    activation_ranges,
    int8_gate_supported,
    int8_gated,
    quantize_encoder,
)
from crackseg.models import UNetClassifier


def tiles(count, side, seed=0):
    """Smooth random photos (N, 3, side, side) in [0, 1]."""
    coarse = torch.rand(count, 3, side // 8, side // 8, generator=torch.Generator().manual_seed(seed))
    return torch.nn.functional.interpolate(coarse, size=(side, side), mode="bilinear", align_corners=False)


def tiny_model(seed=0, width=4, crop=32):
    """A small model whose BatchNorm statistics are those of `tiles`, as after training on them, with random
    affine parameters."""
    torch.manual_seed(seed)
    model = UNetClassifier(width=width, crop_size=crop)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, (torch.nn.BatchNorm2d, torch.nn.BatchNorm1d)):
                module.weight.uniform_(0.5, 1.5)
                module.bias.uniform_(-0.3, 0.3)
                module.momentum = None  # a cumulative average over the passes below
        model.train()
        for seed in range(4):
            bottleneck, _ = model.encoder(tiles(16, crop, seed))
            model.head(bottleneck)
    return model.eval()


def test_activation_ranges_are_batchnorms_mean_plus_six_standard_deviations():
    model = tiny_model()
    norms = [layer for block in (*model.encoder.blocks, model.encoder.bottleneck) for layer in block
             if isinstance(layer, torch.nn.BatchNorm2d)]
    with torch.no_grad():
        norms[0].weight.fill_(0.5)
        norms[0].weight[1] = -2.0  # the sign of gamma does not matter
        norms[0].bias.fill_(0.1)
    ranges = activation_ranges(model.encoder)
    assert len(ranges) == len(norms) == 10
    assert ranges[0] == pytest.approx(0.1 + 6 * 2.0)
    assert ranges[1] == pytest.approx(float((norms[1].bias + 6 * norms[1].weight.abs()).max().detach()))


def relative_error(a, b):
    return float((a - b).norm() / b.norm())


needs_int8 = pytest.mark.skipif(not int8_gate_supported(torch.device("cpu")),
                                reason="torch has no x86 quantised engine here (the int8 gate is not used)")


@needs_int8
@pytest.mark.parametrize("levels", [127, 255])
def test_the_int8_encoder_gives_the_float_encoders_features_to_within_its_scales(levels):
    model = tiny_model(width=8, crop=64)
    folded = fold_batchnorm(inference_copy(model, torch.device("cpu"), None, fuse=False).encoder)
    quantized = quantize_encoder(model, levels)
    photos = tiles(8, 64, seed=7)  # of the distribution the statistics came from, not the same photos
    with torch.inference_mode():
        bottleneck, skips = folded(photos)
        q_bottleneck, q_skips = quantized(photos)
    assert q_bottleneck.dtype == torch.quint8 and len(q_skips) == len(skips)
    errors = [relative_error(ours.dequantize(), theirs) for ours, theirs in zip(q_skips, skips)]
    errors.append(relative_error(q_bottleneck.dequantize(), bottleneck))
    assert [ours.shape for ours in q_skips] == [theirs.shape for theirs in skips]
    # a random width-8 network carries little signal per channel, so the error grows with depth (the shipped
    # model's masks from int8 features: Dice 0.99 against fp32's, docs/PERFORMANCE.md)
    assert errors[0] < 0.06 and max(errors) < 0.25
    # the test can tell: a layer whose output scale is a quarter of the calibrated one saturates
    quantized.blocks[0][1].scale /= 4
    with torch.inference_mode():
        assert relative_error(quantized(photos)[1][0].dequantize(), skips[0]) > 2 * errors[0]


@needs_int8
def test_the_int8_gate_decides_as_the_float_gate_and_decodes_only_what_it_gates():
    model = tiny_model(width=8, crop=64)
    crops = (tiles(24, 64, seed=9) * 255).to(torch.uint8)
    floating = Predictor(model, "cpu", precision="fp32", gate="float")
    model.threshold = float(floating.crops(crops)[1].median())  # half the crops gated
    floating = Predictor(model, "cpu", precision="fp32", gate="float")
    int8 = Predictor(model, "cpu", precision="fp32", gate="int8")
    assert int8.int8_gate and not floating.int8_gate
    float_masks, float_probs = floating.crops(crops)
    masks, probs = int8.crops(crops)
    assert (probs - float_probs).abs().max() < 0.05
    clear = (float_probs - model.threshold).abs() > 0.05
    assert torch.equal((probs > model.threshold)[clear], (float_probs > model.threshold)[clear])
    gated = probs > model.threshold
    assert 0 < int(gated.sum()) < len(crops)
    assert float(masks[~gated].abs().max()) == 0  # nothing decoded where it did not gate
    both = gated & (float_probs > model.threshold)
    assert relative_error(masks[both], float_masks[both]) < 0.05
    # every tile gated: the branch without row copies
    model.threshold = -1.0
    all_masks, _ = Predictor(model, "cpu", precision="fp32", gate="int8").crops(crops)
    everything, _ = Predictor(model, "cpu", precision="fp32", gate="float").crops(crops)
    assert relative_error(all_masks, everything) < 0.05 and float(all_masks.min()) > 0
    # the fast copy's encoder still serves the whole-image path
    image = crops[0]
    assert torch.allclose(int8.segment(image), floating.segment(image), atol=1e-5)


@needs_int8
def test_gate_precision_chooses_and_times_once(monkeypatch):
    monkeypatch.setattr(quantization, "activation_levels", lambda: 255)
    model = tiny_model()
    fast = inference_copy(model, torch.device("cpu"), None)
    assert int8_gated(model, fast, torch.device("cpu"), None, "float") is None
    timed = []
    monkeypatch.setattr(quantization, "_int8_gate_faster", lambda gated, device: timed.append(1) or True)
    assert Predictor(model, "cpu", precision="fp32").int8_gate
    assert Predictor(model, "cpu", precision="fp32").int8_gate and len(timed) == 1  # measured once a process
    monkeypatch.setattr(quantization, "_MEASURED", {})
    monkeypatch.setattr(quantization, "_int8_gate_faster", lambda gated, device: False)
    assert not Predictor(model, "cpu", precision="fp32").int8_gate
    assert Predictor(model, "cpu", precision="fp32", gate="int8").int8_gate  # asked for: not timed
    with pytest.raises(ValueError, match="gate"):
        int8_gated(model, fast, torch.device("cpu"), None, "int4")
    with pytest.raises(ValueError, match="gate"):
        Predictor(model, "cpu", fast=False, gate="int4")
    # auto never takes 7-bit activations (AVX2 CPUs): their masks fell below Dice 0.99 of fp32's
    monkeypatch.setattr(quantization, "_MEASURED", {})
    monkeypatch.setattr(quantization, "_int8_gate_faster", lambda gated, device: True)
    monkeypatch.setattr(quantization, "activation_levels", lambda: 127)
    assert not Predictor(model, "cpu", precision="fp32").int8_gate
    assert Predictor(model, "cpu", precision="fp32", gate="int8").int8_gate


def test_the_int8_gate_is_an_error_where_it_cannot_run():
    model = tiny_model()
    fast = inference_copy(model, torch.device("cpu"), None)
    with pytest.raises(ConfigError, match="--gate-precision int8 runs on CPUs"):
        int8_gated(model, fast, torch.device("cuda"), None, "int8")

    class OwnForward(UNetClassifier):
        def forward(self, images):
            return super().forward(1 - images)
    other = OwnForward(width=4, crop_size=32).eval()
    with pytest.raises(ConfigError, match="OwnForward"):
        int8_gated(other, inference_copy(other, torch.device("cpu"), None), torch.device("cpu"), None, "int8")
    assert not Predictor(other, "cpu", precision="fp32").int8_gate
    assert int8_gated(model, fast, torch.device("cuda"), None, "auto") is None  # auto: the float gate there
    with pytest.raises(ConfigError, match="fast path"):
        Predictor(model, "cpu", engine="onnxruntime", gate="int8")
    with pytest.raises(ConfigError, match="fast path"):
        Predictor(model, "cpu", fast=False, gate="int8")


def test_predict_help_names_the_gate_precision(capsys):
    with pytest.raises(SystemExit):
        main(["predict", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "--gate-precision {auto,int8,float}" in text and "BatchNorm statistics" in text
