"""One-epoch Catalyst runs of both stages on a tiny synthetic dataset, through the command-line entry."""
import logging

import pytest
import torch

from crackseg import UNetClassifier
from crackseg.cli.train import build_parser, run
from crackseg.files.checkpoints import load_checkpoint
from crackseg.models import UNet
from crackseg.training import launch
from crackseg.training import loop as training
from crackseg.training.config import build_config
from crackseg.training import config as config_module
from crackseg.training.config import mixed_precision

TINY = ["--width", "4", "--crop", "32", "--epochs", "1", "--batch-size", "2", "--lr", "0.01", "--device", "cpu"]


@pytest.fixture(scope="module")
def stage_one(tmp_path_factory):
    root = tmp_path_factory.mktemp("run")
    data = root / "data"
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(launch, "SYNTHETIC_COUNTS", {"train": 8, "valid": 4})  # a small embedded default
        argv = TINY + ["--data-root", str(data), "--synthetic", "--log-dir", str(root / "seg")]
        assert run("segmentation", argv) == 0
    return root


def test_segmentation_generates_data_trains_and_checkpoints(stage_one):
    assert (stage_one / "data" / "synthetic.json").is_file()  # the embedded default was generated
    assert len(list((stage_one / "data" / "train" / "images").iterdir())) == 8
    assert len(list((stage_one / "data" / "valid" / "masks").iterdir())) == 4
    checkpoint = load_checkpoint(stage_one / "seg" / "checkpoints" / "best.pth", stage="segmentation")
    assert checkpoint["epoch"] == 1 and checkpoint["config"]["width"] == 4 and checkpoint["config"]["crop"] == 32
    assert checkpoint["model"] == UNet.from_settings(checkpoint["model"]).settings() == {
        "width": 4, "skip_dropout": checkpoint["config"]["skip_dropout"], "depth": 4}
    for key in ("loss", "bce", "dice", "iou"):
        assert 0.0 <= checkpoint["metrics"][key] <= 10.0, key
    header = (stage_one / "seg" / "csv" / "valid.csv").read_text().splitlines()[0].split(",")
    assert {"step", "loss", "bce", "dice", "iou"} <= set(header)
    assert any((stage_one / "seg" / "tensorboard").rglob("events.out.tfevents.*"))
    assert (stage_one / "seg" / "curves.png").stat().st_size > 1000  # drawn at the end of training


def test_classification_freezes_the_stage_one_encoder_and_combines(stage_one):
    seg_path = stage_one / "seg" / "checkpoints" / "best.pth"
    argv = ["--epochs", "1", "--batch-size", "2", "--device", "cpu", "--data-root", str(stage_one / "data"),
            "--log-dir", str(stage_one / "cls"), "--segmentation-checkpoint", str(seg_path)]
    assert run("classification", argv) == 0
    seg = load_checkpoint(seg_path, stage="segmentation")
    cls = load_checkpoint(stage_one / "cls" / "checkpoints" / "best.pth", stage="classification")
    for key in ("width", "crop", "skip_dropout"):  # read from stage 1's checkpoint
        assert cls["config"][key] == seg["config"][key], key
    assert cls["config"]["crop"] == 32
    for key in ("precision_0", "recall_1", "f1_mean", "loss"):
        assert key in cls["metrics"]
    encoder_keys = [k for k in seg["state"] if k.startswith("encoder.")]
    assert any("running_mean" in k for k in encoder_keys)
    for key in encoder_keys:  # weights AND BatchNorm statistics unchanged by a classification epoch
        assert torch.equal(seg["state"][key], cls["state"][key]), key

    model = UNetClassifier.from_checkpoints(seg_path, stage_one / "cls" / "checkpoints" / "best.pth", threshold=0.0)
    assert not model.training
    images = torch.rand(3, 3, 32, 32)
    with torch.no_grad():
        masks, probs = model(images)
        unet_logits = model.decoder(*model.encoder(images))
    assert masks.shape == (3, 1, 32, 32) and probs.shape == (3, 1)
    torch.testing.assert_close(masks, torch.sigmoid(unet_logits))  # threshold 0: every image decoded


