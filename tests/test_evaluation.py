"""Threshold sweeps, ODS/OIS and the gate's scores against hand-computed cases."""
import pytest
import torch

from crackseg.inference.predictor import TiledResult
from crackseg.inference.tiling import TileGrid
from crackseg.pipelines.evaluation import (
    THRESHOLDS,
    GateScores,
    SourceScores,
    f1_from_counts,
    floor_probs,
    ods,
    ois,
    pick_examples,
    threshold_counts,
)


def test_threshold_counts_match_a_brute_force_sweep():
    torch.manual_seed(0)
    probs = torch.rand(40, 30)
    probs[0, :5] = torch.tensor([0.5, 0.01, 0.99, 0.0, 1.0])  # values on and beyond the grid
    target = torch.rand(40, 30) < 0.2
    counts = threshold_counts(probs, target)
    assert counts.shape == (99, 3)
    for k, t in enumerate(THRESHOLDS):
        predicted = probs >= t
        expected = [(predicted & target).sum(), (predicted & ~target).sum(), (~predicted & target).sum()]
        assert counts[k].tolist() == [int(v) for v in expected], float(t)


def test_f1_of_empty_cases():
    # nothing to find, nothing found: perfect; nothing to find but false alarms, or misses only: zero
    assert f1_from_counts(torch.tensor([[0, 0, 0], [0, 5, 0], [0, 0, 5], [3, 1, 2]])).tolist() == \
        pytest.approx([1.0, 0.0, 0.0, 6 / 9])


def constructed_split():
    """Two images of 100 px with 10 crack px each: A separates at (0.3, 0.8], B only at (0.2, 0.25]."""
    probs, targets = [], []
    for crack_value, background_value in ((0.8, 0.3), (0.25, 0.2)):
        target = torch.zeros(10, 10, dtype=torch.bool)
        target[0] = True
        probs.append(torch.where(target, crack_value, background_value))
        targets.append(target)
    return probs, targets


def test_ods_and_ois_on_a_case_with_a_known_answer():
    probs, targets = constructed_split()
    counts = [threshold_counts(p, t) for p, t in zip(probs, targets)]
    # Each image alone can be separated perfectly: OIS = 1.
    assert ois(counts) == pytest.approx(1.0)
    # One shared threshold: t in (0.3, 0.8] finds A and misses B (tp 10, fn 10: F1 2/3); t in (0.2, 0.25]
    # keeps B but calls all of A crack (tp 20, fp 90: F1 0.31). The first best threshold on the grid is 0.31.
    best_f1, best_threshold = ods(counts)
    assert best_f1 == pytest.approx(2 / 3)
    assert best_threshold == pytest.approx(0.31)


def test_source_scores_sum_counts_over_the_split_and_report_per_image_rows():
    probs, targets = constructed_split()
    scores = SourceScores(mask_threshold=0.5)
    rows = [scores.add(p, t) for p, t in zip(probs, targets)]
    assert rows[0]["dice"] == 1.0 and rows[1]["dice"] == 0.0  # B's cracks (0.25) are below 0.5
    assert rows[1]["ois_f1"] == 1.0 and rows[1]["ois_threshold"] == pytest.approx(0.21)
    summary = scores.summary()
    assert summary["dice"] == pytest.approx(2 * 10 / (2 * 10 + 0 + 10))  # split-level: tp 10, fn 10
    assert summary["precision"] == 1.0 and summary["recall"] == 0.5
    assert summary["ods"] == pytest.approx(2 / 3) and summary["ois"] == pytest.approx(1.0)
    curves = scores.curves()
    assert len(curves["precision"]) == 99 and max(curves["f1"]) == pytest.approx(2 / 3)


def test_empty_masks_and_empty_predictions():
    scores = SourceScores(mask_threshold=0.5)
    nothing = torch.zeros(8, 8)
    row = scores.add(nothing, torch.zeros(8, 8, dtype=torch.bool))
    assert row["dice"] == 1.0 and row["iou"] == 1.0 and row["ois_f1"] == 1.0
    missed = torch.zeros(8, 8, dtype=torch.bool)
    missed[2, 2:6] = True
    assert scores.add(nothing, missed)["dice"] == 0.0
    assert scores.summary()["recall"] == 0.0 and scores.summary()["ods"] == 0.0


def test_gate_scores_per_tile_and_per_image():
    grid = TileGrid.of(8, 16, tile=8, overlap=0)  # two tiles side by side
    mask = torch.zeros(1, 8, 16, dtype=torch.uint8)
    mask[0, 2, 10:14] = 1  # the right tile is cracked (4 of 64 px)
    gate = GateScores(min_crack_fraction=0.001)
    probs = torch.zeros(8, 16)
    probs[3:5, 0:8] = 0.9  # the decoded left tile's mask holds a (misplaced) crack of 16 px
    row = gate.add(TiledResult("a", probs, grid, torch.tensor([0.7, 0.2]), torch.tensor([True, False])), mask)
    assert row == {"tiles": 2, "tiles_decoded": 1, "tiles_cracked": 1, "max_tile_prob": pytest.approx(0.7),
                   "image_cracked": 1, "image_gated": 1, "image_called_cracked": 1}
    summary = gate.summary()
    assert summary["crop"]["confusion"] == [[0, 1], [1, 0]]  # one false alarm, one miss
    assert summary["image"]["confusion"] == [[0, 0], [0, 1]]  # the image is cracked and was called cracked
    # gated, but its mask holds no crack: the image is not called cracked (a miss here)
    empty = gate.add(TiledResult("b", torch.zeros(8, 16), grid, torch.tensor([0.7, 0.2]),
                                 torch.tensor([True, False])), mask)
    assert (empty["image_gated"], empty["image_called_cracked"]) == (1, 0)
    assert gate.summary()["image"]["confusion"] == [[0, 0], [1, 1]]
    gate = GateScores(min_crack_fraction=0.001)
    gate.add(TiledResult("a", probs, grid, torch.tensor([0.7, 0.2]), torch.tensor([True, False])), mask)
    assert summary["crop"]["f1_1"] == 0.0 and summary["image"]["f1_1"] == 1.0
    assert summary["tiles_decoded"] == 1 and summary["decoded_share"] == 0.5


def test_floor_is_one_minus_grey():
    image = torch.tensor([0, 255, 51], dtype=torch.uint8).view(3, 1, 1).expand(3, 2, 2).clone()
    expected = 1 - (0.587 * 255 + 0.114 * 51) / 255
    assert torch.allclose(floor_probs(image), torch.full((2, 2), expected))


def test_examples_are_picked_among_cracked_images():
    rows = [{"crack_pixels": 0, "gated_dice": 1.0}, {"crack_pixels": 5, "gated_dice": 0.2},
            {"crack_pixels": 9, "gated_dice": 0.9}, {"crack_pixels": 3, "gated_dice": 0.5}]
    assert pick_examples(rows, "gated") == {"best": 2, "typical": 3, "worst": 1}
