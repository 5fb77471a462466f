"""Interrupted training loses nothing, and the same seed gives the same run (CPU)."""
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from crackseg import UNetClassifier
from crackseg.cli import main
from crackseg.cli.train import build_parser, run
from crackseg.data.synthetic import generate
from crackseg.errors import CheckpointError
from crackseg.files.checkpoints import load_checkpoint, save_checkpoint
from crackseg.models import UNet, VGGEncoderClassifier

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
            "epoch": last["epoch"], "model": last["state"], "scheduler": last["scheduler"],
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


def test_each_epoch_line_shows_the_learning_rate_it_trained_with(data, tmp_path, capsys):
    assert run("segmentation", train_args(data, tmp_path)) == 0  # x0.1 after epoch 1
    epochs = [line for line in capsys.readouterr().out.splitlines() if line.startswith("* Epoch")]
    assert [re.search(r"lr: ([0-9.e-]+)", line).group(1) for line in epochs] == ["0.01", "0.001"], epochs


def test_crackseg_train_is_the_stage_scripts_with_the_same_flags(data, reference, tmp_path, capsys):
    assert main(["train", "segmentation", *train_args(data, tmp_path)]) == 0
    assert_same(outcome(tmp_path), reference)  # the same run as `python segmentation.py` with these flags
    for stage in ("segmentation", "classification"):
        script = {option for action in build_parser(stage)._actions for option in action.option_strings}
        with pytest.raises(SystemExit):
            main(["train", stage, "--help"])
        listed = set(re.findall(r"(?<![\w-])--[a-z][a-z-]*", capsys.readouterr().out))
        assert listed == {option for option in script if option.startswith("--")} and len(listed) > 25
    lrs = [line.split(",")[5] for line in reference["valid"].splitlines()[1:]]
    assert lrs == ["0.01", "0.001"]  # the milestone after epoch 1 took effect


def test_killed_mid_epoch_then_resumed_matches_an_uninterrupted_run(data, reference, tmp_path):
    # Every batch of the child takes at least 0.25 s (the numbers are untouched), so epoch 2 (7 batches) cannot
    # finish in the 0.5 s between the end of epoch 1 and the kill, however fast the machine.
    code = ("import sys, time; from crackseg.training import loop as training; "
            "from crackseg.cli.train import run; "
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
    save_checkpoint(folder / "seg.pth", "segmentation", unet.state_dict(), unet.settings(),
                    {"width": seg_width, "crop": crop}, 1)
    classifier = VGGEncoderClassifier(UNet(cls_width).encoder, crop)
    save_checkpoint(folder / "cls.pth", "classification", classifier.state_dict(), classifier.settings(),
                    {"width": cls_width, "crop": crop}, 1)
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
    save_checkpoint(cls, "classification", payload["state"], {**payload["model"], "crop_size": 64},
                    {"width": 4, "crop": 64}, 1)  # the head was built for 32
    with pytest.raises(CheckpointError, match="cls.pth: its head weights do not fit a width-4, crop-64 model"):
        UNetClassifier.from_checkpoints(seg, cls)


def test_a_checkpoint_written_before_models_carried_their_settings_still_loads(tmp_path):
    torch.manual_seed(5)
    unet = UNet(4, skip_dropout=0.5)
    classifier = VGGEncoderClassifier(unet.encoder, 32)
    seg, cls = tmp_path / "new" / "seg.pth", tmp_path / "new" / "cls.pth"
    save_checkpoint(seg, "segmentation", unet.state_dict(), unet.settings(), {}, 1)
    save_checkpoint(cls, "classification", classifier.state_dict(), classifier.settings(), {}, 1)
    for path, config in ((seg, {"width": 4, "crop": 32, "skip_dropout": 0.5}), (cls, {"width": 4, "crop": 32})):
        payload = load_checkpoint(path)  # the old layout: weights under "model", settings only in the config
        old = {"format": payload["format"], "stage": payload["stage"], "config": config, "epoch": 1, "metrics": {},
               "model": payload["state"]}
        torch.save(old, tmp_path / path.name)
    upgraded = load_checkpoint(tmp_path / "seg.pth")
    assert upgraded["model"] == {"width": 4, "skip_dropout": 0.5, "depth": 4} and "encoder.blocks.0.0.weight" in \
        upgraded["state"]
    images = torch.rand(3, 3, 32, 32)
    with torch.no_grad():
        new = UNetClassifier.from_checkpoints(seg, cls)(images)
        old = UNetClassifier.from_checkpoints(tmp_path / "seg.pth", tmp_path / "cls.pth")(images)
    assert all(torch.equal(a, b) for a, b in zip(new, old))
    torch.save({**load_checkpoint(seg), "model": {"width": 4, "depth": 5}}, seg)
    with pytest.raises(CheckpointError, match="seg.pth: a U-Net of depth 5"):
        UNetClassifier.from_checkpoints(seg, cls)


def test_resume_with_loader_workers_matches_an_uninterrupted_run(data, tmp_path):
    workers = ["--workers", "2"]
    assert run("segmentation", train_args(data, tmp_path / "whole") + workers) == 0
    one_epoch = train_args(data, tmp_path / "parts") + workers
    one_epoch[one_epoch.index("--epochs") + 1] = "1"
    assert run("segmentation", one_epoch) == 0
    assert run("segmentation", ["--resume", "--epochs", "2", "--log-dir", str(tmp_path / "parts")]) == 0
    whole, parts = outcome(tmp_path / "whole"), outcome(tmp_path / "parts")
    assert_same(parts, whole)


def test_checkpoints_are_flushed_to_disk_before_and_after_the_rename(tmp_path, monkeypatch):
    import os

    synced = []
    real_fsync = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: synced.append(os.readlink(f"/proc/self/fd/{fd}")) or real_fsync(fd))
    save_checkpoint(tmp_path / "c.pth", "segmentation", {"w": torch.zeros(1)}, {"width": 1}, {}, 1)
    assert synced == [str(tmp_path / "c.pth.tmp"), str(tmp_path)]
    assert not (tmp_path / "c.pth.tmp").exists() and load_checkpoint(tmp_path / "c.pth")["epoch"] == 1


