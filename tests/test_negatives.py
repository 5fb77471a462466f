"""`crackseg negatives`: false-positive shares of crack-free material, and hard-negative mining."""
import json

import numpy as np
import pytest
from PIL import Image

from crackseg.errors import DatasetError
from crackseg.files.images import pair_files
from crackseg.inference.predictor import Predictor
from crackseg.models import UNetClassifier
from crackseg.pipelines.negatives import scan, scan_all


class DarkIsCrack(UNetClassifier):
    """A stand-in model for the test: a pixel darker than 80/255 is crack, a tile with one is gated cracked."""

    def forward(self, images):
        masks = (images < 80 / 255).all(1, keepdim=True).float()
        return masks, masks.flatten(1).amax(1, keepdim=True)


@pytest.fixture
def predictor():
    return Predictor(DarkIsCrack(width=4, crop_size=32), fast=False, batch_size=8, mask_threshold=0.5, min_length=10)


def photo(path, lines=(), size=(64, 96)):
    """A light grey photo with dark bars ((y, x0, x1) rows, 2 px thick)."""
    array = np.full((*size, 3), 180, np.uint8)
    for y, x0, x1 in lines:
        array[y:y + 2, x0:x1] = 20
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)
    return array


def test_photos_called_cracked_and_their_pixels(tmp_path, predictor):
    folder = tmp_path / "no_crack"
    photo(folder / "a.png")
    photo(folder / "b.png", [(10, 5, 40)])  # a 35 px dark line: called cracked
    photo(folder / "c.png", [(10, 5, 12)])  # 7 px: shorter than min_length, not cracked
    result = scan(predictor, folder, split="all")
    assert (result["unit"], result["count"], result["called_cracked"]) == ("photos", 3, 1)
    assert result["share_of_pixels_called_crack"] == pytest.approx((70 + 14) / (3 * 64 * 96), abs=1e-5)


def test_only_crack_free_tiles_of_a_data_root_count_and_label_maps_are_scored(tmp_path, predictor):
    root = tmp_path / "root"
    # a labelled crack on the left, an unlabelled "joint" on the right (called crack: a false positive)
    photo(root / "valid" / "images" / "p.png", [(20, 2, 30), (40, 60, 94)])
    mask = np.zeros((64, 96), np.uint8)
    mask[20:22, 2:30] = 255
    (root / "valid" / "masks").mkdir()
    Image.fromarray(mask).save(root / "valid" / "masks" / "p.png")
    other = np.zeros((64, 96), np.uint8)
    other[38:44, 55:96] = 210  # the joint's class in the label map
    (root / "valid" / "other").mkdir()
    Image.fromarray(other).save(root / "valid" / "other" / "p.png")
    result = scan(predictor, root, split="valid")
    assert result["unit"] == "crack-free tiles"
    assert 0 < result["count"] < 12  # tiles near the labelled crack are left out
    assert result["called_cracked"] >= 1
    assert result["classes"]["210"]["pixels"] == 6 * 41
    assert result["classes"]["210"]["share_called_crack"] == pytest.approx(2 * 34 / (6 * 41), abs=1e-4)


def test_mining_writes_the_false_positives_as_a_data_root(tmp_path, predictor):
    folder = tmp_path / "walls"
    for index in range(10):
        photo(folder / f"w{index}.png", [(10, 5, 40)] if index % 2 else [])
    out = tmp_path / "mined"
    (result,) = scan_all(predictor, [folder], split="all", out=out)
    assert result["mined"] == 5
    pairs = pair_files(out / "train" / "images", out / "train" / "masks")
    assert [image.name for image, _ in pairs] == ["walls_w1.png", "walls_w3.png", "walls_w5.png", "walls_w7.png"]
    (held_out,) = pair_files(out / "valid" / "images", out / "valid" / "masks")  # every 5th mined
    assert held_out[0].name == "walls_w9.png"
    assert not np.asarray(Image.open(pairs[0][1])).any()  # crack-free photos: empty masks
    assert np.asarray(Image.open(pairs[0][0])).shape == (64, 96, 3)


