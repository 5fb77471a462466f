"""The crack dataset: image/mask pairs by file name, crops with crack labels, and the crop-concatenating collate."""
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from PIL import Image, ImageOps
from torch.utils.data import Dataset

from crackseg.transforms import Pair

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
VIDEO_EXTENSIONS = (".mp4", ".avi", ".mov", ".mkv", ".m4v", ".webm", ".mpg", ".mpeg")
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


# Pillow refuses images above ~179 MP as possible decompression bombs; crackseg applies the same limit itself, per
# call, so `predict --max-pixels` can raise it for one run without touching Pillow's global for anyone else.
DEFAULT_MAX_PIXELS = 2 * 89_478_485
Image.MAX_IMAGE_PIXELS = None  # our own check below replaces Pillow's (which reads a process-wide global)


UNREAD = "crackseg_unread"  # key of an opened image's info: what of a multi-page or animated file is not read


def open_image(path: Path, max_pixels: Optional[int] = DEFAULT_MAX_PIXELS) -> Image.Image:
    """Open and fully decode an image file, upright (its EXIF orientation applied), turning PIL's many failure
    types into one clear DatasetError. Images above `max_pixels` (None: no limit) are refused before decoding.
    Of a multi-page TIFF or an animated GIF, PNG or WebP the first frame is read; info[UNREAD] says so."""
    try:
        with Image.open(path) as image:
            pixels = image.width * image.height
            if max_pixels is not None and pixels > max_pixels:
                raise DatasetError(f"{path}: {image.width}x{image.height} px ({pixels / 1e6:.3g} MP) is above the "
                                   f"limit of {max_pixels / 1e6:.3g} MP (a decompression bomb, or a very large "
                                   "photo: `crackseg predict --max-pixels N` reads it on purpose)")
            image.load()
            upright = ImageOps.exif_transpose(image)
            frames = getattr(image, "n_frames", 1)
            if frames > 1:  # a copy forgets them
                kind = "pages" if image.format == "TIFF" else "frames"
                upright.info[UNREAD] = f"{frames} {kind} ({image.format}): only the first is read"
            return upright
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as error:
        if isinstance(error, DatasetError):
            raise
        raise DatasetError(f"{path}: cannot read image ({error})") from None


EXIF_ORIENTATION = 0x0112  # the tag exif_transpose applies: 1 is stored upright, 5-8 swap width and height


def exif_orientation(path: Path) -> int:
    """The EXIF orientation of an image file (1 when it has none or the file cannot be read)."""
    try:
        with Image.open(path) as image:
            return int(image.getexif().get(EXIF_ORIENTATION, 1))
    except (OSError, SyntaxError, ValueError, TypeError):
        return 1


EXIF_IFD, GPS_IFD, DATE_TIME_ORIGINAL, DATE_TIME = 0x8769, 0x8825, 0x9003, 0x0132


def photo_metadata(path: Path) -> Dict[str, Any]:
    """When and where a photo was taken, from its EXIF: {"captured": "2024-05-01 10:22:13", "gps_lat": 51.5,
    "gps_lon": -0.12} (decimal degrees, south and west negative); only what the file holds, {} for none."""
    try:
        with Image.open(path) as image:
            exif = image.getexif()
            found: Dict[str, Any] = {}
            when = exif.get_ifd(EXIF_IFD).get(DATE_TIME_ORIGINAL) or exif.get(DATE_TIME)
            if when:
                date, _, clock = str(when).strip().partition(" ")
                found["captured"] = f"{date.replace(':', '-')} {clock}".strip()
            gps = exif.get_ifd(GPS_IFD)
            for key, (reference, value, negative) in {"gps_lat": (1, 2, "S"), "gps_lon": (3, 4, "W")}.items():
                if value in gps:
                    degrees, minutes, seconds = (float(part) for part in gps[value])
                    sign = -1 if str(gps.get(reference, "")).upper().startswith(negative) else 1
                    found[key] = round(sign * (degrees + minutes / 60 + seconds / 3600), 7)
            return found
    except (OSError, SyntaxError, ValueError, TypeError, ZeroDivisionError):
        return {}


def orientation_mismatch(image_path: Path, mask_path: Path) -> str:
    """Why an image and its mask may disagree about which way is up: their EXIF orientations, when they differ
    (the image is read upright, its orientation applied; a mask drawn on the stored pixels then lies turned or
    mirrored, and for a square image, or a turn of 180 degrees, no size tells). Empty when they agree."""
    image, mask = exif_orientation(image_path), exif_orientation(mask_path)
    if image == mask:
        return ""
    return (f"EXIF orientation {image} of the image is applied (read upright) and {mask} of its mask: a mask drawn "
            "on the stored pixels is turned or mirrored against the upright photo")


HIGH_BIT_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I", "F")


FULL_SCALES = (255.0, 4095.0, 65535.0)  # white of 8-, 12- and 16-bit data (float data: also 1.0)


