"""Crack types from the centreline geometry, relative to a road axis."""
import csv

import numpy as np
import pytest
from PIL import Image

from crackseg.analysis.cracktypes import angle_to_axis, crack_type, image_type, type_accuracy
from crackseg.analysis.measure import measure_mask
from crackseg.cli import main


def horizontal_and_vertical():
    mask = np.zeros((200, 200), bool)
    mask[30:33, 20:180] = True  # along the image's horizontal axis
    mask[60:190, 100:103] = True  # along its vertical axis
    return measure_mask(mask)


def grid(cell, lines=6, size=200):
    """A network: lines x lines closed cells of `cell` px."""
    mask = np.zeros((size, size), bool)
    for index in range(lines + 1):
        mask[10 + index * cell:12 + index * cell, 10:12 + lines * cell] = True
        mask[10:12 + lines * cell, 10 + index * cell:12 + index * cell] = True
    return mask


def test_angle_to_axis_treats_directions_not_vectors():
    assert angle_to_axis(0, 90) == 90 and angle_to_axis(170, 0) == 10 and angle_to_axis(100, 90) == 10
    assert angle_to_axis(45, 135) == 90


def test_horizontal_and_vertical_cracks_swap_types_with_the_axis():
    horizontal, vertical = horizontal_and_vertical()
    assert (crack_type(horizontal), crack_type(vertical)) == ("transverse", "longitudinal")  # axis: vertical
    assert (crack_type(horizontal, 0), crack_type(vertical, 0)) == ("longitudinal", "transverse")
    diagonal = np.zeros((200, 200), bool)
    for offset in range(3):
        diagonal[np.arange(10, 190), np.arange(10, 190) + offset] = True
    assert crack_type(measure_mask(diagonal)[0]) == "other"  # 45 degrees from either


def test_networks_are_alligator_or_block_by_their_cell_size():
    (fine,) = measure_mask(grid(25))
    assert fine.cells == 36 and fine.cell_area_px == pytest.approx(23 ** 2)
    assert crack_type(fine) == "network"  # no scale: cannot say which
    assert crack_type(fine, mm_per_px=5.0) == "alligator"  # cells of 115 mm
    assert crack_type(fine, mm_per_px=20.0) == "block"  # cells of 460 mm
    assert image_type([fine, *horizontal_and_vertical()], mm_per_px=5.0) == "alligator"


def test_measure_writes_types_with_the_axis(tmp_path):
    mask = np.zeros((200, 200), np.uint8)
    mask[30:33, 20:180] = 255
    Image.fromarray(mask).save(tmp_path / "road.png")
    for axis, expected in (("90", "transverse"), ("0", "longitudinal")):
        out = tmp_path / f"out{axis}"
        assert main(["measure", str(tmp_path / "road.png"), "--out", str(out), "--axis", axis]) == 0
        (row,) = csv.DictReader(open(out / "cracks.csv"))
        (image,) = csv.DictReader(open(out / "images.csv"))
        assert row["type"] == expected and image["type"] == expected


def test_type_accuracy_against_image_labels(tmp_path):
    masks = tmp_path / "masks"
    masks.mkdir()
    across = np.zeros((200, 200), np.uint8)
    across[30:33, 20:180] = 255
    Image.fromarray(across).save(masks / "a.png")
    Image.fromarray(across.T.copy()).save(masks / "b.jpg_mask.png")  # as crackseg predict names it
    Image.fromarray(grid(25).astype(np.uint8) * 255).save(masks / "c.png")
    labels = tmp_path / "types.csv"
    labels.write_text("name,type\na,transverse\nb,transverse\nc,alligator\nd,longitudinal\ne,mixed\n")
    result = type_accuracy(labels, [masks])["types"]
    assert result["transverse"] == {"images": 2, "right": 1, "typed_as": {"transverse": 1, "longitudinal": 1},
                                    "accuracy": 0.5}
    assert result["alligator"]["accuracy"] == 1.0 and "longitudinal" not in result  # d has no mask


def test_images_csv_gives_the_length_per_type_with_a_standard(tmp_path):
    mask = np.zeros((200, 200), np.uint8)
    mask[30:33, 20:180] = 255  # transverse, 160 px
    mask[60:190, 100:103] = 255  # longitudinal, 130 px
    Image.fromarray(mask).save(tmp_path / "road.png")
    out = tmp_path / "out"
    assert main(["measure", str(tmp_path / "road.png"), "--out", str(out), "--mm-per-px", "2",
                 "--standard", "astm-d6433"]) == 0
    (image,) = csv.DictReader(open(out / "images.csv"))
    assert float(image["length_mm_transverse"]) == pytest.approx(320, rel=0.02)
    assert float(image["length_mm_longitudinal"]) == pytest.approx(260, rel=0.02)
    assert float(image["length_mm_alligator"]) == 0.0
