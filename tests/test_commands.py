"""`crackseg evaluate`, `predict` and `curves` end to end on tiny synthetic data and random tiny models."""
import csv
import json

import numpy as np
import pytest
import torch
from PIL import Image

from crackseg.analysis.measure import MIN_AREA, has_crack
from crackseg.analysis.metrics import binary_counts, segmentation_scores
from crackseg.cli import build_parser, main
from crackseg.cli.common import predictor_from_args
from crackseg.data.datasets import read_pair
from crackseg.files.checkpoints import load_checkpoint, save_checkpoint
from crackseg.inference.predictor import DEFAULT_MIN_LENGTH, Predictor
from crackseg.models import UNet, VGGEncoderClassifier

CROP = 32


def write_checkpoints(folder, gate_bias):
    """Random width-4 models; the head's last bias pushes every tile's crack probability to 0 or 1."""
    torch.manual_seed(1)
    unet = UNet(4)
    config = {"width": 4, "crop": CROP, "skip_dropout": 0.0}
    save_checkpoint(folder / "seg.pth", "segmentation", unet.state_dict(), unet.settings(), config, epoch=1)
    classifier = VGGEncoderClassifier(unet.encoder, CROP)
    torch.nn.init.constant_(classifier.head.layers[-1].bias, gate_bias)
    save_checkpoint(folder / "cls.pth", "classification", classifier.state_dict(), classifier.settings(), config,
                    epoch=1)
    return ["--segmentation-checkpoint", str(folder / "seg.pth"), "--classification-checkpoint",
            str(folder / "cls.pth"), "--device", "cpu", "--tile-batch", "5"]


@pytest.fixture
def gate_open(tmp_path):
    return write_checkpoints(tmp_path, gate_bias=20.0)


@pytest.fixture
def gate_shut(tmp_path):
    return write_checkpoints(tmp_path, gate_bias=-20.0)


def read_csv(path):
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def test_evaluate_writes_metrics_rows_and_plots(tiny_dataset, gate_open, tmp_path):
    out = tmp_path / "eval"
    assert main(["evaluate", "--data-root", str(tiny_dataset), "--out", str(out), "--save-threshold"]
                + gate_open) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    pairs = sorted((tiny_dataset / "valid" / "images").iterdir())
    assert metrics["images"] == len(pairs) == 3
    # The segmentation path's split Dice equals pixel counts summed over the full-resolution images.
    predictor = Predictor.from_checkpoints(tmp_path / "seg.pth", tmp_path / "cls.pth")
    counts = sum(binary_counts(predictor.segment(image) >= 0.5, mask[0])
                 for image, mask in (read_pair(p, tiny_dataset / "valid" / "masks" / (p.stem + ".png"))
                                     for p in pairs))
    assert metrics["segmentation"]["dice"] == pytest.approx(segmentation_scores(counts)["dice"])
    for source in ("segmentation", "gated"):
        for key in ("dice", "iou", "precision", "recall", "f1", "ods", "ois"):
            assert 0.0 <= metrics[source][key] <= 1.0, (source, key)
        assert metrics[source]["ods"] >= metrics[source]["f1"] - 1e-9  # ODS is the best threshold
    gate = metrics["gate"]
    # 64 px images in 32 px tiles with the default 4 px overlap: 3 x 3 tiles each; an open gate decodes them all.
    assert gate["tiles_total"] == gate["tiles_decoded"] == 27
    assert sum(map(sum, gate["crop"]["confusion"])) == 27 and sum(map(sum, gate["image"]["confusion"])) == 3
    rows = read_csv(out / "per_image.csv")
    assert [row["image"] for row in rows] == [p.name for p in pairs]
    assert {"segmentation_dice", "gated_dice", "gated_ois_f1", "tiles_decoded", "image_gated"} <= set(rows[0])
    for name in ("pr_curve.png", "f1_threshold.png", "predictions.png"):
        assert Image.open(out / name).format == "PNG"
    curves = json.loads((out / "curves.json").read_text())
    for source in ("segmentation", "gated"):  # the split's F1 at every threshold: its best is the ODS
        assert len(curves[source]["threshold"]) == len(curves[source]["f1"]) == 99
        assert max(curves[source]["f1"]) == pytest.approx(metrics[source]["ods"])
        best = curves[source]["f1"].index(max(curves[source]["f1"]))
        assert curves[source]["threshold"][best] == pytest.approx(metrics[source]["ods_threshold"])
    stored = load_checkpoint(tmp_path / "cls.pth", stage="classification")["mask_threshold"]
    assert stored == pytest.approx(metrics["gated"]["ods_threshold"])
    assert Predictor.from_checkpoints(tmp_path / "seg.pth", tmp_path / "cls.pth").mask_threshold == stored


