"""Georeferenced rasters: predicted by windows into a mask GeoTIFF with the raster's CRS and transform, cracks
measured whole across window borders, GIS outputs in map coordinates, nodata windows never run."""
import csv
import json

import fiona  # the gis extra, part of the test install
import numpy as np
import pytest
import rasterio
from PIL import Image, ImageDraw
from rasterio.transform import from_origin
from test_negatives import DarkIsCrack

from crackseg.cli import main
from crackseg.inference.predictor import Predictor

START, END = (10, 20), (290, 200)  # the drawn crack, (x, y) px: across window borders at 128 and 256 px
PIXEL_M = 0.002  # 2 mm a pixel
CRS = "EPSG:32633"


def write_raster(path, height=300, width=384):
    """Light grey RGB with a dark 3 px crack; the core window at (256, 0) is nodata (0 in every band)."""
    picture = Image.new("RGB", (width, height), (180, 180, 180))
    ImageDraw.Draw(picture).line([START, END], fill=(30, 30, 30), width=3)
    bands = np.asarray(picture).transpose(2, 0, 1).copy()
    bands[:, 256:, :128] = 0
    transform = from_origin(500000.0, 5600000.0, PIXEL_M, PIXEL_M)
    with rasterio.open(path, "w", driver="GTiff", width=width, height=height, count=3, dtype="uint8", crs=CRS,
                       transform=transform, nodata=0) as target:
        target.write(bands)
    return transform


def write_scales(path, scales):
    path.write_text("image,mm_per_px\n" + "".join(f"{image},{scale}\n" for image, scale in scales.items()))
    return path


def counting_predictor():
    predictor = Predictor(DarkIsCrack(width=4, crop_size=32), fast=False, batch_size=8, mask_threshold=0.5)
    calls = []
    tiled = predictor.tiled
    predictor.tiled = lambda items: tiled([calls.append(key) or (key, image) for key, image in items])
    return predictor, calls


def test_a_crack_across_window_borders_is_one_crack_in_metres_and_nodata_is_not_run(tmp_path):
    from crackseg.pipelines.raster import predict_raster

    transform = write_raster(tmp_path / "ortho.tif")
    predictor, calls = counting_predictor()
    result = predict_raster(predictor, tmp_path / "ortho.tif", tmp_path / "mask.tif", window=128)
    assert result.windows == 9 and result.skipped == 1 and (256, 0) not in calls and len(calls) == 8
    assert result.mm_per_px == pytest.approx(2.0)
    assert len(result.cracks) == 1  # cut by three window borders, measured whole
    truth_m = np.hypot(END[0] - START[0], END[1] - START[1]) * PIXEL_M
    assert result.cracks[0].length_px * result.mm_per_px / 1000 == pytest.approx(truth_m, rel=0.02)
    with rasterio.open(tmp_path / "mask.tif") as mask:
        assert mask.crs.to_string() == CRS and mask.transform == transform and mask.shape == (300, 384)
        assert mask.read(1)[110, 150] == 255 and mask.read(1)[10, 300] == 0  # on the crack, off it


def test_predict_writes_georeferenced_features_on_the_crack(tmp_path, monkeypatch, capsys):
    from crackseg.cli import common

    transform = write_raster(tmp_path / "ortho.tif")
    Image.new("RGB", (64, 64), (180, 180, 180)).save(tmp_path / "plain.tif")  # a TIFF photo: no CRS
    monkeypatch.setattr(common, "load_model", lambda args: DarkIsCrack(width=4, crop_size=32))
    out = tmp_path / "out"
    assert main(["predict", str(tmp_path / "ortho.tif"), str(tmp_path / "plain.tif"), "--out", str(out),
                 "--device", "cpu", "--precision", "fp32", "--measure", "--standard", "bre251",
                 "--scale-csv", str(write_scales(tmp_path / "scales.csv", {"plain.tif": 0.5}))]) == 0
    assert (out / "plain.tif_mask.png").is_file()  # the photo went the photo way
    assert "1 cracks at 2 mm per px" in capsys.readouterr().out
    with rasterio.open(out / "ortho.tif_mask.tif") as mask:
        assert mask.crs.to_string() == CRS and mask.transform == transform
    inverse = ~transform
    a, b = np.array(START, float), np.array(END, float)
    for path in (out / "ortho.tif_cracks.geojson", out / "ortho.tif_cracks.gpkg"):
        with fiona.open(path, layer="cracks" if path.suffix == ".gpkg" else None) as layer:
            assert layer.crs.to_string() == CRS
            features = list(layer)
        assert len(features) == 1
        properties = features[0]["properties"]
        # graded under the standard at the raster's own scale (a 3 px crack at 2 mm a px: 6 mm, BRE class 3), typed,
        # and as confident as the probabilities kept beside the mask say
        assert properties["class_max"] == "3" and properties["type"] == "other"  # 33 degrees off the road's axes
        with rasterio.open(out / "ortho.tif_prob.tif") as probs:
            assert probs.crs.to_string() == CRS and probs.transform == transform
            kept = probs.read(1)
        assert kept[110, 150] == 255 and kept[10, 300] == 0
        assert properties["confidence"] == 1.0 and properties["review_reason"] == "straight (joint-like)"
        assert properties["length_m"] == pytest.approx(np.linalg.norm(b - a) * PIXEL_M, rel=0.02)
        points = [point for line in features[0]["geometry"]["coordinates"] for point in line]
        assert len(points) >= 2
        for x, y in points:  # every vertex lies on the drawn crack (pixel centres: +0.5)
            col, row = inverse @ (x, y)
            p = np.array([col - 0.5, row - 0.5])
            t = np.clip(np.dot(p - a, b - a) / np.dot(b - a, b - a), 0, 1)
            assert np.linalg.norm(p - (a + t * (b - a))) <= 2.0
    with fiona.open(out / "ortho.tif_cracks.gpkg", layer="outlines") as outlines:
        assert [feature["properties"]["id"] for feature in outlines] == [1]
    rows = (out / "ortho.tif_cracks.csv").read_text().splitlines()
    assert len(rows) == 2 and "length_mm" in rows[0]
    assert json.loads((out / "ortho.tif_cracks.geojson").read_text())["features"][0]["properties"]["id"] == 1