def test_freeze_encoder_trains_the_decoder_alone_and_keeps_the_head_valid(stage_one, capsys):
    seg_path = stage_one / "seg" / "checkpoints" / "best.pth"
    argv = TINY + ["--data-root", str(stage_one / "data"), "--log-dir", str(stage_one / "frozen"),
                   "--init", str(seg_path), "--freeze-encoder"]
    assert run("segmentation", argv) == 0
    before = load_checkpoint(seg_path, stage="segmentation")["state"]
    after = load_checkpoint(stage_one / "frozen" / "checkpoints" / "last.pth", stage="segmentation")["state"]
    encoder = [key for key in before if key.startswith("encoder.")]
    assert any("running_mean" in key for key in encoder)
    for key in encoder:  # weights and BatchNorm statistics as they were: a head trained on them still fits
        assert torch.equal(before[key], after[key]), key
    assert any(not torch.equal(before[key], after[key]) for key in before if key.startswith("decoder."))
    capsys.readouterr()
    assert run("segmentation", TINY + ["--data-root", str(stage_one / "data"), "--freeze-encoder",
                                       "--log-dir", str(stage_one / "nothing")]) == 2
    assert "--freeze-encoder needs --init" in capsys.readouterr().err


def test_classification_without_stage_one_fails_clearly(tmp_path, capsys):
    code = run("classification", ["--segmentation-checkpoint", str(tmp_path / "missing.pth")])
    assert code == 2
    err = capsys.readouterr().err
    assert "missing.pth: no such checkpoint file" in err and "python segmentation.py" in err


def test_presets():
    thesis = build_config("segmentation", {"preset": "thesis", "device": "cpu"})
    schedule = (thesis.epochs, thesis.batch_size, thesis.lr, thesis.milestones, thesis.seed)
    assert schedule == (64, 12, 1e-2, (2, 32, 48), 17)
    assert (thesis.width, thesis.crop, thesis.gamma, thesis.skip_dropout) == (32, 224, 0.1, 0.0)
    auto = build_config("segmentation", {"device": "cpu"})
    assert auto.preset == "cpu" and auto.crop < 224 and auto.skip_dropout == 0.5
    explicit = build_config("classification", {"device": "cpu", "epochs": 3, "lr": 0.5})
    assert (explicit.epochs, explicit.lr, explicit.log_dir) == (3, 0.5, "logs/classification")


def test_amp_precision_follows_the_hardware(monkeypatch, caplog):
    caplog.set_level(logging.INFO, logger="crackseg")
    monkeypatch.setattr(logging.getLogger("crackseg"), "propagate", True)  # the commands show it on the console
    monkeypatch.setattr(config_module, "cpu_has_native_bf16", lambda: True)
    assert mixed_precision(build_config("segmentation", {"device": "cpu"})) == "no"  # without --amp
    assert mixed_precision(build_config("segmentation", {"device": "cpu", "amp": True})) == "bf16"
    assert mixed_precision(build_config("segmentation", {"device": "cuda", "amp": True})) == "fp16"
    monkeypatch.setattr(config_module, "cpu_has_native_bf16", lambda: False)
    assert mixed_precision(build_config("segmentation", {"device": "cpu", "amp": True})) == "no"
    assert "no native bfloat16" in caplog.text


