"""The fast path: precision choice and its fallback, numerical agreement with plain fp32, the benchmark's gate
driving and report (structure only: timings stay out of tests)."""
import json

import pytest
import torch

from crackseg.bench.media import agreement
from crackseg.bench.throughput import onnx_gated
from crackseg.bench.timing import ISA_FLAGS, drive_gate, flops
from crackseg.cli import main
from crackseg.errors import ConfigError
from crackseg.files.images import load_image
from crackseg.inference import acceleration
from crackseg.inference.acceleration import (
    CPU_CHUNK_BYTES,
    chunk_size,
    inference_precision,
    reduced_precision,
    use_int8_head,
)
from crackseg.inference.predictor import Predictor
from crackseg.models import UNetClassifier


def tiny_model(seed=0):
    torch.manual_seed(seed)
    model = UNetClassifier(width=4, crop_size=32).eval()
    with torch.no_grad():  # non-trivial BatchNorm statistics, as after training
        for module in model.modules():
            if isinstance(module, (torch.nn.BatchNorm2d, torch.nn.BatchNorm1d)):
                module.running_mean.uniform_(-0.2, 0.2)
                module.running_var.uniform_(0.5, 1.5)
    return model


def test_precision_falls_back_to_fp32_without_native_bf16(monkeypatch):
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    monkeypatch.setattr(acceleration, "cpu_has_native_bf16", lambda: False)
    assert reduced_precision(cpu) is None
    assert reduced_precision(cuda) == torch.float16
    monkeypatch.setattr(acceleration, "cpu_has_native_bf16", lambda: True)
    assert reduced_precision(cpu) == torch.bfloat16
    assert reduced_precision(cpu, "fp32") is None and reduced_precision(cpu, "bf16") == torch.bfloat16
    with pytest.raises(ValueError, match="precision"):
        reduced_precision(cpu, "int8")


@pytest.mark.parametrize("faster", [None, torch.bfloat16])
def test_auto_takes_the_faster_of_fp32_and_bf16_where_the_cpu_has_native_bf16(monkeypatch, faster):
    monkeypatch.setattr(acceleration, "_MEASURED", {})
    monkeypatch.setattr(acceleration, "cpu_has_native_bf16", lambda: True)
    timed = []

    def rates(model, device, head):  # tiles a second of each type
        timed.extend([None, torch.bfloat16])
        return {name: 1.0 if dtype == faster else 1 / 1.5 for name, dtype in acceleration.TIMED.items()}
    monkeypatch.setattr(acceleration, "_rates", rates)
    model = tiny_model()
    predictor = Predictor(model, "cpu")
    assert predictor.dtype == faster and predictor.int8_head == (faster is None)  # fp32 brings its int8 head
    assert sorted(map(str, timed)) == ["None", "torch.bfloat16"]
    assert inference_precision(tiny_model(1), torch.device("cpu")) == faster and len(timed) == 2  # once a shape
    assert inference_precision(model, torch.device("cpu"), "bf16") == torch.bfloat16  # explicit: no timing
    assert inference_precision(model, torch.device("cpu"), "fp32") is None and len(timed) == 2
    monkeypatch.setattr(acceleration, "cpu_has_native_bf16", lambda: False)  # emulated bf16 is never tried
    monkeypatch.setattr(acceleration, "_MEASURED", {})
    assert inference_precision(model, torch.device("cpu")) is None and len(timed) == 2


def test_auto_times_the_head_it_will_run(monkeypatch):
    monkeypatch.setattr(acceleration, "_MEASURED", {})
    monkeypatch.setattr(acceleration, "cpu_has_native_bf16", lambda: True)
    heads = []
    copies = []
    real_copy = acceleration.inference_copy

    def copy(model, device, dtype, int8_head=False):
        copies.append((dtype, int8_head))
        return real_copy(model, device, dtype, int8_head)
    monkeypatch.setattr(acceleration, "inference_copy", copy)
    real_rates = acceleration._rates

    def rates(model, device, head):
        heads.append(head)
        return real_rates(model, device, head)
    monkeypatch.setattr(acceleration, "_rates", rates)
    model = tiny_model()
    predictor = Predictor(model, "cpu", head="full")
    assert heads == ["full"] and (None, False) in copies and (None, True) not in copies  # fp32 timed unquantised
    assert not predictor.int8_head
    Predictor(model, "cpu")  # the default head is another setting: timed again, with the int8 head in fp32
    assert heads == ["full", "auto"] and (None, True) in copies
    predictor = Predictor(model, "cpu", head="int8")  # int8 runs in fp32 only: chosen without timing bf16
    assert heads == ["full", "auto"] and predictor.dtype is None and predictor.int8_head