def test_a_raster_in_degrees_needs_a_scale(tmp_path):
    from crackseg.errors import ConfigError
    from crackseg.pipelines.raster import predict_raster

    with rasterio.open(tmp_path / "wgs84.tif", "w", driver="GTiff", width=64, height=64, count=1, dtype="uint8",
                       crs="EPSG:4326", transform=from_origin(10.0, 50.0, 1e-6, 1e-6)) as target:
        target.write(np.full((1, 64, 64), 180, np.uint8))
    predictor, _ = counting_predictor()
    with pytest.raises(ConfigError, match="in degrees: give --mm-per-px"):
        predict_raster(predictor, tmp_path / "wgs84.tif", tmp_path / "mask.tif")
    assert predict_raster(predictor, tmp_path / "wgs84.tif", tmp_path / "mask.tif", mm_per_px=0.1).mm_per_px == 0.1


def test_a_raster_sharded_by_windows_merges_into_the_unsharded_result(tmp_path, monkeypatch, capsys):
    from crackseg.cli import common

    write_raster(tmp_path / "ortho.tif")
    model = DarkIsCrack(width=4, crop_size=32)
    monkeypatch.setattr(common, "load_model", lambda args: model)
    flags = ["--device", "cpu", "--precision", "fp32", "--window", "128", "--measure", "--standard", "bre251"]
    assert main(["predict", str(tmp_path / "ortho.tif"), "--out", str(tmp_path / "whole"), *flags]) == 0
    out = tmp_path / "parts"
    runs = []
    real = model.forward
    monkeypatch.setattr(model, "forward", lambda images: runs.append(len(images)) or real(images))
    assert main(["predict", str(tmp_path / "ortho.tif"), "--out", str(out), "--shard", "1/2", *flags]) == 0
    assert "join the parts with crackseg merge-summaries" in capsys.readouterr().out
    assert main(["merge-summaries", str(out)]) == 2  # shard 0 has not run
    assert "part(s) 0 of 2 are not done yet" in capsys.readouterr().err
    assert main(["predict", str(tmp_path / "ortho.tif"), "--out", str(out), "--shard", "0/2", *flags]) == 0
    record = json.loads((out / "ortho.tif_mask.part-0-of-2.json").read_text())
    # 9 windows of 128 px: shard 0 has 0, 2, 4, 6, 8 and shard 1 has 1, 3, 5, 7; window 6 at (256, 0) is nodata
    assert (record["windows_total"], record["windows_run"], record["skipped"]) == (9, 4, 1)
    assert runs  # the model ran (the counter sees it)
    runs.clear()
    assert main(["predict", str(tmp_path / "ortho.tif"), "--out", str(out), "--shard", "0/2", "--skip-existing",
                 *flags]) == 0
    assert runs == [] and "done before" in capsys.readouterr().out  # a part with its record is not run again
    assert main(["merge-summaries", str(out)]) == 0
    assert "1 cracks at 2 mm per px" in capsys.readouterr().out
    assert not list(out.glob("*.part-*"))  # the parts are gone once joined
    for name in ("ortho.tif_mask.tif", "ortho.tif_prob.tif"):
        with rasterio.open(tmp_path / "whole" / name) as whole, rasterio.open(out / name) as joined:
            assert joined.crs == whole.crs and joined.transform == whole.transform
            assert np.array_equal(joined.read(1), whole.read(1)) and whole.read(1).any()
    assert (out / "ortho.tif_cracks.csv").read_text() == (tmp_path / "whole" / "ortho.tif_cracks.csv").read_text()
    runs.clear()
    assert main(["predict", str(tmp_path / "ortho.tif"), "--out", str(out), "--skip-existing", *flags]) == 0
    assert runs == []  # the whole raster is done (its CSV, written last, is there)