def test_amp_trains_in_bf16_with_channels_last(tiny_dataset, tmp_path, monkeypatch):
    # On CPUs without native bf16 the arithmetic is emulated (slow, same numbers): fine for a tiny model.
    monkeypatch.setattr(config_module, "cpu_has_native_bf16", lambda: True)
    layouts = []
    original = training.training_layout
    monkeypatch.setattr(training, "training_layout",
                        lambda model, reduced: layouts.append(reduced) or original(model, reduced))
    argv = TINY + ["--data-root", str(tiny_dataset)]
    assert run("segmentation", argv + ["--log-dir", str(tmp_path / "fp32")]) == 0  # in the same process first
    assert run("segmentation", argv + ["--log-dir", str(tmp_path / "seg"), "--amp"]) == 0
    assert layouts == [False, True]
    checkpoint = load_checkpoint(tmp_path / "seg" / "checkpoints" / "best.pth", stage="segmentation")
    weight = checkpoint["state"]["encoder.blocks.1.0.weight"]  # fp32 master weights, kept channels-last
    assert weight.dtype == torch.float32 and weight.is_contiguous(memory_format=torch.channels_last)
    assert not weight.is_contiguous()
    assert checkpoint["config"]["amp"] is True
    for key in ("loss", "dice", "iou"):
        assert 0.0 <= checkpoint["metrics"][key] <= 10.0, key
    model = UNetClassifier(4, 32)
    model.encoder.load_state_dict({k[len("encoder."):]: v for k, v in checkpoint["state"].items()
                                   if k.startswith("encoder.")})  # loads into an ordinary model


def test_several_data_roots_and_negatives_in_one_run(tmp_path):
    from PIL import Image

    from crackseg.data.synthetic import generate
    from crackseg.training.loop import config_sources, make_loaders

    first = generate(tmp_path / "first", seed=1, image_size=64, counts={"train": 4, "valid": 2})
    second = generate(tmp_path / "second", seed=2, image_size=64, counts={"train": 3, "valid": 2})
    plain = tmp_path / "plain"
    plain.mkdir()
    for index in range(10):  # crack-free photos without masks: 8 for training, every 5th (2) for validation
        Image.new("RGB", (64, 64), (90 + index, 90, 90)).save(plain / f"{index:02d}.jpg")
    argv = TINY + ["--data-root", str(first), "--data-root", str(second), "--data-weights", "1", "2",
                   "--negatives", str(plain), "--markings", "0.5", "--joints", "0.25",
                   "--sampling", "window", "--zoom", "0.8", "1.5", "--log-dir", str(tmp_path / "seg")]
    assert run("segmentation", argv) == 0
    header = (tmp_path / "seg" / "csv" / "valid.csv").read_text().splitlines()[0].split(",")
    assert {"dice", "dice/first", "dice/second", "dice/plain", "iou/second"} <= set(header)
    checkpoint = load_checkpoint(tmp_path / "seg" / "checkpoints" / "best.pth", stage="segmentation")
    assert checkpoint["config"]["data_root"] == [str(first), str(second)]
    assert checkpoint["config"]["negatives"] == [str(plain)] and checkpoint["config"]["data_weights"] == [1, 2]

    config = build_config("segmentation", {**checkpoint["config"], "device": "cpu"})
    loaders = make_loaders(config, config_sources(config))
    train, valid = loaders["train"].dataset, loaders["valid"].dataset
    assert len(train) == 4 + 2 * 3 + 8 and len(valid) == 2 + 2 + 2
    assert sorted(set(train.groups)) == [0, 1, 2] and train.groups.count(1) == 6
    images, masks, labels, groups = train[len(train) - 1]  # a negative: empty mask, "no crack" labels
    assert masks.sum() == 0 and labels.sum() == 0 and groups.tolist() == [2] * 5

    # stage 2 trains on stage 1's data unless told otherwise
    seg_path = tmp_path / "seg" / "checkpoints" / "best.pth"
    assert run("classification", ["--epochs", "1", "--batch-size", "2", "--device", "cpu", "--log-dir",
                                  str(tmp_path / "cls"), "--segmentation-checkpoint", str(seg_path)]) == 0
    stage_two = load_checkpoint(tmp_path / "cls" / "checkpoints" / "best.pth", stage="classification")
    assert stage_two["config"]["data_root"] == [str(first), str(second)]
    assert stage_two["config"]["negatives"] == [str(plain)] and stage_two["config"]["markings"] == 0.5
    assert stage_two["config"]["joints"] == 0.25 and stage_two["config"]["zoom"] == [0.8, 1.5]
    assert "f1_mean/plain" in stage_two["metrics"] and "f1_mean/first" in stage_two["metrics"]
    # FiveCrop of whole photos in stage 2: stage 1's zoom (of windows) is not inherited, and no error names it
    flags = ["--segmentation-checkpoint", str(seg_path), "--sampling", "five", "--device", "cpu"]
    config, _ = launch.resolve("classification", vars(build_parser("classification").parse_args(flags)))
    assert config.sampling == "five" and config.zoom == (1.0, 1.0)