def test_evaluate_with_a_shut_gate_decodes_nothing(tiny_dataset, gate_shut, tmp_path):
    assert main(["evaluate", "--images", str(tiny_dataset / "valid" / "images"), "--masks",
                 str(tiny_dataset / "valid" / "masks"), "--out", str(tmp_path / "eval")] + gate_shut) == 0
    metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert metrics["gate"]["tiles_decoded"] == 0
    assert metrics["gated"]["recall"] == 0.0  # nothing decoded, nothing found
    assert metrics["gate"]["image"]["confusion"][0][1] == 0 and metrics["gate"]["image"]["confusion"][1][1] == 0


def make_photos(folder):
    folder.mkdir()
    rng = np.random.default_rng(0)
    sizes = {"wide.jpg": (45, 100), "small.png": (20, 25), "exact.bmp": (32, 32)}
    for name, (height, width) in sizes.items():
        Image.fromarray(rng.integers(0, 255, (height, width, 3), dtype=np.uint8)).save(folder / name)
    (folder / "broken.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    return sizes


def test_predict_survives_a_corrupt_file_and_writes_full_size_masks(gate_open, tmp_path, capsys):
    sizes = make_photos(tmp_path / "photos")
    out = tmp_path / "out"
    assert main(["predict", str(tmp_path / "photos"), "--out", str(out)] + gate_open) == 1  # one input failed
    assert "broken.jpg" in capsys.readouterr().err
    rows = {row["file"].split("/")[-1]: row for row in read_csv(out / "summary.csv")}
    assert set(rows) == set(sizes) | {"broken.jpg"}
    assert rows["broken.jpg"]["status"].startswith("error") and "broken.jpg" in rows["broken.jpg"]["status"]
    for name, (height, width) in sizes.items():
        row = rows[name]
        mask = np.asarray(Image.open(out / f"{name}_mask.png"))
        # every tile decoded; the image is cracked only if its mask holds a crack (the evidence rule)
        assert row["status"] == "ok" and row["tiles_decoded"] == row["tiles_total"]
        assert row["cracked"] == str(int(has_crack(mask > 0, MIN_AREA, DEFAULT_MIN_LENGTH)))
        assert mask.shape == (height, width) and set(np.unique(mask)) <= {0, 255}
        assert float(row["crack_share"]) == pytest.approx((mask > 0).mean(), abs=1e-6)
        assert Image.open(out / f"{name}_overlay.png").size == (width, height)
    # 45 x 100 px in 32 px tiles, 4 px overlap: rows start at 0 and 13, columns at 0, 28, 56 and 68
    assert [rows[name]["tiles_total"] for name in ("wide.jpg", "small.png", "exact.bmp")] == ["8", "1", "1"]


def test_predict_with_a_shut_gate_writes_empty_masks(gate_shut, tmp_path):
    make_photos(tmp_path / "photos")
    (tmp_path / "photos" / "broken.jpg").unlink()
    out = tmp_path / "out"
    assert main(["predict", str(tmp_path / "photos" / "*.*"), "--out", str(out)] + gate_shut) == 0
    rows = read_csv(out / "summary.csv")
    assert len(rows) == 3
    assert all(row["cracked"] == "0" and row["tiles_decoded"] == "0" and float(row["crack_share"]) == 0
               for row in rows)
    assert not np.asarray(Image.open(out / "wide.jpg_mask.png")).any()


def test_predict_reports_missing_inputs(gate_open, tmp_path, capsys):
    assert main(["predict", str(tmp_path / "nowhere"), "--out", str(tmp_path / "out")] + gate_open) == 1
    assert "nowhere: no such file or folder" in capsys.readouterr().err


def test_curves_plots_a_catalyst_csv_log(tmp_path, capsys):
    (tmp_path / "csv").mkdir()
    for split in ("train", "valid"):
        (tmp_path / "csv" / f"{split}.csv").write_text("step,loss,dice,lr\n1,0.5,0.2,0.01\n2,0.4,0.3,0.001\n")
    assert main(["curves", str(tmp_path)]) == 0
    assert Image.open(tmp_path / "curves.png").format == "PNG"
    assert main(["curves", str(tmp_path / "missing")]) == 2
    assert "no train.csv or valid.csv" in capsys.readouterr().err


@pytest.mark.parametrize("precision, head, dtype, weights", [("fp32", "auto", None, torch.qint8),
                                                              ("fp32", "full", None, torch.float32),
                                                              ("bf16", "auto", torch.bfloat16, torch.bfloat16)])
def test_precision_and_head_flags_reach_the_predictor(gate_open, tmp_path, precision, head, dtype, weights):
    args = build_parser().parse_args(["predict", str(tmp_path), "--out", str(tmp_path / "out"),
                                      "--precision", precision, "--head", head, "--engine", "torch"] + gate_open)
    predictor = predictor_from_args(args)
    assert predictor.dtype == dtype and predictor.batch_size == 5
    first = predictor.model.head.layers[2]
    assert (first.weight() if callable(first.weight) else first.weight).dtype == weights
    assert predictor.int8_head == (weights == torch.qint8)
