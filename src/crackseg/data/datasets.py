"""The crack dataset: data sources, crops with crack labels, and the crop-concatenating collate."""
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import torch
from torch.utils.data import Dataset

from crackseg.data.transforms import Pair
from crackseg.errors import DatasetError
from crackseg.files.images import IMAGE_EXTENSIONS, list_images, load_image, load_mask, orientation_mismatch, pair_files

MIN_CRACK_FRACTION = 0.001  # a crop is "cracked" when crack pixels cover at least 0.1% of it


def read_pair(image_path: Path, mask_path: Optional[Path]) -> Pair:
    """Decode an image (3, H, W) uint8 RGB and its mask (1, H, W) uint8 0/1; their sizes must agree. A mask path
    of None is a crack-free photo: its mask is all zeros."""
    image = load_image(image_path)
    if mask_path is None:
        return image, torch.zeros(1, *image.shape[1:], dtype=torch.uint8)
    mask = load_mask(mask_path)
    if image.shape[1:] != mask.shape[1:]:
        exif = orientation_mismatch(Path(image_path), Path(mask_path))
        raise DatasetError(f"{image_path}: image is {image.shape[2]}x{image.shape[1]} px but its mask "
                           f"{Path(mask_path).name} is {mask.shape[2]}x{mask.shape[1]} px"
                           + (f" ({exif})" if exif else ""))
    return image, mask


def crack_labels(masks: torch.Tensor, min_fraction: float = MIN_CRACK_FRACTION) -> Pair:
    """Label crops (K, 1, s, s) as cracked when crack pixels >= min_fraction; zero the masks of label-0 crops.

    Returns (masks (K, 1, s, s), labels (K, 1)) as floats.
    """
    pixels = masks.flatten(1)
    fractions = pixels.sum(dim=1, keepdim=True, dtype=torch.float64) / pixels.shape[1]
    labels = (fractions >= min_fraction).float()
    return masks * labels[:, :, None, None], labels


NEGATIVE_VALID_EVERY = 5  # of a folder of crack-free photos, every 5th file in name order is for validation


def split_negatives(folder: Path) -> Dict[str, List[Path]]:
    """The photos of a folder of crack-free photos, split by name order: every 5th one (the 5th, 10th, ...) is
    for validation, the others for training."""
    files = list(list_images(Path(folder)).values())
    if not files:
        raise DatasetError(f"{folder}: no images ({', '.join(IMAGE_EXTENSIONS)})")
    return {"train": [f for i, f in enumerate(files) if i % NEGATIVE_VALID_EVERY != NEGATIVE_VALID_EVERY - 1],
            "valid": [f for i, f in enumerate(files) if i % NEGATIVE_VALID_EVERY == NEGATIVE_VALID_EVERY - 1]}



def photos_of_split(folder: Path, split: str) -> List[Path]:
    """The photos of a folder of photos without masks in one split (train, valid as `split_negatives`, or all);
    an error names the folder when there are none."""
    if not Path(folder).is_dir():
        raise DatasetError(f"{folder}: no such folder")
    photos = list(list_images(Path(folder)).values()) if split == "all" else split_negatives(folder).get(split)
    if photos is None:
        raise DatasetError(f"{folder}: a folder of photos has the splits train, valid and all, not {split}")
    if not photos:
        raise DatasetError(f"{folder}: no photos in its {split} split (every 5th file is valid: --split all takes "
                           "them all)")
    return photos

Sample = Tuple[Path, Optional[Path]]  # an image and its mask; None for a crack-free photo


@dataclass
class Source:
    """One source of training data: a data root, or a folder of crack-free photos; its pairs per split and how
    often each of its training images is used an epoch."""

    name: str
    pairs: Dict[str, List[Sample]] = field(default_factory=dict)
    weight: int = 1