def sharded(tmp_path, monkeypatch):
    """Predict flags on the test raster with a model that sees dark pixels, 128 px windows."""
    from crackseg.cli import common

    write_raster(tmp_path / "ortho.tif")
    monkeypatch.setattr(common, "load_model", lambda args: DarkIsCrack(width=4, crop_size=32))
    return ["--device", "cpu", "--precision", "fp32", "--window", "128"]


def test_a_failed_merge_keeps_the_parts_and_a_merged_raster_is_not_run_again(tmp_path, monkeypatch, capsys):
    import errno

    from crackseg.cli import rasters

    flags, out = sharded(tmp_path, monkeypatch), tmp_path / "out"
    for index in range(2):
        assert main(["predict", str(tmp_path / "ortho.tif"), "--out", str(out), "--shard", f"{index}/2", *flags]) == 0
    real = rasters.write_gis

    def disk_full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(rasters, "write_gis", disk_full)
    assert main(["merge-summaries", str(out)]) == 1
    assert "disk full" in capsys.readouterr().err
    assert len(list(out.glob("*.part-*"))) == 6  # nothing lost: the merge can run again
    monkeypatch.setattr(rasters, "write_gis", real)
    assert main(["merge-summaries", str(out)]) == 0 and not list(out.glob("*.part-*"))
    capsys.readouterr()
    # a retried task of the sharded job finds its raster merged: done, not run again into a new part
    assert main(["predict", str(tmp_path / "ortho.tif"), "--out", str(out), "--shard", "0/2", "--skip-existing",
                 *flags]) == 0
    assert "done before (ortho.tif_cracks.csv)" in capsys.readouterr().out and not list(out.glob("*.part-*"))


def test_parts_of_another_grid_or_other_flags_are_not_merged(tmp_path, monkeypatch, capsys):
    flags, out = sharded(tmp_path, monkeypatch), tmp_path / "out"
    assert main(["predict", str(tmp_path / "ortho.tif"), "--out", str(out), "--shard", "0/2", *flags]) == 0
    assert main(["predict", str(tmp_path / "ortho.tif"), "--out", str(out), "--shard", "1/2", "--mask-threshold",
                 "0.4", *flags]) == 0
    assert main(["merge-summaries", str(out)]) == 2
    assert "its parts differ in settings" in capsys.readouterr().err
    write_raster(tmp_path / "ortho.tif", height=600, width=768)  # the raster changed between the tasks
    assert main(["predict", str(tmp_path / "ortho.tif"), "--out", str(out), "--shard", "1/2", *flags]) == 0
    assert main(["merge-summaries", str(out)]) == 2
    assert "its parts differ in grid" in capsys.readouterr().err


def test_measurement_flags_are_checked_before_a_raster_runs(tmp_path, monkeypatch, capsys):
    from crackseg.cli import common

    write_raster(tmp_path / "ortho.tif")
    monkeypatch.setattr(common, "load_model", lambda args: pytest.fail("the model was loaded"))
    assert main(["predict", str(tmp_path / "ortho.tif"), "--out", str(tmp_path / "out"), "--measure",
                 "--mm-per-px", "-1"]) == 2
    assert "--mm-per-px must be positive" in capsys.readouterr().err


def test_photos_and_a_raster_over_two_shards_merge_into_one_summary(tmp_path, monkeypatch):
    flags, out = sharded(tmp_path, monkeypatch), tmp_path / "out"
    Image.new("RGB", (40, 40), (180, 180, 180)).save(tmp_path / "photo.png")  # one photo: one shard has none
    for index in range(2):
        assert main(["predict", str(tmp_path / "ortho.tif"), str(tmp_path / "photo.png"), "--out", str(out),
                     "--shard", f"{index}/2", "--measure", *flags]) == 0
    assert {path.name for path in out.glob("summary-*.csv")} == {"summary-0-of-2.csv", "summary-1-of-2.csv"}
    assert {path.name for path in out.glob("images-*.csv")} == {"images-0-of-2.csv", "images-1-of-2.csv"}
    kept = (out / "images-1-of-2.csv").read_bytes()
    (out / "images-1-of-2.csv").unlink()  # a shard run without --measure, or killed before its tables
    assert main(["merge-summaries", str(out)]) == 2
    (out / "images-1-of-2.csv").write_bytes(kept)
    assert main(["merge-summaries", str(out)]) == 0
    with open(out / "summary.csv", newline="") as handle:
        assert [row["file"] for row in csv.DictReader(handle)] == [str(tmp_path / "photo.png")]
    with open(out / "images.csv", newline="") as handle:
        assert [row["file"] for row in csv.DictReader(handle)] == [str(tmp_path / "photo.png")]
    assert (out / "ortho.tif_cracks.csv").is_file() and (out / "ortho.tif_mask.tif").is_file()