def test_a_chunk_is_timed_in_both_types_on_the_fast_path():
    model = tiny_model()
    rates = acceleration._rates(model, torch.device("cpu"))
    assert set(rates) == {"fp32", "bf16"}
    for name, dtype in acceleration.TIMED.items():
        seconds = chunk_size(torch.device("cpu"), model.width, model.crop_size, dtype) / rates[name]
        assert 0 < seconds < 5
    assert model.encoder.blocks[0][0].weight.dtype == torch.float32  # timed on copies


def test_fast_path_in_fp32_matches_plain_eager(monkeypatch):
    monkeypatch.setattr(acceleration, "cpu_has_native_bf16", lambda: False)
    model = tiny_model()
    fast = Predictor(model, "cpu", head="full")
    plain = Predictor(tiny_model(), "cpu", fast=False)
    assert fast.dtype is None and plain.dtype is None and not fast.int8_head
    first = fast.model.encoder.blocks[0][0]  # ReLU fused into it where oneDNN has the kernel
    first = first.conv if isinstance(first, acceleration.ConvReLU) else first
    assert first.weight.is_contiguous(memory_format=torch.channels_last)
    norms = (torch.nn.BatchNorm2d, torch.nn.BatchNorm1d)
    assert not any(isinstance(module, norms) for module in fast.model.modules())  # folded into the layers
    assert sum(isinstance(module, norms) for module in model.modules()) == 20  # on a copy: the caller's model
    assert model.encoder.blocks[0][0].bias is None  # is left as it was
    crops = torch.randint(0, 256, (6, 3, 32, 32), dtype=torch.uint8)
    (fast_masks, fast_probs), (plain_masks, plain_probs) = fast.crops(crops), plain.crops(crops)
    torch.testing.assert_close(fast_probs, plain_probs, rtol=0, atol=1e-5)
    torch.testing.assert_close(fast_masks, plain_masks, rtol=0, atol=1e-5)
    torch.testing.assert_close(fast.unet(crops), plain.unet(crops), rtol=0, atol=1e-5)
    image = torch.randint(0, 256, (3, 45, 70), dtype=torch.uint8)
    torch.testing.assert_close(fast.segment(image), plain.segment(image), rtol=0, atol=1e-5)


@pytest.mark.parametrize("dtype", [None, torch.bfloat16])
def test_fused_fast_path_computes_what_the_unfused_one_does(dtype):
    model = tiny_model(3)
    cpu = torch.device("cpu")
    fused, unfused = (acceleration.inference_copy(model, cpu, dtype, fuse=fuse) for fuse in (True, False))
    kinds = [type(module) for module in fused.modules()]
    assert kinds.count(acceleration.MaxPool2x2) == 1 and torch.nn.MaxPool2d not in kinds  # the encoder's pool
    expected = 18 if acceleration.pointwise_convolution_available() else 0  # 9 VGG blocks of 2 convolutions
    assert kinds.count(acceleration.ConvReLU) == expected
    head_relus = sum(isinstance(module, torch.nn.ReLU) for module in model.head.modules())
    assert head_relus > 0 and kinds.count(torch.nn.ReLU) == 18 - expected + head_relus  # the head's stay
    assert acceleration.ConvReLU not in map(type, unfused.modules())
    tiles = torch.rand(5, 3, 32, 32).to(dtype or torch.float32).contiguous(memory_format=torch.channels_last)
    with torch.inference_mode():
        (bottleneck, skips), (reference, reference_skips) = fused.encoder(tiles), unfused.encoder(tiles)
        assert torch.equal(bottleneck, reference) and all(map(torch.equal, skips, reference_skips))
        assert torch.equal(fused.decoder(bottleneck, skips), unfused.decoder(reference, reference_skips))
        assert torch.equal(fused.head(bottleneck), unfused.head(reference))


