"""Interrupted training loses nothing, and the same seed gives the same run (CPU)."""
import signal
import subprocess
import sys
import time

import pytest
import torch

from crackseg import UNetClassifier
from crackseg.checkpoints import CheckpointError, load_checkpoint, save_checkpoint
from crackseg.cli import run
from crackseg.models import UNet, VGGEncoderClassifier
from crackseg.synthetic import generate

TINY = "--width 4 --crop 32 --epochs 2 --milestones 1 --batch-size 4 --lr 0.01 --device cpu --seed 5".split()


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return generate(tmp_path_factory.mktemp("data"), seed=4, image_size=64, counts={"train": 24, "valid": 4})


def train_args(data, log_dir):
    return TINY + ["--data-root", str(data), "--log-dir", str(log_dir)]


def outcome(log_dir):
    """What a run leaves: its per-epoch logs and its final weights, optimiser and scheduler."""
    last = load_checkpoint(log_dir / "checkpoints" / "last.pth")
    return {"train": (log_dir / "csv" / "train.csv").read_text(), "valid": (log_dir / "csv" / "valid.csv").read_text(),
            "epoch": last["epoch"], "model": last["model"], "scheduler": last["scheduler"],
            "optimizer_steps": [s["step"] for s in last["optimizer"]["state"].values()]}


def assert_same(first, second):
    assert first["train"] == second["train"] and first["valid"] == second["valid"]
    assert first["epoch"] == second["epoch"] and first["scheduler"] == second["scheduler"]
    assert first["optimizer_steps"] == second["optimizer_steps"]
    assert first["model"].keys() == second["model"].keys()
    for key in first["model"]:
        assert torch.equal(first["model"][key], second["model"][key]), key


@pytest.fixture(scope="module")
def reference(data, tmp_path_factory):
    log_dir = tmp_path_factory.mktemp("reference")
    assert run("segmentation", train_args(data, log_dir)) == 0
    return outcome(log_dir)


def test_same_seed_same_data_same_metrics_and_weights(data, reference, tmp_path):
    assert run("segmentation", train_args(data, tmp_path)) == 0
    assert_same(outcome(tmp_path), reference)
    lrs = [line.split(",")[5] for line in reference["valid"].splitlines()[1:]]
    assert lrs == ["0.01", "0.001"]  # the milestone after epoch 1 took effect


def test_killed_mid_epoch_then_resumed_matches_an_uninterrupted_run(data, reference, tmp_path):
    # Every batch of the child takes at least 0.25 s (the numbers are untouched), so epoch 2 (7 batches) cannot
    # finish in the 0.5 s between the end of epoch 1 and the kill, however fast the machine.
    code = ("import sys, time; from crackseg import training; from crackseg.cli import run; "
            "collate = training.collate_crops; "
            "training.collate_crops = lambda batch: (time.sleep(0.25), collate(batch))[1]; "
            "sys.exit(run('segmentation', sys.argv[1:]))")
    process = subprocess.Popen([sys.executable, "-c", code] + train_args(data, tmp_path),
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    last = tmp_path / "checkpoints" / "last.pth"
    deadline = time.monotonic() + 300
    while not last.exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    time.sleep(0.5)  # into epoch 2
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert process.returncode == -signal.SIGKILL, "the run ended before it could be killed"
    assert load_checkpoint(last)["epoch"] == 1  # killed during epoch 2: only epoch 1 is complete
    assert len((tmp_path / "csv" / "valid.csv").read_text().splitlines()) == 2  # header + epoch 1

    assert run("segmentation", ["--resume", "--log-dir", str(tmp_path)]) == 0  # settings come from last.pth
    assert_same(outcome(tmp_path), reference)
    best = load_checkpoint(tmp_path / "checkpoints" / "best.pth")
    assert best["metrics"]["loss"] == min(float(line.split(",")[4])
                                          for line in reference["valid"].splitlines()[1:])


def test_resume_without_a_run_fails_clearly(tmp_path, capsys):
    assert run("segmentation", ["--resume", "--log-dir", str(tmp_path / "nothing")]) == 2
    assert "last.pth: no such checkpoint file" in capsys.readouterr().err


def test_checkpoint_errors_name_the_file_and_the_problem(tmp_path):
    (tmp_path / "notes.pth").write_text("not a checkpoint")
    with pytest.raises(CheckpointError, match="notes.pth: not a readable checkpoint"):
        load_checkpoint(tmp_path / "notes.pth")
    torch.save({"weights": torch.zeros(2)}, tmp_path / "foreign.pth")
    with pytest.raises(CheckpointError, match="foreign.pth: not a crackseg checkpoint"):
        load_checkpoint(tmp_path / "foreign.pth")


def write_pair(folder, seg_width=4, cls_width=4, crop=32):
    unet = UNet(seg_width)
    save_checkpoint(folder / "seg.pth", "segmentation", unet.state_dict(), {"width": seg_width, "crop": crop}, 1)
    classifier = VGGEncoderClassifier(UNet(cls_width).encoder, crop)
    save_checkpoint(folder / "cls.pth", "classification", classifier.state_dict(), {"width": cls_width, "crop": crop},
                    1)
    return folder / "seg.pth", folder / "cls.pth"


def test_the_wrong_stage_or_a_width_mismatch_is_a_clear_error(tmp_path):
    seg, cls = write_pair(tmp_path)
    with pytest.raises(CheckpointError, match="cls.pth: a classification checkpoint, but a segmentation"):
        UNetClassifier.from_checkpoints(cls, seg)
    seg, cls = write_pair(tmp_path, seg_width=8)
    with pytest.raises(CheckpointError, match=r"seg.pth: width 8 does not match .*cls.pth \(width 4\)"):
        UNetClassifier.from_checkpoints(seg, cls)


def test_weights_that_disagree_with_the_stored_hyperparameters_are_a_clear_error(tmp_path):
    seg, cls = write_pair(tmp_path)
    payload = load_checkpoint(cls)
    save_checkpoint(cls, "classification", payload["model"], {"width": 4, "crop": 64}, 1)  # head was built for 32
    with pytest.raises(CheckpointError, match="cls.pth: its head weights do not fit a width-4, crop-64 model"):
        UNetClassifier.from_checkpoints(seg, cls)
