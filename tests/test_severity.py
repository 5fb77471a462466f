"""Crack widths graded under named standards: classes, boundaries, the +-1 px range, totals per class."""
import csv
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from crackseg.analysis.severity import STANDARDS, Grade, class_totals, crack_grades, grade, standard
from crackseg.cli import main
from crackseg.errors import ConfigError


@pytest.mark.parametrize("width, expected", [(0.0, "0"), (0.099, "0"), (0.1, "1"), (1.0, "1"), (1.01, "2"),
                                             (5.0, "2"), (5.5, "3"), (15.0, "3"), (15.1, "4"), (25.0, "4"),
                                             (25.01, "5"), (300.0, "5")])
def test_bre251_classes_and_their_boundaries(width, expected):
    assert standard("bre251").grade(width) == expected


@pytest.mark.parametrize("name, exposure, limit", [("aci224r", "dry-air", 0.41), ("aci224r", "humid", 0.30),
                                                   ("aci224r", "de-icing", 0.18), ("aci224r", "seawater", 0.15),
                                                   ("aci224r", "water-retaining", 0.10), ("ec2", "XC1", 0.4),
                                                   ("ec2", "XD1", 0.3), ("ec2", "prestressed", 0.2)])
def test_limits_by_exposure_are_within_at_the_limit_and_exceeded_above(name, exposure, limit):
    rule = standard(name, exposure)
    assert rule.grade(limit) == "within" and rule.grade(limit + 0.001) == "exceeds"
    assert rule.grade(limit - 0.05) == "within"
    assert f"{limit:g} mm" in rule.title


def test_astm_d6433_grades_pavement_cracks_by_mean_width():
    rule = standard("astm-d6433")
    assert [rule.grade(w) for w in (2.0, 9.99, 10.0, 75.0, 75.5)] == ["low", "low", "medium", "medium", "high"]
    assert rule.width == ("mean",)


def test_the_range_says_which_classes_a_pixel_of_uncertainty_reaches():
    rule = standard("bre251")
    assert grade(rule, 3.0, 0.5) == Grade("2", "2")
    assert grade(rule, 4.8, 0.5).range == "2-3"  # 4.3 .. 5.3 mm straddles the 5 mm boundary
    assert grade(rule, 0.3, 0.5).range == "0-1"
    assert grade(rule, 0.3, 0.5).name == "1"


def test_crack_columns_and_class_totals():
    rule = standard("bre251")
    rows = [{"max_width_px": 12, "median_width_px": 4, "mean_width_px": 4, "length_px": 100},
            {"max_width_px": 2, "median_width_px": 1, "mean_width_px": 1, "length_px": 50}]
    for row in rows:
        row.update(crack_grades(rule, row, 0.5), length_mm=row["length_px"] * 0.5)
    assert [(row["class_max"], row["class_typical"]) for row in rows] == [("3", "2"), ("1", "1")]
    assert rows[0]["class_max_range"] == "3"  # 6 +- 0.5 mm: 5.5 .. 6.5 mm, all class 3
    assert rows[1]["class_max_range"] == "1-2"  # 1 mm is class 1; 1.5 mm would be class 2
    totals = class_totals(rule, rows)
    assert totals["length_mm_class_3"] == 50.0 and totals["length_mm_class_1"] == 25.0
    assert totals["length_mm_class_0"] == 0.0 and len(totals) == 6


def test_unknown_standards_and_exposures_are_one_line_errors():
    assert set(STANDARDS) == {"bre251", "aci224r", "ec2", "astm-d6433"}
    with pytest.raises(ConfigError, match="expected one of"):
        standard("iso9999")
    with pytest.raises(ConfigError, match="XC3"):
        standard("ec2", "XC9")


def test_the_limits_read_in_plain_words():
    assert standard("bre251").limits() == "0: < 0.1 mm; 1: <= 1 mm; 2: <= 5 mm; 3: <= 15 mm; 4: <= 25 mm; 5: > 25 mm"
    assert standard("ec2", "XC1").limits() == "within: <= 0.4 mm; exceeds: > 0.4 mm"