def test_fused_convolution_runs_bf16_as_two_layers_where_onednn_has_no_bf16_kernels(monkeypatch):
    # oneDNN aborts on a bf16 pointwise convolution on CPUs without AVX512BW/VL/DQ or AVX-NE-CONVERT
    conv = torch.nn.Conv2d(3, 4, 3, padding=1).to(torch.bfloat16)
    x = torch.randn(2, 3, 8, 8).to(torch.bfloat16)
    expected = torch.relu(conv(x))
    calls = []
    real = torch.ops.mkldnn._convolution_pointwise

    class Ops:  # torch.ops.mkldnn with the pointwise kernel counted and bf16 support switched off
        _is_mkldnn_bf16_supported = staticmethod(lambda: False)

        @staticmethod
        def _convolution_pointwise(*args):
            calls.append(args[0].dtype)
            return real(*args)

    monkeypatch.setattr(torch.ops, "mkldnn", Ops)
    fused = acceleration.ConvReLU(conv)
    torch.testing.assert_close(fused(x), expected, rtol=0, atol=0)
    assert calls == []
    fused.float()(x.float())  # fp32 still takes the fused kernel
    assert calls == [torch.float32]


@pytest.mark.parametrize("shape", [(2, 3, 8, 8), (1, 16, 7, 9), (2, 4, 3, 6)])
def test_strided_max_pool_equals_torch_max_pool(shape):
    x = torch.randn(*shape).contiguous(memory_format=torch.channels_last)
    x[0, 0, 0, 0] = float("nan")  # NaN propagates as in max_pool2d
    expected = torch.nn.functional.max_pool2d(x, 2)
    pooled = acceleration.MaxPool2x2()(x)
    torch.testing.assert_close(pooled, expected, rtol=0, atol=0, equal_nan=True)
    assert pooled.is_contiguous(memory_format=torch.channels_last)  # the next convolution needs no reorder


def test_fusion_leaves_other_pools_and_unfollowed_convolutions_alone():
    module = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.MaxPool2d(3),
                                 torch.nn.Conv2d(4, 4, 3, padding="same"), torch.nn.ReLU(),
                                 torch.nn.Conv2d(4, 4, 1), torch.nn.Sigmoid())
    fused = acceleration.fuse_for_cpu(module)
    assert [type(layer) for layer in fused] == [torch.nn.Conv2d, torch.nn.MaxPool2d, torch.nn.Conv2d,
                                                torch.nn.ReLU, torch.nn.Conv2d, torch.nn.Sigmoid]


def test_int8_head_is_chosen_where_the_cpu_runs_fp32_and_keeps_the_gate(monkeypatch):
    cpu = torch.device("cpu")
    assert use_int8_head(cpu, None) and use_int8_head(cpu, None, "int8")
    assert not use_int8_head(cpu, torch.bfloat16) and not use_int8_head(cpu, None, "full")
    with pytest.raises(ConfigError, match="fp32"):
        use_int8_head(cpu, torch.bfloat16, "int8")
    with pytest.raises(ConfigError, match="cuda"):
        use_int8_head(torch.device("cuda"), None, "int8")
    monkeypatch.setattr(acceleration, "cpu_has_native_bf16", lambda: False)
    model = tiny_model(3)
    torch.manual_seed(0)
    crops = torch.randint(0, 256, (64, 3, 32, 32), dtype=torch.uint8)
    with torch.no_grad():  # centre the gate so that about half the crops are called cracked
        model.head.layers[-1].bias -= model.head(model.encoder(crops.float() / 255)[0]).median()
    weights = sum(parameter.numel() for parameter in model.parameters())
    int8, full = Predictor(model, "cpu"), Predictor(model, "cpu", head="full")
    assert int8.int8_head and not full.int8_head
    linears = [module for module in int8.model.head.modules()
               if isinstance(module, torch.ao.nn.quantized.dynamic.Linear)]
    assert len(linears) == 3 and all(module.weight().dtype == torch.qint8 for module in linears)
    assert sum(parameter.numel() for parameter in model.parameters()) == weights  # the caller's model is as it was
    (int8_masks, int8_probs), (full_masks, full_probs) = int8.crops(crops), full.crops(crops)
    decided = full_probs > 0.5
    assert 10 < int(decided.sum()) < 54
    assert (int8_probs - full_probs).abs().max() < 0.02
    near = (full_probs - 0.5).abs() < 0.02  # only a crop this close to the threshold may flip
    assert torch.equal((int8_probs > 0.5)[~near], decided[~near])
    same = (int8_probs > 0.5) == decided
    torch.testing.assert_close(int8_masks[same], full_masks[same], rtol=0, atol=1e-5)  # the decoder is untouched