def test_negatives_command_prints_json(tmp_path, capsys, monkeypatch):
    import crackseg.cli as commands
    from crackseg.cli import common

    folder = tmp_path / "no_crack"
    photo(folder / "a.png", [(10, 5, 40)])
    monkeypatch.setattr(common, "load_model", lambda args: DarkIsCrack(width=4, crop_size=32))
    assert commands.main(["negatives", str(folder), "--split", "all", "--json", str(tmp_path / "fp.json"),
                          "--precision", "fp32"]) == 0
    (written,) = json.loads((tmp_path / "fp.json").read_text())
    assert written["called_cracked"] == 1 and written["count"] == 1
    assert json.loads(capsys.readouterr().out) == [written]  # stdout is the JSON alone: progress goes to stderr


def test_label_maps_of_another_size_and_empty_splits_are_one_line_errors(tmp_path, predictor):
    root = tmp_path / "root"
    photo(root / "valid" / "images" / "p.png")
    (root / "valid" / "masks").mkdir()
    Image.fromarray(np.zeros((64, 96), np.uint8)).save(root / "valid" / "masks" / "p.png")
    (root / "valid" / "other").mkdir()
    Image.fromarray(np.zeros((32, 32), np.uint8)).save(root / "valid" / "other" / "p.png")
    with pytest.raises(DatasetError, match="p.png: label map of 32x32 px for an image of 96x64 px"):
        scan(predictor, root, split="valid")
    with pytest.raises(DatasetError, match="a data root without"):
        scan(predictor, root, split="all")
    few = tmp_path / "few"
    photo(few / "a.png")
    with pytest.raises(DatasetError, match="no photos in its valid split"):
        scan(predictor, few, split="valid")  # one photo: every 5th is valid, so none


def test_pseudolabels_write_the_teachers_masks_of_photos_it_calls_cracked(tmp_path, predictor):
    from crackseg.pipelines.pseudolabels import label_all

    folder = tmp_path / "crack"
    for index in range(10):  # every 5th file (b4, b9) is held out; b2 and b7's lines are too short for a crack
        photo(folder / f"b{index}.png", [(10, 5, 12 if index % 5 == 2 else 50)])
    out = tmp_path / "pseudo"
    (result,) = label_all(predictor, [folder], out, split="train")
    assert (result["photos"], result["labelled"], result["left_out"]) == (8, 6, 2)
    assert result["share_of_pixels_labelled_crack"] == pytest.approx(2 * 45 / (64 * 96), abs=1e-5)
    train = pair_files(out / "train" / "images", out / "train" / "masks")
    (valid,) = pair_files(out / "valid" / "images", out / "valid" / "masks")  # the 5th written
    assert [image.name for image, _ in train] == ["crack_b0.png", "crack_b1.png", "crack_b3.png", "crack_b5.png",
                                                  "crack_b8.png"]
    assert valid[0].name == "crack_b6.png"
    mask = np.asarray(Image.open(train[0][1])) > 0
    assert mask.sum() == 2 * 45 and mask[10:12, 5:50].all()  # the teacher's mask, at the photo's size
    photo(tmp_path / "one" / "a.png", [(10, 5, 50)])
    with pytest.raises(DatasetError, match="one: no photos in its valid split"):
        label_all(predictor, [tmp_path / "one"], tmp_path / "o", split="valid")
    with pytest.raises(DatasetError, match="missing: no such folder"):
        label_all(predictor, [folder, tmp_path / "missing"], tmp_path / "o")
    assert not (tmp_path / "o").exists()  # every folder is checked before anything is written


def test_pseudolabel_command_refuses_an_occupied_out_and_prints_json(tmp_path, capsys, monkeypatch):
    import crackseg.cli as commands
    from crackseg.cli import common

    folder = tmp_path / "crack"
    photo(folder / "a.png", [(10, 5, 40)])
    monkeypatch.setattr(common, "load_model", lambda args: DarkIsCrack(width=4, crop_size=32))
    occupied = tmp_path / "occupied"
    occupied.mkdir()
    (occupied / "x.txt").write_text("x")
    assert commands.main(["pseudolabel", str(folder), "--out", str(occupied), "--split", "all"]) == 2
    assert "not an empty folder" in capsys.readouterr().err
    assert commands.main(["pseudolabel", str(folder), "--out", str(tmp_path / "pseudo"), "--split", "all",
                          "--precision", "fp32"]) == 0
    (printed,) = json.loads(capsys.readouterr().out)
    assert (printed["photos"], printed["labelled"]) == (1, 1)
    assert (tmp_path / "pseudo" / "train" / "masks" / "crack_a.png").is_file()


