"""The crack dataset: image/mask pairs by file name, crops with crack labels, and the crop-concatenating collate."""
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from crackseg.transforms import Pair

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff")
MIN_CRACK_FRACTION = 0.001  # a crop is "cracked" when crack pixels cover at least 0.1% of it


class DatasetError(ValueError):
    """The data on disk is not in the expected layout or cannot be paired."""


def list_images(folder: Path) -> Dict[str, Path]:
    """Map file stem -> path for the image files of a folder; two files with one stem are an error."""
    if not folder.is_dir():
        raise DatasetError(f"{folder}: folder not found")
    files: Dict[str, Path] = {}
    for path in sorted(folder.iterdir()):
        if path.suffix.lower() not in IMAGE_EXTENSIONS:
            continue
        if path.stem in files:
            raise DatasetError(
                f"{folder}: two files share the name {path.stem!r}: {files[path.stem].name}, {path.name}")
        files[path.stem] = path
    return files


def pair_files(images_dir: Path, masks_dir: Path) -> List[Tuple[Path, Path]]:
    """Pair images and masks by file stem (extensions may differ); fail naming every unpaired file."""
    images, masks = list_images(Path(images_dir)), list_images(Path(masks_dir))
    problems = [f"  {images[s]}: no mask with this name in {masks_dir}" for s in sorted(images.keys() - masks.keys())]
    problems += [f"  {masks[s]}: no image with this name in {images_dir}" for s in sorted(masks.keys() - images.keys())]
    if problems:
        raise DatasetError(f"{len(problems)} unpaired file(s):\n" + "\n".join(problems))
    if not images:
        raise DatasetError(f"{images_dir}: no images ({', '.join(IMAGE_EXTENSIONS)})")
    return [(images[stem], masks[stem]) for stem in sorted(images)]


def open_image(path: Path) -> Image.Image:
    """Open and fully decode an image file, turning PIL's many failure types into one clear DatasetError."""
    try:
        with Image.open(path) as image:
            image.load()
            return image
    except (OSError, SyntaxError, ValueError) as error:  # PIL: unidentified, truncated or corrupt files
        raise DatasetError(f"{path}: cannot read image ({error})") from None


def _high_bit_depth(image: Image.Image) -> Optional[np.ndarray]:
    """A 16-bit or 32-bit single-channel image scaled to uint8 (H, W), or None for 8-bit modes."""
    if image.mode not in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        return None
    values = np.asarray(image, dtype=np.float64)
    full_scale = 65535.0 if image.mode.startswith("I;16") or values.max() > 255 else 255.0
    return np.clip(values * (255.0 / full_scale), 0, 255).round().astype(np.uint8)


def load_image(path: Path) -> torch.Tensor:
    """Decode an image file as RGB uint8 (3, H, W): grey, palette, RGBA (alpha dropped) and 16-bit are converted."""
    image = open_image(Path(path))
    grey = _high_bit_depth(image)
    rgb = np.repeat(grey[:, :, None], 3, axis=2) if grey is not None else np.asarray(image.convert("RGB"))
    return torch.from_numpy(np.array(rgb, dtype=np.uint8)).permute(2, 0, 1)


def mask_values(image: Image.Image) -> Tuple[np.ndarray, int]:
    """A decoded mask's values (H, W) uint8 and the cut above which a value is crack.

    Palette masks give their indices (index > 0 is crack); 16-bit masks are scaled to 8 bits; RGB masks give
    the largest channel. Masks whose largest value is 1 are 0/1 masks (cut 0); all others are cut at 127 (50%).
    """
    values = _high_bit_depth(image)
    if values is None:
        if image.mode == "P":
            values = np.asarray(image)
        elif image.mode in ("L", "1", "LA"):
            values = np.asarray(image.convert("L"))
        else:
            values = np.asarray(image.convert("RGB")).max(axis=2)
    return values, 0 if values.max(initial=0) <= 1 or image.mode == "P" else 127


def load_mask(path: Path) -> torch.Tensor:
    """Decode a mask file as uint8 0/1 (1, H, W): 0/255 or 0/1 grey, 1-bit, 16-bit, palette or RGB (see
    `mask_values`)."""
    values, cut = mask_values(open_image(Path(path)))
    return torch.from_numpy((values > cut).astype(np.uint8))[None]


def read_pair(image_path: Path, mask_path: Path) -> Pair:
    """Decode an image (3, H, W) uint8 RGB and its mask (1, H, W) uint8 0/1; their sizes must agree."""
    image, mask = load_image(image_path), load_mask(mask_path)
    if image.shape[1:] != mask.shape[1:]:
        raise DatasetError(f"{image_path}: image is {image.shape[2]}x{image.shape[1]} px but its mask "
                           f"{Path(mask_path).name} is {mask.shape[2]}x{mask.shape[1]} px")
    return image, mask


def crack_labels(masks: torch.Tensor, min_fraction: float = MIN_CRACK_FRACTION) -> Pair:
    """Label crops (K, 1, s, s) as cracked when crack pixels >= min_fraction; zero the masks of label-0 crops.

    Returns (masks (K, 1, s, s), labels (K, 1)) as floats.
    """
    pixels = masks.flatten(1)
    fractions = pixels.sum(dim=1, keepdim=True, dtype=torch.float64) / pixels.shape[1]
    labels = (fractions >= min_fraction).float()
    return masks * labels[:, :, None, None], labels


class CracksDataset(Dataset):
    """Image/mask pairs under ROOT/SPLIT/{images,masks} (or the `pairs` given); an item is the crops of one image.

    An item is (images (K, 3, s, s), masks (K, 1, s, s), labels (K, 1)) with K = 5 for FiveCrop.
    Decoded images are kept in memory when `cache` is set, so each file is decoded once per process.
    """

    def __init__(self, root: Path, split: str, transform: Callable[[torch.Tensor, torch.Tensor], Pair],
                 cache: bool = True, min_crack_fraction: float = MIN_CRACK_FRACTION,
                 pairs: Optional[List[Tuple[Path, Path]]] = None):
        split_dir = Path(root) / split
        self.pairs = pairs if pairs is not None else pair_files(split_dir / "images", split_dir / "masks")
        self.transform = transform
        self.min_crack_fraction = min_crack_fraction
        self._cache: Optional[Dict[int, Pair]] = {} if cache else None

    def __len__(self) -> int:
        return len(self.pairs)

    def _decoded(self, index: int) -> Pair:
        if self._cache is None:
            return read_pair(*self.pairs[index])
        if index not in self._cache:
            self._cache[index] = read_pair(*self.pairs[index])
        return self._cache[index]

    def __getitem__(self, index: int) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        image, mask = self._decoded(index)
        try:
            images, masks = self.transform(image, mask)
        except ValueError as error:
            raise DatasetError(f"{self.pairs[index][0]}: {error}") from None
        masks, labels = crack_labels(masks, self.min_crack_fraction)
        return images, masks, labels


def collate_crops(items: Sequence[Tuple[torch.Tensor, torch.Tensor, torch.Tensor]]) -> Dict[str, torch.Tensor]:
    """Concatenate the crops of B images: images (5B, 3, s, s), masks (5B, 1, s, s), labels (5B, 1)."""
    images, masks, labels = zip(*items)
    return {"images": torch.cat(images), "masks": torch.cat(masks), "labels": torch.cat(labels)}