def test_a_fresh_run_never_replaces_a_previous_one_silently(data, reference, tmp_path, capsys):
    assert run("segmentation", train_args(data, tmp_path)) == 0
    before = (tmp_path / "csv" / "valid.csv").read_text()
    one_epoch = train_args(data, tmp_path)
    one_epoch[one_epoch.index("--epochs") + 1] = "1"
    assert run("segmentation", one_epoch) == 2
    err = capsys.readouterr().err
    assert "already holds a run" in err and "--overwrite" in err and "--resume" in err
    assert (tmp_path / "csv" / "valid.csv").read_text() == before and load_checkpoint(
        tmp_path / "checkpoints" / "last.pth")["epoch"] == 2
    assert run("segmentation", one_epoch + ["--overwrite"]) == 0
    assert load_checkpoint(tmp_path / "checkpoints" / "last.pth")["epoch"] == 1
    assert len((tmp_path / "csv" / "valid.csv").read_text().splitlines()) == 2


@pytest.mark.parametrize("flags, message", [
    (["--crop", "48"], "--crop must be a multiple of 32"),
    (["--skip-dropout", "1"], "--skip-dropout must be in [0, 1)"),
    (["--markings", "1.5"], "--markings must be in [0, 1]"),
    (["--joints", "-0.1"], "--joints must be in [0, 1]"),
    (["--epochs", "0"], "--epochs must be at least 1"),
    (["--lr", "-1"], "--lr must be positive"),
    (["--node-rank", "2", "--nodes", "2"], "--node-rank must be in 0..1"),
])
def test_bad_flags_stop_before_any_work(data, tmp_path, capsys, flags, message):
    assert run("segmentation", train_args(data, tmp_path / "log") + flags) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "log").exists()


def test_a_loss_that_becomes_nan_stops_the_run_naming_epoch_and_step(data, tmp_path, monkeypatch, capsys):
    from crackseg.training import runner as training

    real = training.SegmentationRunner.compute_loss
    calls = []

    def poisoned(self, logits, batch):
        calls.append(self.epoch_step)
        loss, parts = real(self, logits, batch)
        return (loss * float("nan"), parts) if self.epoch_step == 2 and self.loader_batch_step == 3 else (loss, parts)

    monkeypatch.setattr(training.SegmentationRunner, "compute_loss", poisoned)
    assert run("segmentation", train_args(data, tmp_path)) == 2
    err = capsys.readouterr().err
    assert "loss became nan in epoch 2, step 3 of" in err and "checkpoints of epoch 1 are kept" in err
    assert load_checkpoint(tmp_path / "checkpoints" / "last.pth")["epoch"] == 1
    assert max(calls) == 2  # stopped in epoch 2


def test_resume_may_reschedule_the_rest_of_a_run(data, tmp_path):
    args = train_args(data, tmp_path)
    args[args.index("--epochs") + 1] = "1"
    args[args.index("--milestones") + 1] = "5"
    assert run("segmentation", args) == 0
    assert run("segmentation", ["--resume", "--epochs", "3", "--milestones", "2", "--log-dir", str(tmp_path)]) == 0
    lrs = [float(line.split(",")[5]) for line in (tmp_path / "csv" / "valid.csv").read_text().splitlines()[1:]]
    assert lrs == pytest.approx([0.01, 0.01, 0.001])  # the new milestone after epoch 2, not the stored one
    assert load_checkpoint(tmp_path / "checkpoints" / "last.pth")["config"]["milestones"] == [2]


def test_each_checkpoint_is_read_once_per_run(data, tmp_path, monkeypatch):
    from crackseg.training import launch, loop, runner, stages

    reads = []
    for module in (launch, stages, loop, runner):  # every module that reads checkpoints while training
        real = module.load_checkpoint
        monkeypatch.setattr(module, "load_checkpoint", lambda path, *a, real=real, **k: reads.append(
            Path(path).relative_to(tmp_path).as_posix()) or real(path, *a, **k))
    one_epoch = train_args(data, tmp_path / "seg")
    one_epoch[one_epoch.index("--epochs") + 1] = "1"
    assert run("segmentation", one_epoch) == 0
    assert run("segmentation", ["--resume", "--epochs", "2", "--log-dir", str(tmp_path / "seg")]) == 0
    assert run("classification", ["--epochs", "1", "--batch-size", "4", "--device", "cpu", "--log-dir",
                                  str(tmp_path / "cls"), "--segmentation-checkpoint",
                                  str(tmp_path / "seg" / "checkpoints" / "best.pth")]) == 0
    assert reads == ["seg/checkpoints/best.pth",  # the first run's result
                     "seg/checkpoints/last.pth", "seg/checkpoints/best.pth",  # the resumed run: once, and its result
                     "seg/checkpoints/best.pth", "cls/checkpoints/best.pth"]  # stage 2: stage 1's once, its result