def test_metrics_per_source_come_from_that_source_only():
    from crackseg.analysis.metrics import segmentation_scores
    from crackseg.training.runner import SplitTotals

    totals = SplitTotals((), ("a", "b"))
    totals.add([0.5], 10, torch.tensor([[8, 2, 0, 90], [1, 0, 3, 96]]))
    metrics = totals.metrics(segmentation_scores)
    assert metrics["dice/a"] == pytest.approx(16 / 18) and metrics["dice/b"] == pytest.approx(2 / 5)
    assert metrics["dice"] == pytest.approx(18 / 23) and metrics["loss"] == pytest.approx(0.5)


def test_a_mistyped_data_root_is_an_error_and_nothing_is_generated(tmp_path, capsys):
    assert run("segmentation", TINY + ["--data-root", str(tmp_path / "typo"), "--log-dir", str(tmp_path / "log")]) == 2
    assert "typo: no such folder (--data-root)" in capsys.readouterr().err
    assert not (tmp_path / "typo").exists() and not (tmp_path / "log").exists()
    assert run("segmentation", TINY + ["--data-root", str(tmp_path / "x"), "--data-weights", "1", "2"]) == 2
    assert "one per --data-root" in capsys.readouterr().err


def test_a_head_is_never_combined_with_the_decoder_of_another_stage_one_run(stage_one, tmp_path):
    from crackseg.errors import CheckpointError

    seg_path = stage_one / "seg" / "checkpoints" / "best.pth"
    argv = ["--epochs", "1", "--batch-size", "2", "--device", "cpu", "--data-root", str(stage_one / "data"),
            "--log-dir", str(tmp_path / "cls"), "--segmentation-checkpoint", str(seg_path)]
    assert run("classification", argv) == 0
    cls_path = tmp_path / "cls" / "checkpoints" / "best.pth"
    assert len(load_checkpoint(cls_path)["encoder_fingerprint"]) == 16
    UNetClassifier.from_checkpoints(seg_path, cls_path)  # the matching pair loads
    # stage 1 retrained afterwards (another seed): same width, other encoder
    assert run("segmentation", TINY + ["--data-root", str(stage_one / "data"), "--seed", "99",
                                       "--log-dir", str(tmp_path / "seg2")]) == 0
    with pytest.raises(CheckpointError, match="trained on another stage-1 model"):
        UNetClassifier.from_checkpoints(tmp_path / "seg2" / "checkpoints" / "best.pth", cls_path)


def test_console_lines_show_four_significant_digits_and_the_csv_keeps_full_precision(tiny_dataset, tmp_path, capsys):
    assert run("segmentation", TINY + ["--data-root", str(tiny_dataset), "--log-dir", str(tmp_path)]) == 0
    line = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("valid (1/1)"))
    values = dict(part.split(": ") for part in line.split(") ", 1)[1].split(" | "))
    assert all(len(value.replace(".", "").replace("-", "").lstrip("0")) <= 4 or "e" in value
               for value in values.values()), line
    header, row = (tmp_path / "csv" / "valid.csv").read_text().splitlines()[:2]
    assert len(dict(zip(header.split(","), row.split(",")))["bce"]) > 8


