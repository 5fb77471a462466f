"""Both stages with two CPU processes through Catalyst's distributed data-parallel engine (gloo)."""
import socket

import pytest
import torch

from crackseg.cli.train import run
from crackseg.data.synthetic import generate
from crackseg.files.checkpoints import load_checkpoint
from crackseg.training.config import build_config
from crackseg.training.loop import validate

EXACT = {"segmentation": ("dice", "iou", "precision", "recall"),
         "classification": ("precision_0", "recall_0", "f1_0", "precision_1", "recall_1", "f1_1")}
SUMMED = {"segmentation": ("loss", "bce", "soft_dice"), "classification": ("loss",)}


def free_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_two_processes_train_both_stages_and_reduce_metrics_over_all_shards(tmp_path):
    # 8 train and 5 valid images, 2 a batch: one process validates 3 images, the other 2. accelerate padded the
    # second one's shard with the first image again, which the metrics counted twice.
    data = generate(tmp_path / "data", seed=6, image_size=64, counts={"train": 8, "valid": 5})
    common = ["--epochs", "1", "--batch-size", "2", "--device", "cpu", "--processes", "2", "--data-root", str(data)]
    stages = {"segmentation": ["--width", "4", "--crop", "32"],
              "classification": ["--segmentation-checkpoint", str(tmp_path / "segmentation/checkpoints/best.pth")]}
    for stage, extra in stages.items():
        log_dir = tmp_path / stage
        args = common + extra + ["--log-dir", str(log_dir), "--master-port", str(free_port())]
        assert run(stage, args) == 0
        checkpoint = load_checkpoint(log_dir / "checkpoints" / "best.pth", stage=stage)
        assert checkpoint["epoch"] == 1 and checkpoint["config"]["processes"] == 2
        rows = (log_dir / "csv" / "valid.csv").read_text().splitlines()
        assert len(rows) == 2  # one header, one epoch: only rank 0 logs
        # The metrics the two processes reduced equal a single-process evaluation of the same checkpoint.
        single = validate(build_config(stage, {**checkpoint["config"], "processes": 1}), checkpoint)
        for key in EXACT[stage]:
            assert checkpoint["metrics"][key] == single[key], key
        for key in SUMMED[stage]:
            assert checkpoint["metrics"][key] == pytest.approx(single[key], rel=1e-5), key


def test_two_processes_resume_exactly_where_they_stopped(tmp_path):
    # Each worker must own its restored optimizer state: resumed Adam moments shared between the workers were
    # updated by both, and their weights drifted apart.
    data = generate(tmp_path / "data", seed=7, image_size=64, counts={"train": 8, "valid": 4})
    common = ["--width", "4", "--crop", "32", "--batch-size", "2", "--device", "cpu", "--processes", "2",
              "--milestones", "1", "--data-root", str(data)]
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    assert run("segmentation", common + ["--epochs", "2", "--log-dir", str(straight),
                                         "--master-port", str(free_port())]) == 0
    assert run("segmentation", common + ["--epochs", "1", "--log-dir", str(resumed),
                                         "--master-port", str(free_port())]) == 0
    assert run("segmentation", ["--resume", "--epochs", "2", "--log-dir", str(resumed),
                                "--master-port", str(free_port())]) == 0
    first, second = (load_checkpoint(folder / "checkpoints" / "last.pth") for folder in (straight, resumed))
    assert first["epoch"] == second["epoch"] == 2
    assert [s["step"] for s in second["optimizer"]["state"].values()] == \
        [s["step"] for s in first["optimizer"]["state"].values()] == [4.0] * len(first["optimizer"]["state"])
    for key in first["state"]:
        assert torch.equal(first["state"][key], second["state"][key]), key
    assert (straight / "csv" / "valid.csv").read_text() == (resumed / "csv" / "valid.csv").read_text()