def test_measure_writes_classes_ranges_and_totals_per_class(tmp_path):
    mask = np.zeros((120, 300), np.uint8)
    mask[10:14, 10:290] = 255  # 4 px wide: 0.6 mm at 0.15 mm/px -> class 1 (0.45-0.75 mm within a pixel)
    mask[40:80, 10:290] = 255  # 40 px: 6 mm -> class 3
    Image.fromarray(mask).save(tmp_path / "wall.png")
    out = tmp_path / "out"
    assert main(["measure", str(tmp_path / "wall.png"), "--out", str(out), "--mm-per-px", "0.15",
                 "--standard", "bre251"]) == 0
    cracks = list(csv.DictReader(open(out / "cracks.csv")))
    assert [(row["class_max"], row["class_typical"]) for row in cracks] == [("1", "1"), ("3", "3")]
    assert cracks[0]["class_typical_range"] == "1" and cracks[0]["uncertainty_mm"] == "0.15"
    assert cracks[0]["median_width_mm"] == "0.6"
    assert all(len(row["length_mm"].split(".")[-1]) <= 2 for row in cracks)  # 0.01 mm, not 16 digits
    (image,) = list(csv.DictReader(open(out / "images.csv")))
    assert float(image["length_mm_class_1"]) == pytest.approx(42, abs=0.5)
    assert float(image["length_mm_class_3"]) == pytest.approx(42, abs=0.5)
    assert image["length_mm_class_0"] == "0.0"
    document = json.loads((out / "cracks.json").read_text())
    assert document["standard"]["name"] == "bre251" and "BRE Digest 251" in document["standard"]["source"]
    assert document["length_per_class_mm"]["length_mm_class_3"] == pytest.approx(42, abs=0.5)  # over all images


def test_a_standard_without_a_scale_or_a_stray_exposure_is_refused(tmp_path, capsys):
    Image.fromarray(np.zeros((20, 20), np.uint8)).save(tmp_path / "m.png")
    assert main(["measure", str(tmp_path / "m.png"), "--out", str(tmp_path / "o"), "--standard", "ec2"]) == 2
    assert "give --mm-per-px" in capsys.readouterr().err
    assert main(["measure", str(tmp_path / "m.png"), "--out", str(tmp_path / "o"), "--standard", "bre251",
                 "--mm-per-px", "1", "--exposure", "XC1"]) == 2
    assert "--exposure applies to" in capsys.readouterr().err


def test_the_report_names_the_standard_its_classes_and_the_length_per_class(tmp_path):
    from crackseg import __version__
    from crackseg.analysis.severity import standard as named
    from crackseg.outputs.measurements import Measurements
    from crackseg.outputs.report import write_report

    mask = np.zeros((120, 300), bool)
    mask[40:80, 10:290] = True  # 6 mm at 0.15 mm/px: class 3
    measurements = Measurements(tmp_path, mm_per_px=0.15, standard=named("bre251"))
    measurements.add("wall.png", "wall", mask)
    page = write_report(measurements, {"input": "walls/<1>"}, tmp_path / "report.html").read_text()
    assert "BRE Digest 251" in page and "3: &lt;= 15 mm" in page
    assert "<tr><td class=\"text\">3</td><td>1</td><td>42.0</td></tr>" in page  # class 3: one crack, 42 mm
    assert "walls/&lt;1&gt;" in page  # autoescaped
    assert f"by crackseg {__version__}" in page and "width colours" in page and "counter-clockwise" in page
    assert "mm, at 0.15 mm per pixel; every length and width is uncertain by at least one pixel (+-0.15 mm)" in page


def test_a_width_is_graded_as_it_is_written_not_with_float_error():
    rule = standard("aci224r", "humid")  # 0.30 mm, within at the limit
    assert crack_grades(rule, {"max_width_px": 3, "median_width_px": 3}, 0.1)["class_max"] == "within"  # 3 x 0.1
    assert crack_grades(rule, {"max_width_px": 4, "median_width_px": 3}, 0.1)["class_max"] == "exceeds"
    assert standard("ec2", "XD2").grade(0.3) == "within" and standard("ec2", "XS3").grade(0.31) == "exceeds"


def test_each_photo_takes_its_own_scale_from_scale_csv(tmp_path, capsys):
    mask = np.zeros((120, 300), np.uint8)
    mask[40:80, 10:290] = 255  # 40 px wide
    for name in ("near.png", "far.png", "unknown.png"):
        Image.fromarray(mask).save(tmp_path / name)
    scales = tmp_path / "scales.csv"
    scales.write_text("image,mm_per_px\nnear.png,0.1\nfar.png,0.5\n")
    out = tmp_path / "out"
    paths = [str(tmp_path / name) for name in ("near.png", "far.png")]
    assert main(["measure", *paths, "--out", str(out), "--scale-csv", str(scales), "--standard", "bre251"]) == 0
    rows = {Path(row["file"]).name: row for row in csv.DictReader(open(out / "cracks.csv"))}
    assert (rows["near.png"]["median_width_mm"], rows["near.png"]["class_max"]) == ("4.01", "2")
    assert (rows["far.png"]["median_width_mm"], rows["far.png"]["class_max"]) == ("20.03", "4")
    images = {Path(row["file"]).name: row for row in csv.DictReader(open(out / "images.csv"))}
    assert images["far.png"]["mm_per_px"] == "0.5"
    assert float(images["far.png"]["length_mm_class_4"]) == pytest.approx(140.1, abs=0.05)
    # a photo without a scale cannot be graded: one line, the others go on
    assert main(["measure", *paths, str(tmp_path / "unknown.png"), "--out", str(tmp_path / "o2"), "--scale-csv",
                 str(scales), "--standard", "bre251"]) == 1
    assert "unknown.png: no scale to grade its cracks under bre251" in capsys.readouterr().err
    scales.write_text("image,mm_per_px\nnear.png,-1\n")
    assert main(["measure", *paths, "--out", str(tmp_path / "o3"), "--scale-csv", str(scales)]) == 2
    assert "line 2: mm_per_px '-1' is not a positive number" in capsys.readouterr().err