def test_the_segmentation_loss_weighs_bce_and_dice_as_configured():
    from crackseg.errors import ConfigError
    from crackseg.training.runner import SegmentationRunner

    logits = torch.randn(2, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    masks = (torch.rand(2, 1, 8, 8, generator=torch.Generator().manual_seed(1)) > 0.8).float()
    losses = {}
    for weight in (None, 0.0, 1.0):
        config = build_config("segmentation", {"device": "cpu", "bce_weight": weight})
        losses[weight], parts = SegmentationRunner(config).compute_loss(logits, {"masks": masks})
    assert losses[1.0] == pytest.approx(float(parts["bce"]))  # all BCE
    assert losses[0.0] == pytest.approx(1 - float(parts["soft_dice"]))  # all Dice
    assert losses[None] == pytest.approx(0.9 * float(parts["bce"]) + 0.1 * (1 - float(parts["soft_dice"])))  # SPEC
    with pytest.raises(ConfigError, match="--bce-weight"):
        build_config("segmentation", {"device": "cpu", "bce_weight": 1.5})


@pytest.mark.parametrize("flags, message", [({"zoom": [0.0, 2.0]}, "0 < LOW <= HIGH"),
                                            ({"zoom": [2.0, 1.0]}, "0 < LOW <= HIGH"),
                                            ({"zoom": [1.0, 2.0], "sampling": "five"}, "needs --sampling window")])
def test_a_zoom_is_a_range_of_window_sampling(flags, message):
    from crackseg.errors import ConfigError

    assert build_config("segmentation", {"device": "cpu"}).zoom == (1.0, 1.0)  # none by default
    assert build_config("segmentation", {"device": "cpu", "sampling": "window", "zoom": [0.7, 2]}).zoom == (0.7, 2)
    with pytest.raises(ConfigError, match=message):
        build_config("segmentation", {"device": "cpu", "sampling": "window", **flags})


def test_interpolate_blends_two_stage_one_checkpoints_weight_by_weight(tmp_path, capsys):
    from crackseg.cli import main
    from crackseg.files.checkpoints import save_checkpoint

    def checkpoint(name, seed, width=4):
        torch.manual_seed(seed)
        unet = UNet(width)
        unet.encoder.blocks[0][1].running_mean.uniform_()  # BatchNorm statistics that differ between the two
        save_checkpoint(tmp_path / name, "segmentation", unet.state_dict(), unet.settings(),
                        {"width": width, "crop": 32, "skip_dropout": 0.0}, epoch=3)
        return unet.state_dict()

    start, tuned = checkpoint("start.pth", 1), checkpoint("tuned.pth", 2)
    for alpha in (0.0, 0.25, 1.0):
        out = tmp_path / f"blend{alpha}.pth"
        assert main(["interpolate", str(tmp_path / "tuned.pth"), "--start", str(tmp_path / "start.pth"),
                     "--alpha", str(alpha), "--out", str(out)]) == 0
        blend = load_checkpoint(out, stage="segmentation")
        assert blend["interpolated"]["alpha"] == alpha and blend["epoch"] == 3
        for key, value in blend["state"].items():
            expected = ((1 - alpha) * start[key] + alpha * tuned[key] if value.is_floating_point() else tuned[key])
            torch.testing.assert_close(value, expected, rtol=0, atol=1e-6)
        UNet(4).load_state_dict(blend["state"])  # a network again
    assert not torch.equal(start["encoder.blocks.0.0.weight"], tuned["encoder.blocks.0.0.weight"])
    checkpoint("wide.pth", 3, width=8)
    assert main(["interpolate", str(tmp_path / "wide.pth"), "--start", str(tmp_path / "start.pth"), "--alpha", "0.5",
                 "--out", str(tmp_path / "x.pth")]) == 2
    assert "not the same network" in capsys.readouterr().err
    assert main(["interpolate", str(tmp_path / "tuned.pth"), "--start", str(tmp_path / "start.pth"), "--alpha", "1.5",
                 "--out", str(tmp_path / "x.pth")]) == 2
    assert "--alpha must be in [0, 1]" in capsys.readouterr().err
    assert not (tmp_path / "x.pth").exists()


def test_the_teacher_part_is_a_weighted_bce_towards_its_probabilities_on_the_roots_it_names():
    from crackseg.training.distillation import distillation_loss

    teacher = torch.randn(3, 1, 8, 8, generator=torch.Generator().manual_seed(2))
    student = teacher.clone().requires_grad_(True)
    weights = torch.tensor([1.0, 0.0, 2.0])
    distillation_loss(student, teacher, weights).backward()
    assert float(student.grad.abs().max()) < 1e-7  # no pull where the two agree
    moved = teacher + torch.randn(3, 1, 8, 8, generator=torch.Generator().manual_seed(3))
    soft = torch.sigmoid(teacher)
    per_crop = torch.nn.functional.binary_cross_entropy(torch.sigmoid(moved), soft, reduction="none").mean((1, 2, 3))
    expected = (per_crop[0] + 2 * per_crop[2]) / 3  # crop 1 has weight 0
    assert float(distillation_loss(moved, teacher, weights)) == pytest.approx(float(expected), rel=1e-5)
    changed = moved.clone()
    changed[1] += 5  # the unweighted crop changes nothing
    assert float(distillation_loss(changed, teacher, weights)) == pytest.approx(float(expected), rel=1e-5)


def test_a_run_with_a_teacher_distils_on_the_roots_it_weighs_and_refuses_a_wrong_count(stage_one, tmp_path, capsys):
    from crackseg.data.synthetic import generate
    from crackseg.errors import ConfigError
    from crackseg.training.runner import SegmentationRunner

    seg_path = stage_one / "seg" / "checkpoints" / "best.pth"
    other = generate(tmp_path / "other", seed=5, image_size=64, counts={"train": 4, "valid": 2})
    argv = TINY + ["--data-root", str(stage_one / "data"), str(other), "--init", str(seg_path),
                   "--teacher", str(seg_path), "--teacher-weights", "1", "0", "--log-dir", str(tmp_path / "seg")]
    assert run("segmentation", argv) == 0
    checkpoint = load_checkpoint(tmp_path / "seg" / "checkpoints" / "best.pth", stage="segmentation")
    assert checkpoint["config"]["teacher"] == str(seg_path) and checkpoint["config"]["teacher_weights"] == [1.0, 0.0]
    assert checkpoint["metrics"]["distil"] > 0 and "distil" in (tmp_path / "seg" / "csv" / "train.csv").read_text()

    # the part: the teacher's own logits give the BCE minimum (its entropy); crops of a 0-weight root add nothing
    config = build_config("segmentation", {**checkpoint["config"], "device": "cpu"})
    runner = SegmentationRunner(config, ("data", "other"))
    images = torch.rand(4, 3, 32, 32)
    teacher = UNet(4).eval()
    teacher.load_state_dict(load_checkpoint(seg_path, stage="segmentation")["state"])
    with torch.no_grad():
        logits = teacher(images)
    batch = {"images": images, "masks": torch.zeros(4, 1, 32, 32), "groups": torch.tensor([0, 0, 1, 1])}
    _, parts = runner.compute_loss(logits, batch)
    soft = torch.sigmoid(logits[:2])
    entropy = torch.nn.functional.binary_cross_entropy(soft, soft, reduction="none").mean((1, 2, 3)).sum() / 4
    assert float(parts["distil"]) == pytest.approx(float(entropy), rel=1e-4)
    _, parts = runner.compute_loss(logits + torch.randn(4, 1, 32, 32), {**batch, "groups": torch.tensor([1] * 4)})
    assert float(parts["distil"]) == 0.0

    with pytest.raises(ConfigError, match="--teacher-weights: 1 weight"):
        build_config("segmentation", {**checkpoint["config"], "device": "cpu", "teacher_weights": [1.0]})
    with pytest.raises(ConfigError, match="needs --teacher"):
        build_config("segmentation", {"device": "cpu", "teacher_weights": [1.0]})
    assert run("segmentation", TINY + ["--teacher", str(tmp_path / "missing.pth"), "--log-dir",
                                       str(tmp_path / "x")]) == 2
    assert "missing.pth" in capsys.readouterr().err