def test_cpu_chunks_fit_the_cache_budget_and_do_not_change_results():
    cpu = torch.device("cpu")
    assert chunk_size(cpu, 32, 224, torch.bfloat16) == 5  # 2 x 32 x 224^2 x 2 bytes = 6.4 MB a crop
    assert chunk_size(cpu, 32, 224, None) == 2
    assert chunk_size(cpu, 64, 512, None) == 1  # never zero
    assert chunk_size(cpu, 4, 32, None) == CPU_CHUNK_BYTES // (2 * 4 * 32 * 32 * 4)
    assert chunk_size(torch.device("cuda"), 32, 224, torch.float16) is None
    predictor = Predictor(tiny_model(), "cpu", precision="fp32")
    crops = torch.randint(0, 256, (7, 3, 32, 32), dtype=torch.uint8)
    whole = predictor.crops(crops)
    predictor.chunk = 3
    chunked = predictor.crops(crops)
    assert chunked[0].shape == (7, 1, 32, 32) and chunked[1].shape == (7,)
    torch.testing.assert_close(chunked, whole, rtol=0, atol=1e-6)


def test_bf16_fast_path_stays_close_to_fp32():
    # Forced bf16 (emulated on CPUs without it: slow, but numerically what a bf16 CPU computes). The agreement of
    # binarised masks of trained models on a real split is measured by `crackseg bench --agreement-images`.
    bf16 = Predictor(tiny_model(), "cpu", precision="bf16")
    plain = Predictor(tiny_model(), "cpu", fast=False)
    assert bf16.dtype == torch.bfloat16 and bf16.model.head.layers[2].weight.dtype == torch.bfloat16
    image = torch.randint(0, 256, (3, 64, 96), dtype=torch.uint8)
    low, high = bf16.segment(image), plain.segment(image)
    assert low.dtype == torch.float32 and low.shape == high.shape == (64, 96)
    assert (low - high).abs().max() < 0.01
    crops = torch.randint(0, 256, (4, 3, 32, 32), dtype=torch.uint8)
    assert (bf16.crops(crops)[1] - plain.crops(crops)[1]).abs().max() < 0.02


@pytest.mark.parametrize("share, expected", [(0.0, 0), (0.1, 1), (0.5, 5), (1.0, 10)])
@pytest.mark.parametrize("chunk", [10, 5, 3])
def test_drive_gate_decodes_exactly_the_share(share, expected, chunk):
    model = tiny_model()
    seen = []
    model.decoder.register_forward_hook(lambda module, inputs, output: seen.append(len(output)))
    handle = drive_gate(model, share, period=10)
    with torch.no_grad():  # one batch of 10 crops, in forward calls of `chunk` crops as the fast path does
        outputs = [model(crops) for crops in torch.rand(10, 3, 32, 32).split(chunk)]
    handle.remove()
    masks, probs = torch.cat([m for m, _ in outputs]), torch.cat([p for _, p in outputs])
    assert sum(seen) == expected and int((probs > 0.5).sum()) == expected
    assert int((masks.flatten(1).amax(1) > 0).sum()) == expected


def test_flop_counts_give_the_ideal_gated_speedup():
    counted = flops(UNetClassifier(32, 224).eval(), 224)
    assert counted["unet_gflop_per_crop"] == pytest.approx(18.48, abs=0.01)  # SPEC: 18.5 GFLOP per crop
    assert counted["ideal_gated_speedup_at_0"] == pytest.approx(2.77, abs=0.01)
    assert 0 < counted["decoder_gflop_per_crop"] < counted["unet_gflop_per_crop"]


