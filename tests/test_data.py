import numpy as np
import pytest
import torch
from PIL import Image

from crackseg.data.datasets import CracksDataset, collate_crops, crack_labels
from crackseg.data.synthetic import ensure_dataset, generate
from crackseg.data.transforms import train_transform, valid_transform
from crackseg.errors import DatasetError
from crackseg.files.images import load_image, load_mask, pair_files


def test_crack_label_boundary_at_a_tenth_of_a_percent():
    masks = torch.zeros(3, 1, 100, 100)  # 10,000 px: 0.1% is exactly 10 px
    masks[0].view(-1)[:9] = 1
    masks[1].view(-1)[:10] = 1
    masks[2].view(-1)[:500] = 1
    zeroed, labels = crack_labels(masks)
    assert labels.tolist() == [[0.0], [1.0], [1.0]]
    assert zeroed[0].sum() == 0  # stray pixels of a label-0 crop are dropped
    assert zeroed[1].sum() == 10 and zeroed[2].sum() == 500


def write(path, size=(64, 64), value=0, mode="L"):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, size, value).save(path)


def test_pairs_by_stem_with_mixed_extensions(tmp_path):
    for name in ["a.jpg", "b.png", "c.JPEG"]:
        write(tmp_path / "images" / name, mode="RGB")
    for name in ["a.png", "b.bmp", "c.tif"]:
        write(tmp_path / "masks" / name)
    (tmp_path / "images" / "notes.txt").write_text("not an image")
    pairs = pair_files(tmp_path / "images", tmp_path / "masks")
    assert [(i.name, m.name) for i, m in pairs] == [("a.jpg", "a.png"), ("b.png", "b.bmp"), ("c.JPEG", "c.tif")]


def test_unpaired_files_fail_naming_each_file(tmp_path):
    for name in ["a.jpg", "b.jpg", "c.jpg"]:
        write(tmp_path / "images" / name, mode="RGB")
    for name in ["a.png", "c.png", "z.png"]:
        write(tmp_path / "masks" / name)
    with pytest.raises(DatasetError) as error:
        pair_files(tmp_path / "images", tmp_path / "masks")
    message = str(error.value)
    assert "2 unpaired" in message
    assert str(tmp_path / "images" / "b.jpg") in message and "no mask" in message
    assert str(tmp_path / "masks" / "z.png") in message and "no image" in message


def test_missing_folder_and_size_mismatch_are_clear(tmp_path):
    with pytest.raises(DatasetError, match="folder not found"):
        CracksDataset(tmp_path, "train", valid_transform(32))
    write(tmp_path / "train" / "images" / "a.jpg", size=(64, 64), mode="RGB")
    write(tmp_path / "train" / "masks" / "a.png", size=(64, 48))
    dataset = CracksDataset(tmp_path, "train", valid_transform(32))
    with pytest.raises(DatasetError, match="a.jpg: image is 64x64 px but its mask a.png is 64x48 px"):
        dataset[0]


def test_dataset_items_and_collate(tmp_path):
    (tmp_path / "valid" / "masks").mkdir(parents=True)
    for index in range(3):
        write(tmp_path / "valid" / "images" / f"{index}.jpg", mode="RGB", value=(100, 100, 100))
        mask = np.zeros((64, 64), np.uint8)
        mask[: 10 * index, 5] = 255  # a vertical line in the top-left crop, none for image 0
        Image.fromarray(mask).save(tmp_path / "valid" / "masks" / f"{index}.png")
    dataset = CracksDataset(tmp_path, "valid", valid_transform(32))
    images, masks, labels, groups = dataset[2]
    assert images.shape == (5, 3, 32, 32) and masks.shape == (5, 1, 32, 32) and labels.shape == (5, 1)
    assert labels[:, 0].tolist() == [1.0, 0.0, 0.0, 0.0, 0.0]  # only the top-left corner crop holds the line
    assert masks[0].sum() == 20 and groups.tolist() == [0] * 5
    batch = collate_crops([dataset[i] for i in range(3)])
    assert batch["images"].shape == (15, 3, 32, 32)
    assert batch["masks"].shape == (15, 1, 32, 32) and batch["labels"].shape == (15, 1)
    assert batch["labels"][:, 0].tolist() == [0.0] * 5 + [1.0] + [0.0] * 4 + [1.0] + [0.0] * 4


