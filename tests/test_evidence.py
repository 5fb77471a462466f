"""The image-level call needs mask evidence; every crack has a confidence and a review flag."""
import csv

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw

from crackseg.analysis.measure import has_crack, measure_mask
from crackseg.analysis.units import length_px
from crackseg.data.synthetic import crack
from crackseg.errors import ConfigError
from crackseg.inference.predictor import Predictor, TiledResult
from crackseg.inference.tiling import TileGrid
from crackseg.models import UNetClassifier
from crackseg.outputs.measurements import Measurements


def _result(probs, decoded=True, min_length=20.0):
    grid = TileGrid.of(*probs.shape, 64, 16)
    return TiledResult("photo", torch.as_tensor(probs, dtype=torch.float32), grid, torch.full((len(grid),), 0.9),
                       torch.full((len(grid),), decoded), 0.5, 10, min_length)


def _wandering(size=200, seed=1, width=3.0):
    mask = Image.new("L", (size, size), 0)
    crack(np.random.default_rng(seed), ImageDraw.Draw(mask), size, 20, size / 2, 0.0, 1.4 * size, width)
    return np.asarray(mask) > 0


def test_a_gated_tile_with_an_empty_mask_does_not_make_an_image_cracked():
    result = _result(np.zeros((128, 128)))
    assert result.gated and not result.cracked


def test_only_a_crack_long_enough_makes_an_image_cracked():
    probs = np.zeros((128, 128))
    probs[60:63, 10:50] = 0.9  # 40 px long
    assert _result(probs, min_length=20).cracked
    assert not _result(probs, min_length=60).cracked
    assert not _result(probs, decoded=False).cracked  # the head's "no" stands: the decoder never ran
    blob = np.zeros((128, 128))
    yy, xx = np.mgrid[:128, :128]
    blob[(yy - 64) ** 2 + (xx - 64) ** 2 < 15 ** 2] = 0.9  # 700 px, 30 px across: a blur blob, not a crack
    assert not _result(blob).cracked
    specks = np.zeros((128, 128))
    specks[::16, ::16] = 0.9  # many single pixels: below min_area
    assert not _result(specks, min_length=0).cracked


def test_has_crack_agrees_with_measure_mask():
    rng = np.random.default_rng(4)
    for trial in range(20):
        mask = np.zeros((96, 96), bool)
        for _ in range(rng.integers(0, 4)):
            y, x = rng.integers(0, 90, 2)
            h, w = rng.integers(1, 30, 2)
            mask[y:y + h, x:x + w] = True
        for min_length in (0, 15, 40):
            expected = bool(measure_mask(mask, 10, min_length))
            assert has_crack(mask, 10, min_length) == expected, (trial, min_length)


def test_the_predictor_applies_its_min_length():
    image = torch.full((3, 64, 64), 160, dtype=torch.uint8)
    image[:, 30:32, 10:40] = 20  # a dark line 30 px long

    def dark_is_crack(tiles):  # the decoder sees dark pixels as crack, the head gates tiles that hold any
        masks = (tiles[:, :1] < 100).float()
        return masks, masks.flatten(1).amax(1)

    called = {}
    for length in (20.0, 40.0):
        predictor = Predictor(UNetClassifier(width=4, crop_size=32), min_length=length, fast=False)
        predictor.crops = dark_is_crack
        result = next(predictor.tiled([("a", image)]))
        called[length] = (result.gated, result.cracked, result.min_length)
    assert called == {20.0: (True, True, 20.0), 40.0: (True, False, 40.0)}


def test_confidence_is_the_mean_probability_along_the_centreline():
    mask = _wandering()
    probs = np.where(mask, 0.9, 0.1)
    probs[:, :100] = np.where(mask[:, :100], 0.6, 0.1)  # the left half is less sure
    (found,) = measure_mask(mask, probs=probs)
    assert 0.6 < found.confidence < 0.9
    (alone,) = measure_mask(mask)
    assert alone.confidence is None and "low confidence" not in alone.review_reasons


def test_review_flags_straight_joint_like_and_unsure_cracks_but_not_a_wandering_crack():
    wandering = _wandering()
    (real,) = measure_mask(wandering, probs=np.where(wandering, 0.95, 0.0))
    assert real.length_px > 150 and real.review_reasons == []
    joint = np.zeros((200, 300), bool)
    joint[100:103, 10:290] = True  # dead straight along the image's horizontal axis
    (flagged,) = measure_mask(joint, probs=np.where(joint, 0.95, 0.0))
    assert flagged.review_reasons == ["straight along an image axis (joint-like)"]
    diagonal = np.zeros((300, 300), bool)
    for offset in range(3):
        diagonal[np.arange(20, 280), np.arange(20, 280) + offset] = True
    (slanted,) = measure_mask(diagonal, probs=np.where(diagonal, 0.55, 0.0))
    assert slanted.review_reasons == ["low confidence", "straight (joint-like)"]
    short = np.zeros((100, 100), bool)
    short[50:52, 20:80] = True  # straight but short: real cracks have straight stretches
    assert measure_mask(short)[0].review_reasons == []


RIM = (40, 60, 260, 220)  # a manhole cover's rim
JAGGED = [(50, 150), (120, 60), (130, 140), (250, 70), (200, 250), (140, 160), (60, 240), (50, 150)]


def _drawn(draw_on, size=(300, 300)):
    image = Image.new("L", size, 0)
    draw_on(ImageDraw.Draw(image))
    return np.asarray(image) > 0


