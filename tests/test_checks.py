"""`crackseg check-data` and the check before training: every kind of bad input named, file by file."""
import numpy as np
import pytest
from PIL import Image

from crackseg.cli import main
from crackseg.cli.train import run
from crackseg.data.checks import check_split


def save(path, array, mode=None):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array, mode).save(path) if mode else Image.fromarray(array).save(path)


def clean_pair(root, split, stem, size=64):
    rng = np.random.default_rng(len(stem))
    save(root / split / "images" / f"{stem}.jpg", rng.integers(0, 255, (size, size, 3), dtype=np.uint8))
    mask = np.zeros((size, size), dtype=np.uint8)
    mask[10:40, 30:32] = 255
    save(root / split / "masks" / f"{stem}.png", mask)


@pytest.fixture
def messy(tmp_path):
    """A train split with one clean pair and one of every problem; a clean valid split."""
    root = tmp_path / "data"
    for stem in ("good", "grey", "soft", "photo", "small", "sizes"):
        clean_pair(root, "train", stem)
    clean_pair(root, "valid", "v1")
    images, masks = root / "train" / "images", root / "train" / "masks"
    save(images / "grey.jpg", np.full((64, 64), 120, dtype=np.uint8))  # grey image: converted, a note
    soft = np.zeros((64, 64), dtype=np.uint8)
    soft[10:40, 30:32] = 255
    soft[10:40, 29] = 128  # anti-aliased edge
    save(masks / "soft.png", soft)
    save(masks / "photo.png", np.random.default_rng(0).integers(0, 255, (64, 64), dtype=np.uint8))
    clean_pair(root, "train", "small", size=16)
    save(masks / "sizes.png", np.zeros((48, 64), dtype=np.uint8))
    (images / "broken.jpg").write_bytes((images / "good.jpg").read_bytes()[:300])  # truncated
    save(masks / "broken.png", np.zeros((64, 64), dtype=np.uint8))
    save(images / "lonely.jpg", np.zeros((64, 64, 3), dtype=np.uint8))
    save(masks / "orphan.png", np.zeros((64, 64), dtype=np.uint8))
    return root


def test_every_problem_is_named_with_its_file(messy):
    report = check_split(messy, "train", crop=32)
    found = {(f.level, f.path.name): f.message for f in report.findings}
    assert "read as RGB" in found[("note", "grey.jpg")]
    assert "binarised at 50%" in found[("warning", "soft.png")]
    assert "not a binary mask" in found[("error", "photo.png")]
    assert "smaller than the 32 px crop" in found[("error", "small.jpg")]
    assert "64x64 px but its mask sizes.png is 64x48 px" in found[("error", "sizes.jpg")]
    assert "cannot read image" in found[("error", "broken.jpg")]
    assert "no mask with this name" in found[("error", "lonely.jpg")]
    assert "no image with this name" in found[("error", "orphan.png")]
    assert [image.name for image, _ in report.pairs] == ["good.jpg", "grey.jpg", "soft.jpg"]
    assert len([f for f in report.findings if f.level == "error"]) == 6


def test_check_data_command_exit_codes(messy, tmp_path, capsys):
    assert main(["check-data", str(messy), "--crop", "32"]) == 1
    captured = capsys.readouterr()
    assert f"error: {messy / 'train' / 'masks' / 'photo.png'}: not a binary mask" in captured.err
    assert "train: 3 good pairs, 6 errors, 1 warnings, 1 notes" in captured.out
    assert main(["check-data", str(messy), "--crop", "32", "--splits", "valid"]) == 0
    empty = tmp_path / "empty"
    (empty / "train" / "images").mkdir(parents=True)
    (empty / "train" / "masks").mkdir(parents=True)
    assert main(["check-data", str(empty), "--splits", "train"]) == 1
    assert "no usable image/mask pair" in capsys.readouterr().err


def test_training_stops_on_bad_data_unless_skip_bad(messy, tmp_path, capsys):
    args = ["--width", "4", "--crop", "32", "--epochs", "1", "--batch-size", "2", "--device", "cpu",
            "--data-root", str(messy), "--log-dir", str(tmp_path / "log")]
    assert run("segmentation", args) == 2
    err = capsys.readouterr().err
    assert "6 problem(s)" in err and "photo.png: not a binary mask" in err and "--skip-bad" in err
    assert "Traceback" not in err
    assert run("segmentation", args + ["--skip-bad"]) == 0
    out = capsys.readouterr().out
    assert "--skip-bad: skipping 6 bad file(s)" in out and "lonely.jpg" in out
    header, *rows = (tmp_path / "log" / "csv" / "train.csv").read_text().splitlines()
    assert len(rows) == 1  # trained one epoch on the 3 good pairs


def test_skip_bad_cannot_train_on_an_empty_split(messy, tmp_path, capsys):
    for path in (messy / "valid" / "masks").iterdir():
        path.unlink()
    args = ["--width", "4", "--crop", "32", "--epochs", "1", "--device", "cpu", "--skip-bad",
            "--data-root", str(messy), "--log-dir", str(tmp_path / "log")]
    assert run("segmentation", args) == 2
    assert "no usable image/mask pair" in capsys.readouterr().err
