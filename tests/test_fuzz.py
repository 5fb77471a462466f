"""A folder of odd and broken files, as cameras and colleagues produce them, through predict and check-data."""
import csv
import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from crackseg.commands import main
from crackseg.data import load_image

from test_commands import write_checkpoints
from test_inputs import save_with_orientation, upright_photo


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


def make_fuzz_folder(folder):
    """Writes >= 30 files, no two with one stem; returns (good names, bad names)."""
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
    }
    bad = {
        "truncated.jpg": jpeg[:len(jpeg) // 2], "truncated_png.png": png[:len(png) // 2],
        "empty.jpg": b"", "empty_png.png": b"", "text.jpg": b"this is not an image\n",
        "random.png": rng.integers(0, 255, 500, dtype=np.uint8).tobytes(),
        "html.tif": b"<html><body>404</body></html>", "huge_header.png": png_header_only(100_000, 100_000),
    }
    for name, data in {**good, **bad}.items():
        (folder / name).write_bytes(data)
    for orientation in range(1, 9):
        name = f"exif_{orientation}.jpg"
        save_with_orientation(upright_photo(), folder / name, orientation)
        good[name] = b""
    assert len(good) + len(bad) >= 30
    return sorted(good), sorted(bad)


def test_predict_names_every_broken_file_and_processes_every_good_one(tmp_path, capsys):
    good, bad = make_fuzz_folder(tmp_path / "in")
    flags = write_checkpoints(tmp_path, gate_bias=20.0)
    assert main(["predict", str(tmp_path / "in"), "--out", str(tmp_path / "out"), *flags]) == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err
    with open(tmp_path / "out" / "summary.csv", newline="") as handle:
        rows = {row["file"].rsplit("/", 1)[1]: row for row in csv.DictReader(handle)}
    assert sorted(rows) == sorted(good + bad)
    assert sorted(name for name, row in rows.items() if row["status"] != "ok") == bad
    for name in bad:
        assert name in rows[name]["status"] and name in err
    for name in good:
        row = rows[name]
        mask = Image.open(tmp_path / "out" / row["mask"])
        assert (mask.width, mask.height) == (int(row["width"]), int(row["height"]))
    exif = Image.open(tmp_path / "out" / rows["exif_6.jpg"]["mask"])
    assert exif.size == upright_photo().size  # written upright


def test_check_data_names_every_broken_file_and_keeps_every_good_pair(tmp_path, capsys):
    root = tmp_path / "root"
    good, bad = make_fuzz_folder(root / "train" / "images")
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
    assert main(["check-data", str(root), "--crop", "32", "--splits", "train"]) == 1
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err
    for name in bad + too_small:
        assert any(name in line for line in captured.err.splitlines() if line.startswith("error:")), name
    assert f"train: {len(good) - len(too_small)} good pairs" in captured.out


@pytest.mark.parametrize("count", [1, 3, 4])
def test_shards_cover_every_input_exactly_once_and_merge(tmp_path, count):
    from crackseg.prediction import read_summary

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


def test_skip_existing_resumes_without_redoing_finished_images(tmp_path, monkeypatch):
    from crackseg import prediction

    folder = tmp_path / "in"
    folder.mkdir()
    for index in range(5):
        Image.new("RGB", (40, 40), (index * 40, 0, 0)).save(folder / f"{index}.png")
    flags = write_checkpoints(tmp_path, gate_bias=20.0)
    out = tmp_path / "out"
    real = prediction.crack_overlay
    calls = []

    def dies_on_the_fourth(image, binary):
        calls.append(1)
        if len(calls) == 4:
            raise KeyboardInterrupt  # Ctrl-C in the middle of the run
        return real(image, binary)

    monkeypatch.setattr(prediction, "crack_overlay", dies_on_the_fourth)
    with pytest.raises(KeyboardInterrupt):
        main(["predict", str(folder), "--out", str(out), *flags])
    assert len(prediction.read_summary(out / "summary.csv")) == 3  # the finished images are recorded
    assert not list(out.glob("*.tmp"))
    calls.clear()
    monkeypatch.setattr(prediction, "crack_overlay", lambda image, binary: calls.append(1) or real(image, binary))
    assert main(["predict", str(folder), "--out", str(out), "--skip-existing", *flags]) == 0
    assert len(calls) == 2  # only the two unfinished images ran
    rows = prediction.read_summary(out / "summary.csv")
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
    assert "big.png: 300x200 px (0 MP) is above the limit" in capsys.readouterr().err
    assert main(["predict", str(tmp_path / "big.png"), "--out", str(tmp_path / "b"), "--max-pixels", "0",
                 *flags]) == 0
    assert Image.open(tmp_path / "b" / "big_mask.png").size == (300, 200)