def value_range(image: Image.Image) -> Tuple[float, float]:
    """The values of a 16-bit or 32-bit single-channel image that become black and white: 0 (or its lowest value,
    if negative) and the smallest full scale that holds its values (1.0 for floats, 255, 4095 or 65535), else its
    largest value. The file's own depth says little: a float TIFF may hold 0..1, a 16-bit PNG 12-bit data and
    an int32 TIFF anything, and at that depth's full scale they read as black or clip to white."""
    values = np.nan_to_num(np.asarray(image, dtype=np.float64))
    largest = float(values.max(initial=0.0))
    scales = ((1.0,) if image.mode == "F" else ()) + FULL_SCALES
    return min(float(values.min(initial=0.0)), 0.0), next((s for s in scales if largest <= s), largest)


def _high_bit_depth(image: Image.Image) -> Optional[np.ndarray]:
    """A 16-bit or 32-bit single-channel image scaled to uint8 (H, W) by `value_range`, or None for 8-bit modes."""
    if image.mode not in HIGH_BIT_MODES:
        return None
    low, high = value_range(image)
    values = np.nan_to_num(np.asarray(image, dtype=np.float64)) - low
    return np.clip(values * (255.0 / max(high - low, 1e-12)), 0, 255).round().astype(np.uint8)




def _open_noted(path: Path, max_pixels: Optional[int] = DEFAULT_MAX_PIXELS) -> Image.Image:
    """`open_image`, with a note on the console (the "crackseg" logger) when frames of the file are left unread."""
    image = open_image(path, max_pixels)
    if UNREAD in image.info:
        log.info(f"note: {path}: {image.info[UNREAD]}")
    return image


def load_image(path: Path, max_pixels: Optional[int] = DEFAULT_MAX_PIXELS) -> torch.Tensor:
    """Decode an image file as upright RGB uint8 (3, H, W): grey, palette, RGBA (alpha dropped), CMYK, 16-bit and
    32-bit (scaled by `value_range`) are converted; of several pages or frames, the first."""
    image = _open_noted(Path(path), max_pixels)
    grey = _high_bit_depth(image)
    if grey is not None:
        return torch.from_numpy(np.repeat(grey[:, :, None], 3, axis=2)).permute(2, 0, 1)
    rgb = np.array(image if image.mode == "RGB" else image.convert("RGB"), dtype=np.uint8)  # one copy, writable
    del image
    return torch.from_numpy(rgb).permute(2, 0, 1)


LABEL_MAX = 15  # masks whose largest value is at most this are label masks: any value above 0 is crack


def mask_values(image: Image.Image) -> Tuple[np.ndarray, float]:
    """A decoded mask's values (H, W) at their own bit depth and the cut above which a value is crack.

    The encoding is decided from the values present, whatever the bit depth: RGB and palette masks give the
    largest channel of their colours (a palette's own order says nothing: Pillow's `quantize` puts white at
    index 0); masks whose largest value is at most 15 are 0/1 or label masks (cut 0: in a JPEG of a 0/1 mask, or
    a 16-bit PNG of one, any value above 0 is crack); all others are cut at half their largest value (127.5 for
    0/255, 32767.5 for 0/65535, also in a 16-bit file that holds 0/255). Alpha is not read.
    """
    if image.mode in HIGH_BIT_MODES:
        values = np.asarray(image)
    elif image.mode in ("L", "1", "LA"):
        values = np.asarray(image.convert("L"))
    else:
        values = np.asarray(image.convert("RGB")).max(axis=2)
    largest = float(values.max(initial=0))
    return values, 0.0 if largest <= LABEL_MAX else largest / 2


GREY_SHARE_LIMIT = 0.05  # a "mask" with more of its pixels between 10% and 90% grey is not a mask


def photo_problem(values: np.ndarray, cut: float) -> Optional[str]:
    """Why a mask's values (`mask_values`) look like a photo rather than a mask, or None: more than
    GREY_SHARE_LIMIT of its pixels between 10% and 90% of its largest value (a soft mask has a few, at edges)."""
    if not cut:  # 0/1 and label masks
        return None
    largest = float(values.max())
    grey = float(((values > 0.1 * largest) & (values < 0.9 * largest)).mean())
    if grey <= GREY_SHARE_LIMIT:
        return None
    return (f"not a binary mask: {len(np.unique(values))} grey levels, {100 * grey:.0f}% of pixels between 10% and "
            "90% grey (a photo saved as a mask?)")


def load_mask(path: Path, refuse_photos: bool = False) -> torch.Tensor:
    """Decode a mask file as uint8 0/1 (1, H, W), upright: 0/255 or 0/1 grey in any bit depth or JPEG, 1-bit,
    palette, label or RGB masks (see `mask_values`). With `refuse_photos`, a file that looks like a photo
    (`photo_problem`) is a DatasetError rather than a mask of whatever is brighter than mid-grey."""
    values, cut = mask_values(_open_noted(Path(path)))
    problem = photo_problem(values, cut) if refuse_photos else None
    if problem:
        raise DatasetError(f"{path}: {problem}")
    return torch.from_numpy((values > cut).astype(np.uint8))[None]


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
