"""A folder of odd and broken files, as cameras and colleagues produce them, through predict and check-data."""
import csv
import errno
import io
import os
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from test_commands import write_checkpoints
from test_inputs import save_with_orientation, upright_photo

from crackseg.cli import main
from crackseg.files.images import load_image
from crackseg.outputs.tables import append_rows, read_rows


def png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header claims width x height px, with no real image data."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\x00" * 16)) + \
        chunk(b"IEND", b"")


def encoded(image: Image.Image, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


LONG = "x" * 245 + ".png"  # a name the file system takes, but not with "_overlay.png" added
LATIN1 = os.fsdecode(b"caf\xe9.png")  # a name that is not UTF-8


def make_fuzz_folder(folder):
    """Writes >= 30 files, three of them with one stem and sizes of their own; returns (good names, bad names,
    odd names: images whose names predict cannot use, LONG and LATIN1)."""
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    photo = Image.fromarray(rng.integers(0, 255, (70, 90, 3), dtype=np.uint8))
    jpeg, png = encoded(photo, "JPEG"), encoded(photo, "PNG")
    good = {
        "plain.jpg": jpeg, "plain_png.png": png, "upper.JPG": jpeg, "png_named.jpg": png,
        "one_pixel_png.png": encoded(Image.new("RGB", (1, 1), (9, 9, 9)), "PNG"),
        "one_pixel.jpg": encoded(Image.new("RGB", (1, 1)), "JPEG"),
        "sixteen_bit.png": encoded(Image.fromarray((rng.integers(0, 65535, (40, 50))).astype(np.uint16)), "PNG"),
        "cmyk.jpg": encoded(photo.convert("CMYK"), "JPEG"),
        "palette.png": encoded(photo.convert("P"), "PNG"),
        "rgba.png": encoded(photo.convert("RGBA"), "PNG"),
        "grey.jpg": encoded(photo.convert("L"), "JPEG"),
        "grey_alpha.png": encoded(photo.convert("LA"), "PNG"),
        "one_bit.png": encoded(photo.convert("1"), "PNG"),
        "bitmap.bmp": encoded(photo, "BMP"),
        "tiff.tif": encoded(photo, "TIFF"),
        "tiff16.tiff": encoded(Image.fromarray(rng.integers(0, 65535, (33, 47)).astype(np.uint16)), "TIFF"),
        "gif_named.png": encoded(photo.convert("P"), "GIF"),
        "trailing_garbage.png": png + b"garbage after IEND",
        "thin.png": encoded(Image.new("RGB", (700, 16), (200, 200, 200)), "PNG"),
        "coll.jpg": encoded(photo.resize((61, 47)), "JPEG"), "coll.png": encoded(photo.resize((52, 66)), "PNG"),
        "coll_2.png": encoded(photo.resize((75, 38)), "PNG"),
    }
    bad = {
        "truncated.jpg": jpeg[:len(jpeg) // 2], "truncated_png.png": png[:len(png) // 2],
        "empty.jpg": b"", "empty_png.png": b"", "text.jpg": b"this is not an image\n",
        "random.png": rng.integers(0, 255, 500, dtype=np.uint8).tobytes(),
        "html.tif": b"<html><body>404</body></html>", "huge_header.png": png_header_only(100_000, 100_000),
    }
    odd = {LONG: png, LATIN1: encoded(photo.convert("L"), "PNG")}  # grey: check-data prints a note naming it
    for name, data in {**good, **bad, **odd}.items():
        (folder / name).write_bytes(data)
    for orientation in range(1, 9):
        name = f"exif_{orientation}.jpg"
        save_with_orientation(upright_photo(), folder / name, orientation)
        good[name] = b""
    assert len(good) + len(bad) >= 30
    return sorted(good), sorted(bad), sorted(odd)


def test_predict_names_every_broken_file_and_processes_every_good_one(tmp_path, capsys):
    good, bad, odd = make_fuzz_folder(tmp_path / "in")
    flags = write_checkpoints(tmp_path, gate_bias=20.0)
    assert main(["predict", str(tmp_path / "in"), "--out", str(tmp_path / "out"), "--measure", *flags]) == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err
    with open(tmp_path / "out" / "summary.csv", newline="") as handle:
        rows = {row["file"].rsplit("/", 1)[1]: row for row in csv.DictReader(handle)}
    assert sorted(rows) == sorted(good + bad + [LONG])  # each file once; the name that is not UTF-8 has no row
    assert sorted(name for name, row in rows.items() if row["status"] != "ok") == sorted(bad + [LONG])
    for name in bad:
        assert name in rows[name]["status"] and name in err
    assert "File name too long" in rows[LONG]["status"] and f"{LONG}: cannot write its outputs" in err
    assert "caf\\xe9.png: its file name is not UTF-8" in err
    for name in good:  # each with its own outputs, named after the whole file name
        row = rows[name]
        assert row["mask"] == f"{name}_mask.png" and row["overlay"] == f"{name}_overlay.png"
        size = tuple(load_image(tmp_path / "in" / name).shape[:0:-1])
        assert size == (int(row["width"]), int(row["height"]))
        for output in (row["mask"], row["overlay"], f"{name}_measure.png"):
            assert Image.open(tmp_path / "out" / output).size == size, output
    exif = Image.open(tmp_path / "out" / rows["exif_6.jpg"]["mask"])
    assert exif.size == upright_photo().size  # written upright


def test_check_data_names_every_broken_file_and_keeps_every_good_pair(tmp_path, capsys):
    root = tmp_path / "root"
    good, bad, odd = make_fuzz_folder(root / "train" / "images")
    good += odd  # odd names are fine to train on
    (root / "train" / "masks").mkdir()
    sizes = {}
    for name in good + bad:
        try:
            sizes[name] = tuple(load_image(root / "train" / "images" / name).shape[1:])
        except ValueError:
            sizes[name] = (64, 64)
        Image.new("L", sizes[name][::-1]).save(root / "train" / "masks" / (name.rsplit(".", 1)[0] + ".png"))
    too_small = sorted(name for name in good if min(sizes[name]) < 32)
    assert too_small == ["one_pixel.jpg", "one_pixel_png.png", "thin.png"]
    paired_by_stem = ["coll.jpg", "coll.png"]  # one mask name for two images: which pair is meant?
    assert main(["check-data", str(root), "--crop", "32", "--splits", "train"]) == 1
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err
    for name in bad + too_small + paired_by_stem:
        assert any(name in line for line in captured.err.splitlines() if line.startswith("error:")), name
    assert f"train: {len(good) - len(too_small) - len(paired_by_stem)} good pairs" in captured.out
    assert "caf\\xe9.png: grey image" in captured.out


@pytest.mark.parametrize("count", [1, 3, 4])
def test_shards_cover_every_input_exactly_once_and_merge(tmp_path, count):
    from crackseg.pipelines.photos import read_summary

    folder = tmp_path / "in"
    folder.mkdir()
    for index in range(7):
        Image.new("RGB", (40, 40), (index * 30, 0, 0)).save(folder / f"{index}.png")
    (folder / "sub").mkdir()
    Image.new("RGB", (40, 40)).save(folder / "sub" / "0.png")  # same stem as 0.png: distinct output names
    flags = write_checkpoints(tmp_path, gate_bias=20.0)
    out = tmp_path / "out"
    for index in range(count):
        assert main(["predict", str(folder), "--out", str(out), "--shard", f"{index}/{count}", *flags]) == 0
    assert main(["merge-summaries", str(out)]) == 0
    rows = read_summary(out / "summary.csv")
    assert sorted(row["file"] for row in rows) == sorted(str(p) for p in folder.rglob("*.png"))
    assert len({row["mask"] for row in rows}) == 8 and all((out / row["mask"]).is_file() for row in rows)


def test_merge_refuses_a_missing_shard_and_bad_shard_flags(tmp_path, capsys):
    folder = tmp_path / "in"
    folder.mkdir()
    for index in range(3):
        Image.new("RGB", (40, 40)).save(folder / f"{index}.png")
    flags = write_checkpoints(tmp_path, gate_bias=20.0)
    assert main(["predict", str(folder), "--out", str(tmp_path / "out"), "--shard", "0/2", *flags]) == 0
    assert main(["merge-summaries", str(tmp_path / "out")]) == 2
    assert "shard(s) 1 of 2 have no summary yet" in capsys.readouterr().err
    for spec in ("2/2", "x", "1/0"):
        assert main(["predict", str(folder), "--out", str(tmp_path / "out"), "--shard", spec, *flags]) == 2
        assert "--shard" in capsys.readouterr().err


def red_photos(tmp_path, count):
    """TMP/in/0.png .. with reds of 0, 40, 80, ...; and the flags of checkpoints whose gate is open."""
    folder = tmp_path / "in"
    folder.mkdir()
    for index in range(count):
        Image.new("RGB", (40, 40), (index * 40, 0, 0)).save(folder / f"{index}.png")
    return folder, write_checkpoints(tmp_path, gate_bias=20.0)


def test_skip_existing_resumes_without_redoing_finished_images(tmp_path, monkeypatch, capsys):
    from crackseg.pipelines import photos, results

    folder, flags = red_photos(tmp_path, 5)
    out = tmp_path / "out"
    real = results.crack_overlay
    calls = []

    def dies_on_the_fourth(image, binary):
        calls.append(1)
        if len(calls) == 4:
            raise KeyboardInterrupt  # Ctrl-C in the middle of the run
        return real(image, binary)

    monkeypatch.setattr(results, "crack_overlay", dies_on_the_fourth)
    assert main(["predict", str(folder), "--out", str(out), *flags]) == 130
    assert capsys.readouterr().err.splitlines()[-1] == "interrupted after 3 of 5 inputs; --skip-existing resumes"
    assert len(photos.read_summary(out / "summary.csv")) == 3  # the finished images are recorded
    assert not list(out.glob("*.tmp"))
    calls.clear()
    monkeypatch.setattr(results, "crack_overlay", lambda image, binary: calls.append(1) or real(image, binary))
    assert main(["predict", str(folder), "--out", str(out), "--skip-existing", *flags]) == 0
    assert len(calls) == 2  # only the two unfinished images ran
    rows = photos.read_summary(out / "summary.csv")
    assert [row["file"] for row in rows] == [str(folder / f"{index}.png") for index in range(5)]


def test_evaluate_and_predict_refuse_thresholds_that_cannot_work(tiny_dataset, tmp_path, capsys):
    assert main(["evaluate", "--floor", "--mask-threshold", "0", "--data-root", str(tiny_dataset),
                 "--out", str(tmp_path)]) == 2
    assert "--mask-threshold must be in (0, 1)" in capsys.readouterr().err
    assert main(["predict", "x.png", "--out", str(tmp_path), "--gate-threshold", "1.5"]) == 2
    assert "--gate-threshold must be in [0, 1)" in capsys.readouterr().err


def test_predict_reads_images_above_the_pixel_limit_only_when_asked(tmp_path, capsys):
    Image.new("RGB", (300, 200), (120, 120, 120)).save(tmp_path / "big.png")
    flags = write_checkpoints(tmp_path, gate_bias=20.0)
    assert main(["predict", str(tmp_path / "big.png"), "--out", str(tmp_path / "a"), "--max-pixels", "50000",
                 *flags]) == 1
    assert "big.png: 300x200 px (0.06 MP) is above the limit of 0.05 MP" in capsys.readouterr().err
    assert main(["predict", str(tmp_path / "big.png"), "--out", str(tmp_path / "b"), "--max-pixels", "0",
                 *flags]) == 0
    assert Image.open(tmp_path / "b" / "big.png_mask.png").size == (300, 200)


def test_a_row_cut_inside_its_last_field_is_dropped_and_not_continued(tmp_path):
    path, fields = tmp_path / "frames.csv", ("frame", "share")
    append_rows(path, fields, [{"frame": 0, "share": 0.5}, {"frame": 1, "share": 0.123456}])
    path.write_bytes(path.read_bytes()[:-5])  # killed while writing 0.123456
    assert read_rows(path) == [{"frame": "0", "share": "0.5"}]
    append_rows(path, fields, [{"frame": 1, "share": 0.25}])
    assert read_rows(path) == [{"frame": "0", "share": "0.5"}, {"frame": "1", "share": "0.25"}]
    path.write_text("fra")  # killed in the header
    append_rows(path, fields, [{"frame": 2, "share": 1}])
    assert read_rows(path) == [{"frame": "2", "share": "1"}]


def test_output_names_stay_with_their_files_when_other_files_come(tmp_path):
    folder, out = tmp_path / "in", tmp_path / "out"
    (folder / "sub").mkdir(parents=True)
    Image.new("RGB", (40, 33)).save(folder / "b.png")
    Image.new("RGB", (44, 35)).save(folder / "sub" / "b.png")
    flags = write_checkpoints(tmp_path, gate_bias=20.0)
    assert main(["predict", str(folder), "--out", str(out), *flags]) == 0
    first = (out / "b.png_mask.png").read_bytes()
    Image.new("RGB", (50, 37)).save(folder / "b.jpg")  # sorts before b.png
    assert main(["predict", str(folder), "--out", str(out), "--skip-existing", *flags]) == 0
    with open(out / "summary.csv", newline="") as handle:
        rows = {row["file"]: row for row in csv.DictReader(handle)}
    assert {Path(file).relative_to(folder).as_posix(): row["mask"] for file, row in rows.items()} == {
        "b.jpg": "b.jpg_mask.png", "b.png": "b.png_mask.png", "sub/b.png": "sub/b.png_mask.png"}
    assert (out / "b.png_mask.png").read_bytes() == first  # not run again, not overwritten
    for file, row in rows.items():
        assert Image.open(out / row["mask"]).size == Image.open(file).size


def test_out_inside_an_input_folder_is_never_read_nor_an_input_overwritten(tmp_path, capsys):
    folder = tmp_path / "in"
    folder.mkdir()
    Image.new("RGB", (40, 40)).save(folder / "a.png")
    Image.new("RGB", (36, 36), (90, 0, 0)).save(folder / "a_mask.png")  # the user's own photo
    Image.new("RGB", (36, 36), (90, 0, 0)).save(folder / "a.png_mask.png")  # named like an output, even
    photos = {path.name: path.read_bytes() for path in folder.iterdir()}
    flags = write_checkpoints(tmp_path, gate_bias=20.0)
    for _ in range(2):
        assert main(["predict", str(folder), "--out", str(folder / "results"), *flags]) == 0
    with open(folder / "results" / "summary.csv", newline="") as handle:
        assert sorted(Path(row["file"]).name for row in csv.DictReader(handle)) == sorted(photos)
    assert main(["predict", str(folder), "--out", str(folder), *flags]) == 1
    assert "inside --out" in capsys.readouterr().err
    assert main(["predict", str(folder / "a.png"), "--out", str(folder), *flags]) == 1
    assert main(["measure", str(folder), "--out", str(folder)]) == 1
    assert {path.name: path.read_bytes() for path in folder.iterdir() if path.is_file()} == photos


def test_inputs_that_would_share_output_names_are_refused_by_name(tmp_path, capsys):
    for folder in ("a", "b"):
        (tmp_path / folder).mkdir()
        Image.new("RGB", (40, 40)).save(tmp_path / folder / "x.png")
    assert main(["predict", str(tmp_path / "a" / "x.png"), str(tmp_path / "b"), "--out", str(tmp_path / "out")]) == 1
    err = capsys.readouterr().err
    for folder, other in (("a", "b"), ("b", "a")):
        assert f"{tmp_path / folder / 'x.png'}: its outputs would be named x.png, as those of " \
               f"{tmp_path / other / 'x.png'}" in err
    assert not list((tmp_path / "out").iterdir())


@pytest.mark.parametrize("command", ["predict", "measure"])
def test_an_out_that_cannot_be_written_is_one_line_before_the_model_loads(tmp_path, monkeypatch, capsys, command):
    from crackseg.cli import common

    monkeypatch.setattr(common, "load_model", lambda args: pytest.fail("the model loaded"))
    Image.new("L", (40, 40)).save(tmp_path / "m.png")
    (tmp_path / "file").write_text("a file")
    for out, problem in ((tmp_path / "file", "a file, not a folder"),
                         (tmp_path / "file" / "below", "cannot write the outputs there (Not a directory)")):
        assert main([command, str(tmp_path / "m.png"), "--out", str(out)]) == 2
        assert capsys.readouterr().err == f"error: --out {out}: {problem}\n"

    def read_only(*args, **kwargs):
        raise OSError(errno.EROFS, "Read-only file system")

    monkeypatch.setattr("tempfile.TemporaryFile", read_only)
    assert main([command, str(tmp_path / "m.png"), "--out", str(tmp_path / "ro")]) == 2
    assert capsys.readouterr().err == (f"error: --out {tmp_path / 'ro'}: cannot write the outputs there (Read-only "
                                       "file system)\n")


def test_a_full_disk_is_one_line_and_keeps_the_images_done(tmp_path, monkeypatch, capsys):
    from crackseg.pipelines import photos, results

    folder, flags = red_photos(tmp_path, 3)
    real, calls = results.save_png, []

    def fills_up(array, path):
        calls.append(path)
        if len(calls) == 3:  # the second image's mask
            raise OSError(errno.ENOSPC, "No space left on device")
        real(array, path)

    monkeypatch.setattr(results, "save_png", fills_up)
    assert main(["predict", str(folder), "--out", str(tmp_path / "out"), *flags]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: disk full (No space left on device)")
    rows = photos.read_summary(tmp_path / "out" / "summary.csv")
    assert [(Path(row["file"]).name, row["status"]) for row in rows] == [("0.png", "ok")]


def make_mask_folder(folder):
    """Masks of one crack each, a line of a length and in a mask size of its own, three with one stem, one in a
    subfolder of the same name, plus odd names and broken files; returns ({good name: line length}, bad names)."""
    (folder / "sub").mkdir(parents=True)
    lengths = {"coll.png": 20, "coll.tif": 26, "coll_2.png": 32, "sub/coll.png": 38, LONG: 44, LATIN1: 50}
    for index, (name, length) in enumerate(lengths.items()):
        mask = np.zeros((40 + index, 60 + index), np.uint8)
        mask[10:13, 5:5 + length] = 255
        Image.fromarray(mask).save(folder / name)
    bad = {"truncated.png": encoded(Image.new("L", (40, 40)), "PNG")[:30], "empty.png": b""}
    for name, data in bad.items():
        (folder / name).write_bytes(data)
    return {name: length for name, length in lengths.items() if name not in (LONG, LATIN1)}, sorted(bad)


def test_measure_names_every_failure_and_measures_every_good_mask_once_into_its_own_overlay(tmp_path, capsys):
    good, bad = make_mask_folder(tmp_path / "masks")
    assert main(["measure", str(tmp_path / "masks"), "--out", str(tmp_path / "out")]) == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err
    for name in bad + [f"{LONG}: cannot write its outputs", "caf\\xe9.png: its file name is not UTF-8"]:
        assert name in err, name
    with open(tmp_path / "out" / "images.csv", newline="") as handle:
        rows = {Path(row["file"]).relative_to(tmp_path / "masks").as_posix(): row for row in csv.DictReader(handle)}
    assert sorted(rows) == sorted(good)
    for name, length in good.items():
        assert rows[name]["overlay"] == f"{name}_measure.png"
        assert int(rows[name]["cracks"]) == 1 and abs(float(rows[name]["total_length_px"]) - length) < 3, name
        assert Image.open(tmp_path / "out" / rows[name]["overlay"]).size == Image.open(tmp_path / "masks" / name).size


def test_ctrl_c_in_measure_is_one_line_and_keeps_the_masks_measured(tmp_path, monkeypatch, capsys):
    from crackseg.cli import measure

    make_mask_folder(tmp_path / "masks")
    real, calls = measure.load_mask, []

    def interrupted(path, **options):
        calls.append(path)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(path, **options)

    monkeypatch.setattr(measure, "load_mask", interrupted)
    names = [str(tmp_path / "masks" / name) for name in ("coll.png", "coll.tif", "coll_2.png")]
    assert main(["measure", *names, "--out", str(tmp_path / "out")]) == 130
    assert capsys.readouterr().err.splitlines()[-1] == ("interrupted after 2 of 3 masks; cracks.csv, images.csv, "
                                                        "cracks.json hold the 2 measured")
    with open(tmp_path / "out" / "images.csv", newline="") as handle:
        assert [row["file"] for row in csv.DictReader(handle)] == names[:2]


def test_a_resumed_measured_run_keeps_each_cracks_confidence(tmp_path, monkeypatch):
    from test_video import interrupt_the_third_overlay, read_table, seeing_predictor

    from crackseg.cli import predict
    from crackseg.pipelines import results

    monkeypatch.setattr(predict, "predictor_from_args", seeing_predictor)
    folder = tmp_path / "in"
    folder.mkdir()
    for index in range(4):  # a dark crack in each, seen with probability 0.83
        pixels = np.full((48, 64, 3), 160, np.uint8)
        pixels[10 + 5 * index:13 + 5 * index, 4:60] = 40
        Image.fromarray(pixels).save(folder / f"{index}.png")
    assert main(["predict", str(folder), "--out", str(tmp_path / "whole"), "--measure"]) == 0
    real = interrupt_the_third_overlay(monkeypatch)
    assert main(["predict", str(folder), "--out", str(tmp_path / "parts"), "--measure"]) == 130
    monkeypatch.setattr(results, "crack_overlay", real)
    assert main(["predict", str(folder), "--out", str(tmp_path / "parts"), "--measure", "--skip-existing"]) == 0
    whole, parts = (read_table(tmp_path / name / "cracks.csv") for name in ("whole", "parts"))
    assert parts == whole and len(whole) == 4
    assert {row["confidence"] for row in parts} == {"0.831"}  # 212 / 255, resumed or not
    assert np.asarray(Image.open(tmp_path / "parts" / "0.png_prob.png")).max() == 212


def test_a_run_without_measure_leaves_no_earlier_probabilities_behind(tmp_path, monkeypatch):
    from test_video import seeing_predictor

    from crackseg.cli import predict

    monkeypatch.setattr(predict, "predictor_from_args", seeing_predictor)
    pixels = np.full((48, 64, 3), 160, np.uint8)
    pixels[20:23, 4:60] = 40
    Image.fromarray(pixels).save(tmp_path / "a.png")
    out = tmp_path / "out"
    assert main(["predict", str(tmp_path / "a.png"), "--out", str(out), "--measure"]) == 0
    assert (out / "a.png_prob.png").is_file()
    assert main(["predict", str(tmp_path / "a.png"), "--out", str(out)]) == 0  # a new mask, no probabilities
    assert not (out / "a.png_prob.png").exists()  # a later resume must not take confidence from the old ones