@pytest.mark.parametrize("shape, loop", [
    (lambda d: d.ellipse(RIM, outline=255, width=4), True),  # a manhole cover's rim
    (lambda d: d.rectangle((100, 100, 160, 160), outline=255, width=3), True),  # a square road stud
    (lambda d: (d.ellipse(RIM, outline=255, width=4),
                d.line((150, 220, 150, 222), fill=255, width=3)), True),  # a speck of a spur is pruned, not an end
    (lambda d: (d.ellipse(RIM, outline=255, width=4),
                d.line((150, 220, 170, 290), fill=255, width=3)), False),  # a crack runs off the rim: it ends
    (lambda d: d.line(JAGGED, fill=255, width=3), False),  # a jagged loop: real cracks that close are not convex
    (lambda d: (d.rectangle((40, 40, 260, 260), outline=255, width=3),
                d.line((150, 40, 150, 260), fill=255, width=3)), False),  # two cells: a network
    (lambda d: (d.ellipse((100, 100, 200, 200), fill=255), d.ellipse((145, 145, 152, 152), fill=0)), False),  # a blob
    (lambda d: (d.line(JAGGED, fill=255, width=3), d.ellipse((105, 35, 135, 65), fill=255),
                d.ellipse((117, 44, 122, 49), fill=0)), False),  # a convex 24 px hole, labelled before the loop's cell
])
def test_review_flags_closed_outlines_of_covers_and_studs_but_not_cracks_that_close(shape, loop):
    (found,) = measure_mask(_drawn(shape))
    assert found.closed_loop is loop
    assert ("closed outline (cover, stud or patch rim)" in found.review_reasons) is loop


def test_cracks_csv_carries_confidence_and_review(tmp_path):
    joint = np.zeros((200, 300), bool)
    joint[100:103, 10:290] = True
    measurements = Measurements(tmp_path)
    measurements.add("a.png", "a", joint, probs=np.where(joint, 0.8, 0.0))
    measurements.add("b.png", "b", _wandering(), probs=np.where(_wandering(), 0.9, 0.0))
    rim = _drawn(lambda d: d.ellipse(RIM, outline=255, width=4))
    measurements.add("c.png", "c", rim, probs=np.where(rim, 0.9, 0.0))
    measurements.write()
    rows = list(csv.DictReader(open(tmp_path / "cracks.csv")))
    assert [(row["file"], row["confidence"], row["review"]) for row in rows] == [
        ("a.png", "0.8", "1"), ("b.png", "0.9", "0"), ("c.png", "0.9", "1")]
    assert rows[0]["review_reason"] == "straight along an image axis (joint-like)" and rows[1]["review_reason"] == ""
    assert rows[2]["review_reason"] == "closed outline (cover, stud or patch rim)"
    assert [row["closed_loop"] for row in rows] == ["0", "0", "1"]


def test_measurements_drop_cracks_shorter_than_min_length(tmp_path):
    mask = np.zeros((100, 100), bool)
    mask[10:12, 10:70] = True  # 60 px
    mask[50:53, 10:25] = True  # 15 px
    measurements = Measurements(tmp_path, min_length=20)
    assert measurements.add("a.png", "a", mask)["cracks"] == 1


@pytest.mark.parametrize("text, scale, expected", [(None, None, 20.0), ("30", None, 30.0), ("30px", 2.0, 30.0),
                                                   ("2.5mm", 0.5, 5.0), ("0", None, 0.0)])
def test_min_length_in_px_or_mm(text, scale, expected):
    assert length_px(text, scale, 20.0) == expected


@pytest.mark.parametrize("text, message", [("2.5mm", "give --mm-per-px"), ("long", "expected a length"),
                                           ("-3", "must be a finite length of 0 or more")])
def test_min_length_errors_say_what_is_wrong(text, message):
    with pytest.raises(ConfigError, match=message):
        length_px(text, None, 20.0)


def test_a_gently_curved_long_crack_is_not_called_joint_like():
    mask = np.zeros((200, 1200), bool)
    xs = np.arange(50, 1150)
    ys = (100 + 60 * ((xs - 600) / 550) ** 2).astype(int)  # bows 60 px over 1100 px
    for offset in range(3):
        mask[ys + offset, xs] = True
    (crack,) = measure_mask(mask)
    assert crack.straightness_px > 20 and crack.review_reasons == []  # flagged when the rule used the RMS


def test_flags_that_cannot_apply_are_refused_before_the_model_loads(tmp_path, capsys, monkeypatch):
    import crackseg.cli as commands
    from crackseg.cli import common

    monkeypatch.setattr(common, "load_model", lambda args: pytest.fail("the model was loaded"))
    Image.new("RGB", (40, 40)).save(tmp_path / "a.png")
    for flags, message in ((["--standard", "bre251", "--mm-per-px", "0.5"], "--standard, --mm-per-px only apply"),
                           (["--mm-per-px", "0.5"], "--mm-per-px only apply to measured cracks"),
                           (["--min-length", "2mm"], "give --mm-per-px too"),
                           (["--min-length", "nan"], "must be a finite length"),
                           (["--join-gap", "inf"], "must be a finite length")):
        assert commands.main(["predict", str(tmp_path / "a.png"), "--out", str(tmp_path / "o"), *flags]) == 2
        assert message in capsys.readouterr().err, flags
    assert commands.main(["evaluate", "--images", str(tmp_path), "--masks", str(tmp_path), "--min-length",
                          "2mm"]) == 2
    assert "this command takes lengths in px" in capsys.readouterr().err
