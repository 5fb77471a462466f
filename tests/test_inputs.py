"""Files as cameras and colleagues produce them: odd mask encodings, EXIF orientation, huge images."""
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from crackseg.cli.train import show_messages
from crackseg.data.checks import check_split
from crackseg.data.datasets import read_pair
from crackseg.errors import DatasetError
from crackseg.files.images import load_image, load_mask
from crackseg.pipelines.photos import expand_inputs

# what Pillow's exif_transpose applies for each orientation tag, and so how a camera stores an upright scene
STORED_AS = {1: None, 2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180,
             4: Image.Transpose.FLIP_TOP_BOTTOM, 5: Image.Transpose.TRANSPOSE, 6: Image.Transpose.ROTATE_90,
             7: Image.Transpose.TRANSVERSE, 8: Image.Transpose.ROTATE_270}


def upright_photo(height=48, width=80):
    """An asymmetric RGB scene: a bright block near the top-left corner."""
    pixels = np.full((height, width, 3), 40, np.uint8)
    pixels[4:14, 6:30] = 230
    return Image.fromarray(pixels)


def save_with_orientation(photo: Image.Image, path, orientation: int) -> None:
    stored = photo if STORED_AS[orientation] is None else photo.transpose(STORED_AS[orientation])
    exif = Image.Exif()
    exif[0x0112] = orientation
    stored.save(path, exif=exif, quality=95)


def crack_mask(height=48, width=80):
    mask = np.zeros((height, width), np.uint8)
    mask[20:23, 10:70] = 1
    return mask


def test_zero_one_masks_in_16_bit_png_and_in_jpeg_load_as_cracks(tmp_path):
    mask = crack_mask()
    Image.fromarray(mask.astype(np.uint16)).save(tmp_path / "sixteen.png")
    assert Image.open(tmp_path / "sixteen.png").mode.startswith("I")
    Image.fromarray(mask * 1).convert("L").save(tmp_path / "jpeg.jpg", quality=95)
    Image.fromarray((mask * 255).astype(np.uint16)).save(tmp_path / "sixteen_255.png")  # 0/255 in 16 bits
    Image.fromarray(mask.astype(np.uint16) * 65535).save(tmp_path / "sixteen_full.png")
    for name in ("sixteen.png", "jpeg.jpg", "sixteen_255.png", "sixteen_full.png"):
        loaded = load_mask(tmp_path / name)[0].numpy()
        assert (loaded & mask).sum() >= 0.95 * mask.sum(), name  # JPEG may lose an edge pixel or two
        assert loaded.sum() <= 2 * mask.sum(), name  # JPEG ringing may widen a 0/1 crack, not flood the mask


def test_check_data_calls_a_mask_that_would_load_empty_an_error_and_an_all_empty_split_a_warning(tmp_path):
    for split in ("valid",):
        (tmp_path / split / "images").mkdir(parents=True)
        (tmp_path / split / "masks").mkdir(parents=True)
    upright_photo().save(tmp_path / "valid" / "images" / "a.png")
    Image.fromarray(crack_mask().astype(np.uint16)).save(tmp_path / "valid" / "masks" / "a.png")
    report = check_split(tmp_path, "valid", 32)
    assert [f.level for f in report.findings] == [] and report.crack_pixels == crack_mask().sum()
    Image.fromarray(np.zeros((48, 80), np.uint8)).save(tmp_path / "valid" / "masks" / "a.png")
    report = check_split(tmp_path, "valid", 32)
    assert [(f.level, "masks are empty" in f.message) for f in report.findings] == [("warning", True)]


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_is_applied_to_photos_and_masks(tmp_path, orientation):
    photo = upright_photo()
    save_with_orientation(photo, tmp_path / "photo.jpg", orientation)
    Image.fromarray(crack_mask() * 255).save(tmp_path / "mask.png")  # masks drawn on the upright photo
    image, mask = read_pair(tmp_path / "photo.jpg", tmp_path / "mask.png")  # no size mismatch
    assert image.shape == (3, 48, 80) and mask.shape == (1, 48, 80)
    bright = image[0].numpy() > 128
    assert bright[4:14, 6:30].mean() > 0.95 and bright.mean() < 0.1  # the block is where the scene has it