def test_bench_writes_a_complete_report(tmp_path, capsys):
    out = tmp_path / "bench.json"
    assert main(["bench", "--width", "4", "--crop", "32", "--batch", "4", "--rounds", "1", "--train-images", "1",
                 "--train-steps", "1", "--device", "cpu", "--precision", "fp32", "--out", str(out)]) == 0
    report = json.loads(out.read_text())
    assert json.loads(capsys.readouterr().out) == report
    assert report["machine"]["threads"] >= 1 and report["config"]["crop"] == 32
    flags = set(open("/proc/cpuinfo").read().split())
    assert set(report["machine"]["isa"]) == flags & set(ISA_FLAGS)
    speeds = report["inference"]["crops_per_s"]
    assert set(speeds) == {"plain_fp32", "plain_fp32_single", "fast", "gated_0", "gated_10", "gated_50", "gated_100",
                           "gated_0_full_head", "gated_100_full_head", "onnxruntime", "onnxruntime_gated_0",
                           "onnxruntime_gated_100"}
    assert report["inference"]["fast_path"]["int8_head"] is True
    assert report["inference"]["onnxruntime_over_fast"] == pytest.approx(speeds["onnxruntime"] / speeds["fast"])
    assert all(value > 0 for value in speeds.values())
    assert report["inference"]["fast_over_plain"] == pytest.approx(speeds["fast"] / speeds["plain_fp32"])
    assert set(report["training"]["crops_per_s"]) == {"plain_fp32", "fast", "loader_only"}


def test_bench_times_the_compiled_fast_path_beside_the_eager_one():
    from crackseg.bench.throughput import inference

    # torch.compile's "eager" backend: dynamo's graphs run by eager torch, the plumbing without inductor's compile
    report = inference(4, 32, 4, 1, torch.device("cpu"), "fp32", onnx=False, compile_backend="eager")
    speeds, compiled = report["crops_per_s"], report["compiled"]
    assert {"compiled", "compiled_gated_0", "compiled_gated_100"} <= set(speeds)
    assert compiled["backend"] == "eager" and compiled["compile_s"] > 0
    assert compiled["compiled_over_fast"] == pytest.approx(speeds["compiled"] / speeds["fast"])
    assert compiled["max_abs_diff"] == {"mask_prob": 0.0, "gate_prob": 0.0}  # the same operations


@pytest.mark.parametrize("share, expected", [(0.0, 0), (0.5, 3), (1.0, 6)])
def test_onnx_gated_decodes_exactly_the_share(share, expected):
    predictor = Predictor(tiny_model(), "cpu", engine="onnxruntime")
    predictor.chunk = 4  # the share is counted across chunks
    decoded = []
    decode = predictor.model.decode
    predictor.model.decode = lambda features, rows=None: decoded.append(
        len(features[0]) if rows is None else len(rows)) or decode(features, rows)
    run = onnx_gated(predictor, torch.randint(0, 256, (6, 3, 32, 32), dtype=torch.uint8), share)
    assert run() == 6 and sum(decoded) == expected


def test_agreement_compares_each_variant_with_plain_fp32(tiny_dataset):
    model = tiny_model(4)
    paths = sorted((tiny_dataset / "valid" / "images").iterdir())
    images = lambda: ((path, load_image(path)) for path in paths)  # noqa: E731
    with torch.no_grad():  # the gate open, and about half of the pixels called crack
        model.head.layers[-1].bias.fill_(20.0)
        crops = torch.stack([load_image(path)[:, :32, :32] for path in paths]).float() / 255
        model.decoder.head.bias -= model.decoder(*model.encoder(crops)).median()
    report = agreement(model, torch.device("cpu"), "fp32", images)
    tiles = sum(len(result.grid) for result in Predictor(model, fast=False).tiled(images()))
    plain = Predictor(model, fast=False)
    expected_pixels = sum(float((r.probs >= 0.5).sum()) for r in plain.tiled(images()))
    assert report["crack_pixels_fp32"] == expected_pixels > 0.2 * sum(64 * 64 for _ in paths)
    assert set(report) == {"crack_pixels_fp32", "fast", "fp32_int8_head", "onnxruntime"}
    for name in ("fast", "fp32_int8_head", "onnxruntime"):
        assert report[name]["tiles"] == tiles and 0.9 <= report[name]["tiles_gated_alike"] <= 1
        assert 0.9 <= report[name]["mask_dice_vs_fp32"] <= 1
    assert report["onnxruntime"]["mask_dice_vs_fp32"] > 0.999  # the same fp32 arithmetic