def test_capture_time_and_gps_from_exif_reach_images_csv(tmp_path):
    from crackseg.files.images import photo_metadata

    photo = Image.new("RGB", (64, 64), (150, 150, 150))
    exif = Image.Exif()
    exif.get_ifd(0x8769)[0x9003] = "2026:05:01 10:22:13"
    exif.get_ifd(0x8825).update({1: "N", 2: (51.0, 30.0, 0.0), 3: "W", 4: (0.0, 7.0, 30.0)})
    photo.save(tmp_path / "site.jpg", exif=exif)
    assert photo_metadata(tmp_path / "site.jpg") == {"captured": "2026-05-01 10:22:13", "gps_lat": 51.5,
                                                     "gps_lon": -0.125}
    assert photo_metadata(tmp_path / "nothing.jpg") == {}
    from crackseg.outputs.measurements import Measurements

    measurements = Measurements(tmp_path / "out")
    (tmp_path / "out").mkdir()
    measurements.add(str(tmp_path / "site.jpg"), "site", np.zeros((64, 64), bool))
    measurements.write()
    (row,) = csv.DictReader(open(tmp_path / "out" / "images.csv"))
    assert (row["captured"], row["gps_lat"], row["gps_lon"]) == ("2026-05-01 10:22:13", "51.5", "-0.125")
    (point,) = json.loads((tmp_path / "out" / "images.geojson").read_text())["features"]
    assert point["geometry"] == {"type": "Point", "coordinates": [-0.125, 51.5]}  # longitude first (RFC 7946)
    assert point["properties"]["file"] == str(tmp_path / "site.jpg") and point["properties"]["cracks"] == 0
    measurements = Measurements(tmp_path / "out")
    measurements.add(str(tmp_path / "nothing.png"), "nothing", np.zeros((64, 64), bool))
    measurements.write()
    assert not (tmp_path / "out" / "images.geojson").exists()  # no photo with a position: no stale points
    from PIL.TiffImagePlugin import IFDRational

    exif.get_ifd(0x8825).update({2: (IFDRational(0, 0),) * 3})  # 0/0: a camera without a fix
    photo.save(tmp_path / "nofix.jpg", exif=exif)
    assert photo_metadata(tmp_path / "nofix.jpg") == {"captured": "2026-05-01 10:22:13"}  # no NaN position


def test_predict_asks_for_every_scale_before_the_model_loads(tmp_path, capsys, monkeypatch):
    from crackseg.cli import common

    monkeypatch.setattr(common, "load_model", lambda args: pytest.fail("the model was loaded"))
    for name in ("a.png", "b.png"):
        Image.new("RGB", (40, 40)).save(tmp_path / name)
    (tmp_path / "scales.csv").write_text("image,mm_per_px\na.png,0.2\n")
    assert main(["predict", str(tmp_path / "a.png"), str(tmp_path / "b.png"), "--out", str(tmp_path / "o"),
                 "--measure", "--standard", "ec2", "--scale-csv", str(tmp_path / "scales.csv")]) == 2
    assert "1 are not in --scale-csv (" in capsys.readouterr().err


@pytest.mark.parametrize("name, exposure, width_px, scale, expected", [
    ("bre251", None, 40, 0.15, "3"), ("bre251", None, 2, 0.05, "1"),
    ("aci224r", "humid", 3, 0.1, "within"), ("aci224r", "humid", 4, 0.1, "exceeds"),
    ("ec2", "prestressed", 2, 0.1, "within"), ("ec2", "XC1", 5, 0.1, "exceeds"),
    ("astm-d6433", None, 40, 0.2, "low"), ("astm-d6433", None, 40, 0.5, "medium")])
def test_a_drawn_crack_of_known_width_gets_its_class_under_each_standard(tmp_path, name, exposure, width_px, scale,
                                                                        expected):
    from crackseg.outputs.measurements import Measurements

    mask = np.zeros((200, 400), bool)
    mask[100:100 + width_px, 20:380] = True
    measurements = Measurements(tmp_path, mm_per_px=scale, standard=standard(name, exposure))
    measurements.add("m.png", "m", mask)
    (crack,) = measurements.images[0].cracks
    row = measurements.crack_row(crack, scale)
    graded = row["class_mean"] if name == "astm-d6433" else row["class_typical"]
    assert graded == expected, row