def test_a_header_claiming_a_huge_image_is_a_clear_error_and_a_limit_can_be_raised(tmp_path):
    path = tmp_path / "huge.png"
    Image.new("L", (20000, 10000)).save(path)  # 200 MP of zeros compress to a small file
    with pytest.raises(DatasetError, match=r"huge.png: 20000x10000 px \(200 MP\) is above the limit"):
        load_image(path)
    report = check_split_with_image(tmp_path, path)
    assert any("above the limit" in f.message for f in report.findings if f.level == "error")
    small = tmp_path / "small.png"
    Image.new("L", (300, 200)).save(small)
    with pytest.raises(DatasetError, match=r"300x200 px \(0.06 MP\) is above the limit of 0.05 MP"):  # was "0 MP"
        load_image(small, max_pixels=50_000)
    assert load_image(small, max_pixels=60_000).shape == (3, 200, 300)


def check_split_with_image(root, image_path):
    (root / "train" / "images").mkdir(parents=True)
    (root / "train" / "masks").mkdir(parents=True)
    image_path.rename(root / "train" / "images" / image_path.name)
    Image.new("L", (20000, 10000)).save(root / "train" / "masks" / image_path.name)
    return check_split(root, "train", 32)


def one_pair(root, photo: Image.Image, mask: Image.Image, image_name="a.png", mask_name="a.png"):
    """ROOT/train/{images,masks} with one pair; the check-data findings of that split."""
    for kind, image, name in (("images", photo, image_name), ("masks", mask, mask_name)):
        (root / "train" / kind).mkdir(parents=True, exist_ok=True)
        image.save(root / "train" / kind / name)
    return check_split(root, "train", 32).findings


def test_palette_masks_are_read_by_their_colours_and_inverted_or_alpha_masks_are_warned_of(tmp_path):
    mask = np.zeros((64, 64), np.uint8)
    mask[20:31, 10:30] = 255  # 220 crack px
    quantized = Image.fromarray(mask).convert("RGB").quantize(2)
    assert quantized.getpalette()[:3] == [255, 255, 255]  # Pillow puts white at index 0
    quantized.save(tmp_path / "palette.png")
    assert load_mask(tmp_path / "palette.png").sum() == 220  # was 3876: read by index, inverted
    findings = one_pair(tmp_path / "inverted", upright_photo(64, 64), Image.fromarray(255 - mask))
    assert [(f.level, f.message) for f in findings] == [("warning", "95% of its pixels are crack: inverted (crack "
                                                                     "black on white)?")]
    alpha = np.zeros((64, 64, 4), np.uint8)
    alpha[..., 3] = mask  # black everywhere, the crack drawn in the alpha channel only
    findings = one_pair(tmp_path / "alpha", upright_photo(64, 64), Image.fromarray(alpha, "RGBA"))
    assert ("warning", "no crack in its colours, but its alpha channel varies (3876 px differ): crackseg reads the "
                       "colours only") in [(f.level, f.message) for f in findings]


@pytest.mark.parametrize("kind", ["float 0..1", "int32", "12-bit in 16-bit PNG", "16-bit"])
def test_high_bit_depth_images_are_scaled_by_the_range_their_values_use(tmp_path, kind):
    grey = np.linspace(0, 1, 64 * 64).reshape(64, 64)  # black to white
    values, name = {"float 0..1": (grey.astype(np.float32), "a.tif"),
                    "int32": ((grey * 100_000).astype(np.int32), "a.tif"),
                    "12-bit in 16-bit PNG": ((grey * 4095).astype(np.uint16), "a.png"),
                    "16-bit": ((grey * 65535).astype(np.uint16), "a.png")}[kind]
    Image.fromarray(values).save(tmp_path / name)
    loaded = load_image(tmp_path / name)[0].numpy().astype(int)
    assert np.abs(loaded - grey * 255).max() <= 1  # was all black (float, 12-bit) or white above 65535 (int32)
    findings = one_pair(tmp_path / "root", Image.open(tmp_path / name), Image.fromarray(np.zeros((64, 64), np.uint8)),
                        image_name=name)
    assert "white" in next(f.message for f in findings if f.level == "note")