def test_photos_times_gated_and_always_decoding_on_the_photos_given(tiny_dataset):
    from crackseg.bench.media import photos

    model = tiny_model(4)
    paths = sorted((tiny_dataset / "valid" / "images").iterdir())
    images = lambda: ((path, load_image(path)) for path in paths)  # noqa: E731
    with torch.no_grad():  # a gate that decodes no tile
        model.head.layers[-1].bias.fill_(-20.0)
    report = photos(model, torch.device("cpu"), "fp32", images, rounds=1)
    assert report["overlap"] == 4  # predict's default: an eighth of the 32 px tile
    fewer = photos(model, torch.device("cpu"), "fp32", images, rounds=1, overlap=0, onnx=True)
    assert fewer["overlap"] == 0 and fewer["tiles"] == 3 * 2 * 2 < report["tiles"]  # 64 px photos: 2 x 2 tiles
    assert set(fewer["mp_per_s"]) == {"gated", "always_decoding", "gate_only", "v2_default", "gated_onnxruntime",
                                      "always_decoding_onnxruntime"}
    for name, ratio in fewer["onnxruntime_over_torch"].items():
        assert ratio == pytest.approx(fewer["photos_per_s"][f"{name}_onnxruntime"] / fewer["photos_per_s"][name],
                                      rel=0.01)
    pixels = sum(load_image(path).shape[1] * load_image(path).shape[2] for path in paths)
    assert report["photos"] == len(paths) and report["megapixels"] == round(pixels / 1e6, 3)
    assert report["decoded_share"] == 0.0 and model.threshold == 0.5  # the model given is left as it was
    assert set(report["mp_per_s"]) == {"gated", "always_decoding", "gate_only", "v2_default"}
    assert min(report["mp_per_s"].values()) > 0 and 0.0 <= report["decoder_share_of_gated"] <= 1.0
    limit = report["limit"]  # what the FLOPs allow at this run's GEMM peak, and the share of it reached
    assert min(limit["gemm_gflop_per_s"].values()) > 0 and limit["ran_in"] == "fp32"
    costs = limit["gflop_per_tile"]
    assert costs["gated"] == costs["gate_only"] < costs["always_decoding"]  # nothing decoded: the gate's cost
    assert set(limit["share_of_limit"]) == {"gated", "always_decoding", "gate_only"}
    for name in limit["share_of_limit"]:
        rate = report["mp_per_s"][name]
        assert limit["share_of_limit"][name] == pytest.approx(rate / limit["mp_per_s"][name]["fp32"], rel=0.02,
                                                              abs=0.0006)  # both are rounded to 3 decimals
    assert report["gated_over_always"] == pytest.approx(
        report["photos_per_s"]["gated"] / report["photos_per_s"]["always_decoding"], rel=0.01)
    v2 = report["v2_default"]  # predict as crackseg-v2 shipped: a quarter of the tile's overlap, unfused
    assert v2["overlap"] == 8 and v2["precision"] == "fp32" and v2["tiles"] == 3 * 3 * 3 >= report["tiles"]
    assert report["gated_over_v2_default"] == pytest.approx(
        report["photos_per_s"]["gated"] / report["photos_per_s"]["v2_default"], rel=0.01)


def test_photos_time_fp32_and_bf16_beside_auto_where_the_cpu_has_native_bf16(tiny_dataset, monkeypatch):
    from crackseg.bench import media

    monkeypatch.setattr(acceleration, "cpu_has_native_bf16", lambda: True)
    monkeypatch.setattr(acceleration, "_MEASURED", {})
    monkeypatch.setattr(acceleration, "_rates", lambda model, device, head: {"fp32": 2.0, "bf16": 1.0})
    paths = sorted((tiny_dataset / "valid" / "images").iterdir())[:1]
    report = media.photos(tiny_model(4), torch.device("cpu"), "auto", lambda: ((p, load_image(p)) for p in paths),
                          rounds=1)
    assert set(report["mp_per_s"]) == {"gated", "always_decoding", "gate_only", "gated_fp32", "gated_bf16",
                                       "v2_default"}
    assert report["limit"]["ran_in"] == "fp32"  # auto's pick, from the (faked) timing of a chunk
    assert "gated_fp32" not in media.photos(tiny_model(4), torch.device("cpu"), "fp32",
                                            lambda: ((p, load_image(p)) for p in paths), rounds=1)["mp_per_s"]