def test_synthetic_dataset_trains_through_the_dataset(tiny_dataset):
    dataset = CracksDataset(tiny_dataset, "train", train_transform(32))
    assert len(dataset) == 6
    images, masks, labels, _ = dataset[0]
    assert images.shape == (5, 3, 32, 32) and set(masks.unique().tolist()) <= {0.0, 1.0}


def test_synthetic_default_is_deterministic_and_never_written_into_user_data(tmp_path):
    first = generate(tmp_path / "a", seed=5, image_size=64, counts={"train": 3, "valid": 1})
    second = generate(tmp_path / "b", seed=5, image_size=64, counts={"train": 3, "valid": 1})
    for path in sorted((first / "train" / "images").iterdir()):
        assert path.read_bytes() == (second / "train" / "images" / path.name).read_bytes()
    masks = [np.asarray(Image.open(p)) for p in sorted((first / "train" / "masks").iterdir())]
    assert all(set(np.unique(m)) <= {0, 255} for m in masks)

    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / ".gitkeep").touch()
    assert ensure_dataset(empty, seed=5, image_size=64, counts={"train": 2, "valid": 1})
    assert len(list((empty / "valid" / "images").iterdir())) == 1
    assert not ensure_dataset(empty, seed=5, image_size=64, counts={"train": 2, "valid": 1})  # has images now

    wrong_layout = tmp_path / "mine"
    write(wrong_layout / "images" / "a.jpg", mode="RGB")
    with pytest.raises(DatasetError, match="expected train/images"):
        ensure_dataset(wrong_layout, seed=5, image_size=64, counts={"train": 2, "valid": 1})
    assert not (wrong_layout / "train").exists()


def _mask_pattern():
    crack = np.zeros((8, 12), dtype=bool)
    crack[2:5, 3:9] = True
    return crack


@pytest.mark.parametrize("encoding", ["0/255", "0/1", "1-bit", "palette", "rgb-red", "16-bit"])
def test_mask_encodings_all_read_as_the_same_binary_mask(tmp_path, encoding):
    crack = _mask_pattern()
    if encoding == "0/255":
        image = Image.fromarray(crack.astype(np.uint8) * 255)
    elif encoding == "0/1":
        image = Image.fromarray(crack.astype(np.uint8))
    elif encoding == "1-bit":
        image = Image.fromarray(crack.astype(np.uint8) * 255).convert("1")
    elif encoding == "palette":
        image = Image.fromarray(crack.astype(np.uint8), mode="L").convert("P")
        image.putpalette([0, 0, 0, 200, 0, 0] + [0] * 762)  # index 1 is dark red: luminance < 127
    elif encoding == "rgb-red":
        rgb = np.zeros((8, 12, 3), dtype=np.uint8)
        rgb[crack] = (255, 0, 0)
        image = Image.fromarray(rgb)
    else:
        image = Image.fromarray(crack.astype(np.uint16) * 65535)
    image.save(tmp_path / "mask.png")
    mask = load_mask(tmp_path / "mask.png")
    assert mask.shape == (1, 8, 12) and mask.dtype == torch.uint8
    assert torch.equal(mask[0].bool(), torch.from_numpy(crack))


@pytest.mark.parametrize("mode", ["L", "RGBA", "P", "I;16"])
def test_images_of_any_mode_become_rgb_uint8(tmp_path, mode):
    grey = np.arange(96, dtype=np.uint8).reshape(8, 12) * 2
    if mode == "I;16":
        image = Image.fromarray(grey.astype(np.uint16) * 257)  # 16-bit full scale
    else:
        image = Image.fromarray(grey).convert(mode)
    image.save(tmp_path / "image.png")
    loaded = load_image(tmp_path / "image.png")
    assert loaded.shape == (3, 8, 12) and loaded.dtype == torch.uint8
    assert torch.equal(loaded[0], torch.from_numpy(grey)) and torch.equal(loaded[0], loaded[2])


def test_corrupt_and_truncated_images_name_the_file(tmp_path):
    (tmp_path / "junk.jpg").write_bytes(b"this is not a jpeg")
    Image.new("RGB", (64, 64), (9, 9, 9)).save(tmp_path / "whole.jpg")
    (tmp_path / "cut.jpg").write_bytes((tmp_path / "whole.jpg").read_bytes()[:200])
    for name in ("junk.jpg", "cut.jpg"):
        with pytest.raises(DatasetError, match=name):
            load_image(tmp_path / name)