def test_multi_page_and_animated_files_say_that_only_the_first_frame_is_read(tmp_path, capsys):
    show_messages()  # as the commands do
    frames = [Image.fromarray(np.full((64, 64), value, np.uint8)) for value in (10, 100, 200)]
    for name in ("pages.tif", "animated.gif", "animated.png", "animated.webp"):
        frames[0].save(tmp_path / name, save_all=True, append_images=frames[1:])
        assert load_image(tmp_path / name)[0, 0, 0] == 10
        kind = "pages (TIFF)" if name.endswith(".tif") else "frames"
        assert f"note: {tmp_path / name}: 3 {kind}" in capsys.readouterr().out  # was silent
    pages = [Image.fromarray(crack_mask(64, 64) * 255)] * 3
    assert one_pair(tmp_path / "root", upright_photo(64, 64), pages[0], mask_name="a.tif") == []
    pages[0].save(tmp_path / "root" / "train" / "masks" / "a.tif", save_all=True, append_images=pages[1:])
    findings = check_split(tmp_path / "root", "train", 32).findings
    assert [(f.level, f.message) for f in findings] == [("note", "3 pages (TIFF): only the first is read")]


def test_exif_orientation_is_named_where_a_mask_may_lie_turned(tmp_path):
    root = tmp_path / "root"
    assert one_pair(root, upright_photo(64, 64), Image.fromarray(crack_mask(64, 64) * 255), image_name="a.jpg") == []
    save_with_orientation(upright_photo(64, 64), root / "train" / "images" / "a.jpg", 6)  # square: no size tells
    findings = check_split(root, "train", 32).findings
    assert [(f.level, f.message) for f in findings] == [("warning", "EXIF orientation 6 of the image is applied (read "
                                                                     "upright) and 1 of its mask: a mask drawn on the "
                                                                     "stored pixels is turned or mirrored against the "
                                                                     "upright photo; check that it lies on the upright "
                                                                     "photo")]
    save_with_orientation(upright_photo(), root / "train" / "images" / "a.jpg", 6)  # wide, stored turned
    Image.fromarray(crack_mask() * 255).save(root / "train" / "masks" / "a.png")  # drawn on the upright photo
    assert check_split(root, "train", 32).findings == []  # the sizes prove it: no warning for every phone photo
    save_with_orientation(upright_photo(), tmp_path / "wide.jpg", 6)
    Image.fromarray(crack_mask().T.copy()).save(tmp_path / "raw.png")  # drawn on the stored 48x80 pixels
    with pytest.raises(DatasetError, match=r"is 48x80 px \(EXIF orientation 6 of the image is applied"):
        read_pair(tmp_path / "wide.jpg", tmp_path / "raw.png")


def test_folders_name_what_they_skip_and_why(tmp_path, capsys, monkeypatch):
    show_messages()  # as the commands do
    folder = tmp_path / "in"
    (folder / "locked").mkdir(parents=True)
    for name in ("a.webp", ".png", "locked/b.png"):  # WebP and a file named only '.png' were skipped silently
        Image.new("RGB", (8, 8)).save(folder / name, format="WEBP" if name.endswith("webp") else "PNG")
    (folder / "notes.txt").write_text("not an image")
    (folder / "gone.jpg").symlink_to(tmp_path / "nowhere.jpg")
    scandir = os.scandir

    def chmod_000(path):  # what a folder without read permission does (to anyone but root)
        if Path(path) == folder / "locked":
            raise PermissionError(13, "Permission denied", str(path))
        return scandir(path)

    monkeypatch.setattr(os, "scandir", chmod_000)
    named, problems = expand_inputs([str(folder)])
    assert sorted(named.values()) == [".png", "a.webp"]
    assert problems == [f"{folder / 'gone.jpg'}: a link to nothing: skipped",
                        f"{folder / 'locked'}: cannot list this folder (Permission denied): its files are skipped"]
    assert f"note: {folder}: skipped 1 file(s) that are not images or videos" in capsys.readouterr().out


def test_a_link_back_up_a_folder_is_searched_once(tmp_path, capsys):
    from crackseg.pipelines.photos import expand_inputs

    show_messages()
    folder = tmp_path / "in"
    folder.mkdir()
    Image.new("RGB", (8, 8)).save(folder / "a.png")
    (folder / "loop").symlink_to(".")  # was walked 40 levels deep: one photo became 41 inputs
    names, problems = expand_inputs([str(folder)])
    assert list(names.values()) == ["a.png"] and problems == []
    assert "loop: a link to a folder already searched: skipped" in capsys.readouterr().out
