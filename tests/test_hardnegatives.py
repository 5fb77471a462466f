"""The synthetic hard-negative generator and `crackseg synthesize`."""
import numpy as np
import pytest
from PIL import Image

from crackseg.cli import main
from crackseg.data import hardnegatives, scenes
from crackseg.files.images import load_mask, pair_files


def _pair(index, size=96):
    return hardnegatives.make_pair(np.random.default_rng([5, 0, index]), size)


def test_every_scene_draws_a_textured_photo_with_structure():
    for name, scene in scenes.SCENES.items():
        for seed in range(3):
            image, surface = scene(np.random.default_rng([seed]), 80)
            assert image.shape[:2] == (80, 80) and surface.shape == (80, 80), name
            assert np.isfinite(image).all(), name
            grey = image if image.ndim == 2 else image.mean(-1)
            # not a flat field: joints, edges and texture give the photo real contrast
            assert np.percentile(grey, 95) - np.percentile(grey, 5) > 0.03, (name, seed)


def test_pairs_are_deterministic_and_binary():
    first, again = _pair(3), _pair(3)
    assert np.array_equal(np.asarray(first[0]), np.asarray(again[0]))
    assert np.array_equal(np.asarray(first[1]), np.asarray(again[1]))
    assert not np.array_equal(np.asarray(_pair(4)[0]), np.asarray(first[0]))
    for index in range(12):
        image, mask = _pair(index)
        assert image.mode == "RGB" and mask.mode == "L" and image.size == mask.size == (96, 96)
        assert set(np.unique(np.asarray(mask))) <= {0, 255}


def test_most_photos_are_crack_free_and_the_rest_carry_a_labelled_crack():
    masks = [np.asarray(_pair(index)[1]) > 0 for index in range(60)]
    cracked = [mask.any() for mask in masks]
    # CRACK_SHARE of the photos get a crack drawn across the scene; the others are labelled crack-free
    assert 0.1 < np.mean(cracked) < 0.5
    assert all(mask.sum() > 20 for mask, has in zip(masks, cracked) if has)


@pytest.mark.parametrize("scene", ["brick_wall", "concrete_joints"])
def test_each_scene_carries_a_labelled_crack_at_its_own_share(monkeypatch, scene):
    # walls get a crack more often than other scenes, so that masonry is not learnt as "never cracked"
    monkeypatch.setattr(hardnegatives, "WEIGHTS", {name: float(name == scene) for name in hardnegatives.WEIGHTS})
    cracked = [np.asarray(_pair(index, 64)[1]).any() for index in range(120)]
    assert abs(np.mean(cracked) - hardnegatives.CRACK_SHARE[scene]) < 0.12
    assert set(hardnegatives.CRACK_SHARE) == set(hardnegatives.WEIGHTS) == set(scenes.SCENES)
    assert hardnegatives.CRACK_SHARE["brick_wall"] > hardnegatives.CRACK_SHARE["concrete_joints"]


def test_a_drawn_crack_darkens_the_photo_where_it_is_labelled():
    for index in range(60):
        image, mask = _pair(index)
        crack = np.asarray(mask) > 0
        if crack.sum() > 50:
            grey = np.asarray(image.convert("L"), np.float32)
            assert grey[crack].mean() < grey[~crack].mean() - 10
            return
    pytest.fail("no cracked photo among 60")


def test_synthesize_writes_a_data_root_and_never_into_a_full_folder(tmp_path, capsys):
    out = tmp_path / "negatives"
    assert main(["synthesize", str(out), "--kind", "hard-negatives", "--train", "4", "--valid", "2",
                 "--size", "64", "--seed", "5"]) == 0
    pairs = pair_files(out / "train" / "images", out / "train" / "masks")
    assert [image.name for image, _ in pairs] == [f"hardneg_{index:05d}.jpg" for index in range(4)]
    assert len(pair_files(out / "valid" / "images", out / "valid" / "masks")) == 2
    mask = load_mask(pairs[0][1])
    expected = hardnegatives.make_pair(np.random.default_rng([5, 0, 0]), 64)[1]
    assert np.array_equal(mask[0].numpy() > 0, np.asarray(expected) > 0)
    assert Image.open(pairs[0][0]).size == (64, 64)
    assert main(["synthesize", str(out), "--kind", "cracks"]) == 2
    assert "not an empty folder" in capsys.readouterr().err


def test_the_specificity_video_has_a_crack_in_frames_10_to_19_only(tmp_path):
    from crackseg.pipelines.video import read_frames

    assert main(["synthesize", str(tmp_path / "v"), "--kind", "video"]) == 0
    frames = list(read_frames(tmp_path / "v" / "specificity.mp4"))
    assert len(frames) == 40 and frames[0].image.shape == (3, 240, 320)
    on_line = [float(frame.image[:, 90, 120].float().mean()) for frame in frames]  # (120, 90) is on the polyline
    assert all(value < 110 for value in on_line[10:20])
    assert all(value > 120 for index, value in enumerate(on_line) if index not in range(10, 20))


def test_flemish_bond_alternates_stretchers_and_headers_centred_over_each_other():
    v, u = np.mgrid[0:62, 0:400].astype(np.float32)
    units = scenes._flemish(u, v, np.floor(v / 31), 80.0, 26.0, 5.0)

    def bricks(line):  # (length, centre) of each whole brick along one row of pixels
        edges = np.flatnonzero(np.diff(np.r_[0, (~line).astype(int), 0]))
        return [(stop - start, (start + stop) / 2) for start, stop in zip(edges[::2], edges[1::2])
                if stop - start > 30]  # bricks cut by the photo's sides left out

    first, second = bricks(units["mortar"][10]), bricks(units["mortar"][40])
    lengths = [length for length, _ in first]
    assert all(abs(a - b) > 30 for a, b in zip(lengths, lengths[1:]))  # long and short alternate
    assert {round(length / 10) for length in lengths} == {4, 8}  # stretchers of 80 px, headers of 37-38
    stretchers = [centre for length, centre in first if length > 60]
    headers = [centre for length, centre in second if length < 60]
    assert headers and all(min(abs(h - s) for s in stretchers) <= 1 for h in headers)


def test_stone_masonry_spreads_its_stones_over_the_whole_photo():
    image, _ = scenes.stone_masonry(np.random.default_rng(5), 240)
    grey = image.mean(-1)
    thirds = [grey[i * 80:(i + 1) * 80] for i in range(3)]
    # every third holds mortar lines: stones were squeezed into the top before (seeds scaled, not the pixels)
    assert all(np.std(third) > 0.03 for third in thirds)