def test_names_that_repeat_across_sources_or_differ_in_case_get_suffixes(tmp_path, predictor):
    from crackseg.pipelines.pseudolabels import label_all

    for name in ("crack/x_1.png", "crack_x/1.png", "crack_x/A.png", "crack_x/a.jpg", "walls/crack/q.png"):
        photo(tmp_path / name, [(10, 5, 50)])
    photo(tmp_path / "more" / "crack" / "q.png", [(20, 5, 50)])  # a second source folder named crack
    sources = [tmp_path / "crack", tmp_path / "crack_x", tmp_path / "walls" / "crack", tmp_path / "more" / "crack"]
    results = label_all(predictor, sources, tmp_path / "pseudo", split="all")
    assert sum(result["labelled"] for result in results) == 6
    written = sorted(path.name for path in (tmp_path / "pseudo").glob("*/images/*.png"))
    assert len(written) == 6 and len({name.casefold() for name in written}) == 6  # nothing overwritten
    assert {"crack_x_1.png", "crack_x_1-2.png", "crack_q.png", "crack_q-2.png"} <= set(written)
    rows = {mask.name: int(np.argmax(np.asarray(Image.open(mask)).any(1)))  # the first row of crack
            for mask in (tmp_path / "pseudo").glob("*/masks/crack_q*.png")}
    assert rows == {"crack_q.png": 10, "crack_q-2.png": 20}  # each photo with its own mask
    scan_all(predictor, sources, split="all", out=tmp_path / "mined")  # mining: the same rule
    assert len(list((tmp_path / "mined").glob("*/images/*.png"))) == 6


def test_unreadable_photos_are_skipped_and_counted_and_a_failed_run_leaves_no_out(tmp_path, predictor, capsys):
    from crackseg.pipelines.pseudolabels import label_all

    folder = tmp_path / "crack"
    for index in range(3):
        photo(folder / f"c{index}.png", [(10, 5, 50)])
    (folder / "c1.png").write_bytes(b"not a png")
    out = tmp_path / "pseudo"
    (result,) = label_all(predictor, [folder], out, split="all")
    assert (result["photos"], result["labelled"], result["unreadable"], result["left_out"]) == (3, 2, 1, 0)
    note = capsys.readouterr().err  # named on stderr, without a progress bar too
    assert "skipped: " in note and "c1.png" in note
    assert sorted(path.name for path in out.glob("*/images/*.png")) == ["crack_c0.png", "crack_c2.png"]

    class Fails(Predictor):  # e.g. a full disk or a kill in the middle of a run
        def tiled(self, images):
            for count, result in enumerate(super().tiled(images)):
                if count == 1:
                    raise OSError("disk full")
                yield result

    failing = Fails(DarkIsCrack(width=4, crop_size=32), fast=False, batch_size=1, mask_threshold=0.5, min_length=10)
    for index in range(3):
        photo(tmp_path / "walls" / f"w{index}.png", [(10, 5, 50)])
    for run in (lambda out: label_all(failing, [folder], out, split="all"),
                lambda out: scan_all(failing, [tmp_path / "walls"], split="all", out=out)):
        with pytest.raises(OSError, match="disk full"):
            run(tmp_path / "failed")
        assert list(tmp_path.glob("*failed*")) == []  # neither OUT nor its staging folder
    (tmp_path / "empty").mkdir()
    (result,) = scan_all(predictor, [tmp_path / "walls"], split="all", out=tmp_path / "empty")  # empty: allowed
    assert result["mined"] == 3 and len(list((tmp_path / "empty").glob("*/images/*.png"))) == 3


def test_pseudolabel_command_fails_when_nothing_is_labelled(tmp_path, capsys, monkeypatch):
    import crackseg.cli as commands
    from crackseg.cli import common

    folder = tmp_path / "crack"
    photo(folder / "a.png")  # no dark line: not called cracked
    monkeypatch.setattr(common, "load_model", lambda args: DarkIsCrack(width=4, crop_size=32))
    assert commands.main(["pseudolabel", str(folder), "--out", str(tmp_path / "pseudo"), "--split", "all",
                          "--precision", "fp32"]) == 2
    assert "no photo was called cracked" in capsys.readouterr().err
    assert not (tmp_path / "pseudo").exists()
