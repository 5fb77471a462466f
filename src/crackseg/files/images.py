"""Reading images and masks: listing and pairing files, decoding any image mode, EXIF, size limits."""
import logging
import math
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import numpy as np
import torch
from PIL import Image, ImageOps

from crackseg.errors import DatasetError

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
VIDEO_EXTENSIONS = (".mp4", ".avi", ".mov", ".mkv", ".m4v", ".webm", ".mpg", ".mpeg")


def extension(path: Path) -> str:
    """A file's extension in lower case, by which crackseg decides what it is; a file named only '.png' is a
    PNG."""
    return (path.suffix or path.name).lower()


def image_files(folder: Path) -> List[Path]:
    """The image files directly in a folder (`IMAGE_EXTENSIONS`, any case), in name order. The one rule for every
    folder crackseg lists: hidden files count like any other, subfolders do not, and a link counts as what it
    points to (a link to nothing is listed, so that reading it fails with its name)."""
    return sorted(path for path in Path(folder).iterdir() if extension(path) in IMAGE_EXTENSIONS and not path.is_dir())


def list_images(folder: Path) -> Dict[str, Path]:
    """Map file stem -> path for the image files of a folder; two files with one stem are an error."""
    if not folder.is_dir():
        raise DatasetError(f"{folder}: folder not found")
    files: Dict[str, Path] = {}
    for path in image_files(folder):
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
            if not all(math.isfinite(found.get(key, 0.0)) for key in ("gps_lat", "gps_lon")):
                for key in ("gps_lat", "gps_lon"):  # 0/0 rationals: a camera without a fix
                    found.pop(key, None)
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