def source_names(paths: Sequence[str]) -> List[str]:
    """A short unique name per source folder: its own name, or its last two parts where names repeat."""
    names = [Path(path).name or str(path) for path in paths]
    return [f"{Path(path).parent.name}_{name}" if names.count(name) > 1 else name
            for path, name in zip(paths, names)]


def find_sources(roots: Sequence[str], weights: Sequence[int] = (), negatives: Sequence[str] = ()) -> List[Source]:
    """The sources of data roots and negative folders, listed (not checked file by file: see `checks`)."""
    names = source_names(list(roots) + list(negatives))
    weights = list(weights) or [1] * len(roots)
    sources = [Source(name, {split: pair_files(Path(root) / split / "images", Path(root) / split / "masks")
                             for split in ("train", "valid")}, weight)
               for name, root, weight in zip(names, roots, weights)]
    for name, folder in zip(names[len(roots):], negatives):
        sources.append(Source(name, {split: [(path, None) for path in paths]
                                     for split, paths in split_negatives(Path(folder)).items()}))
    return sources


def source_samples(sources: Sequence[Source], split: str) -> Tuple[List[Sample], List[int]]:
    """The samples of a split over all sources (training ones repeated by their source's weight), and the
    index of each one's source."""
    samples: List[Sample] = []
    groups: List[int] = []
    for index, source in enumerate(sources):
        repeats = source.weight if split == "train" else 1
        pairs = source.pairs.get(split, []) * repeats
        samples += pairs
        groups += [index] * len(pairs)
    return samples, groups


class CracksDataset(Dataset):
    """Image/mask pairs under ROOT/SPLIT/{images,masks} (or the `pairs` given); an item is the crops of one image.

    An item is (images (K, 3, s, s), masks (K, 1, s, s), labels (K, 1), groups (K,)) with K = 5 for FiveCrop;
    `groups` says which data source (`groups[i]` of the pairs, default 0) the crops came from. A pair whose mask
    is None is a crack-free photo. Decoded images are kept in memory when `cache` is set, so each file is
    decoded once per process (also when a pair is listed several times, to weigh its source).
    """

    def __init__(self, root: Optional[Path], split: str, transform: Callable[[torch.Tensor, torch.Tensor], Pair],
                 cache: bool = True, min_crack_fraction: float = MIN_CRACK_FRACTION,
                 pairs: Optional[List[Sample]] = None, groups: Optional[List[int]] = None):
        if pairs is None:
            split_dir = Path(root) / split
            pairs = pair_files(split_dir / "images", split_dir / "masks")
        self.pairs: List[Sample] = pairs
        self.groups = groups if groups is not None else [0] * len(pairs)
        self.transform = transform
        self.min_crack_fraction = min_crack_fraction
        self._cache: Optional[Dict[Sample, Pair]] = {} if cache else None

    def __len__(self) -> int:
        return len(self.pairs)

    def _decoded(self, index: int) -> Pair:
        pair = self.pairs[index]
        if self._cache is None:
            return read_pair(*pair)
        if pair not in self._cache:
            self._cache[pair] = read_pair(*pair)
        return self._cache[pair]

    def __getitem__(self, index: int) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        image, mask = self._decoded(index)
        try:
            images, masks = self.transform(image, mask)
        except ValueError as error:
            raise DatasetError(f"{self.pairs[index][0]}: {error}") from None
        masks, labels = crack_labels(masks, self.min_crack_fraction)
        return images, masks, labels, torch.full((len(images),), self.groups[index], dtype=torch.long)


def collate_crops(items: Sequence[Tuple[torch.Tensor, ...]]) -> Dict[str, torch.Tensor]:
    """Concatenate the crops of B images: images (5B, 3, s, s), masks (5B, 1, s, s), labels (5B, 1) and the
    data source of each crop, groups (5B,)."""
    images, masks, labels, groups = zip(*items)
    return {"images": torch.cat(images), "masks": torch.cat(masks), "labels": torch.cat(labels),
            "groups": torch.cat(groups)}
