"""`crackseg check-data`: inspect a data root file by file before any training time is spent on it.

Errors stop training (unless skipped), warnings change what is trained on (a soft mask is binarised), notes
say what is converted on the way (a grey or 16-bit image becomes RGB).
"""
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Sequence, Tuple

import numpy as np

from crackseg.data.datasets import split_negatives
from crackseg.errors import DatasetError
from crackseg.files.images import (
    HIGH_BIT_MODES,
    UNREAD,
    exif_orientation,
    image_files,
    mask_values,
    open_image,
    orientation_mismatch,
    photo_problem,
    value_range,
)
from crackseg.outputs.tables import printable

SPLITS = ("train", "valid")
INVERTED_SHARE = 0.5  # a mask with more crack than background is likely inverted
CONVERTED_MODES = {"L": "grey", "LA": "grey with alpha", "RGBA": "RGBA (alpha dropped)", "P": "palette",
                   "1": "1-bit", "I;16": "16-bit", "I;16B": "16-bit", "I;16L": "16-bit", "I;16N": "16-bit",
                   "I": "32-bit integer",
                   "F": "32-bit float", "CMYK": "CMYK"}


@dataclass
class Finding:
    """One problem (error), doubt (warning) or conversion (note) of one file."""

    level: str  # error, warning or note
    path: Path
    message: str

    def __str__(self) -> str:  # a file name that is not UTF-8 prints escaped, not as a UnicodeEncodeError
        return f"{self.level}: {printable(self.path)}: {self.message}"


@dataclass
class SplitReport:
    """What the check found in one split: its good pairs, its findings, the files it leaves out."""

    split: str
    pairs: List[Tuple[Path, Path]] = field(default_factory=list)  # the good ones
    findings: List[Finding] = field(default_factory=list)
    bad: List[Path] = field(default_factory=list)
    crack_pixels: int = 0  # over the good pairs' masks

    def add(self, level: str, path: Path, message: str) -> None:
        """Record a finding."""
        self.findings.append(Finding(level, path, message))


def _files(folder: Path, report: SplitReport) -> Dict[str, Path]:
    files: Dict[str, Path] = {}
    for path in image_files(folder):
        if path.stem in files:
            report.add("error", path, f"shares its name with {files[path.stem].name}: which one is meant?")
            report.bad.append(path)
            continue
        files[path.stem] = path
    return files


def _check_image(image_path: Path, crop: int, report: SplitReport):
    """The opened image, or None after reporting why it cannot be trained on."""
    try:
        image = open_image(image_path)
    except DatasetError as error:
        report.add("error", image_path, str(error).split(": ", 1)[1])
        return None
    if image.mode in HIGH_BIT_MODES:
        low, high = value_range(image)
        report.add("note", image_path, f"{CONVERTED_MODES[image.mode]} image, read as RGB with {low:g} black and "
                                       f"{high:g} (its largest value) white")
    elif image.mode in CONVERTED_MODES:
        report.add("note", image_path, f"{CONVERTED_MODES[image.mode]} image, read as RGB")
    if UNREAD in image.info:
        report.add("note", image_path, image.info[UNREAD])
    if min(image.size) < crop:
        report.add("error", image_path, f"{image.size[0]}x{image.size[1]} px is smaller than the {crop} px crop")
        return None
    return image


def _swaps(path: Path) -> bool:
    """Whether the file's EXIF orientation turns it by a quarter (5-8: width and height swap when read upright)."""
    return exif_orientation(path) in (5, 6, 7, 8)


def _check_pair(image_path: Path, mask_path: Path, crop: int, report: SplitReport) -> bool:
    image = _check_image(image_path, crop, report)
    if image is None:
        return False
    try:
        mask = open_image(mask_path)
    except DatasetError as error:
        report.add("error", mask_path, str(error).split(": ", 1)[1])
        return False
    good = True
    exif = orientation_mismatch(image_path, mask_path)
    if image.size != mask.size:
        report.add("error", image_path, f"image is {image.size[0]}x{image.size[1]} px but its mask {mask_path.name} "
                                        f"is {mask.size[0]}x{mask.size[1]} px" + (f" ({exif})" if exif else ""))
        good = False
    elif exif and (image.size[0] == image.size[1] or _swaps(image_path) == _swaps(mask_path)):
        # the sizes agree and cannot tell (a square image, a half turn, a mirror): the mask may still be turned.
        # Where exactly one of the two is stored turned by a quarter, agreeing sizes prove it was drawn upright.
        report.add("warning", mask_path, f"{exif}; check that it lies on the upright photo")
    if UNREAD in mask.info:
        report.add("note", mask_path, mask.info[UNREAD])
    values, cut = mask_values(mask)
    crack = values > cut
    if "A" in mask.getbands() and not crack.any():
        alpha = np.asarray(mask.getchannel("A"))
        if alpha.min() != alpha.max():
            report.add("warning", mask_path, f"no crack in its colours, but its alpha channel varies ("
                                             f"{int((alpha != alpha.max()).sum())} px differ): crackseg reads the "
                                             "colours only")
    if values.any() and not crack.any():
        report.add("error", mask_path, f"has non-zero pixels (largest value {values.max()}) but no crack pixel in "
                                       "any encoding crackseg knows")
        good = False
    elif cut:  # 0/largest masks are clean, anything between is soft
        largest = float(values.max())
        soft = (values != 0) & (values != largest)
        if soft.any():
            problem = photo_problem(values, cut)
            if problem:
                report.add("error", mask_path, problem)
                good = False
            else:
                report.add("warning", mask_path, f"soft mask ({len(np.unique(values))} grey levels, "
                                                 f"{100 * soft.mean():.1f}% of pixels neither black nor white): "
                                                 "binarised at 50%")
    if good and crack.mean() > INVERTED_SHARE:
        report.add("warning", mask_path, f"{100 * crack.mean():.0f}% of its pixels are crack: inverted (crack "
                                         "black on white)?")
    if good:
        report.crack_pixels += int(crack.sum())
    return good


def check_split(root: Path, split: str, crop: int) -> SplitReport:
    """Every problem of ROOT/SPLIT/{images,masks}, and the pairs that are fit to train on."""
    report = SplitReport(split)
    folders = {kind: Path(root) / split / kind for kind in ("images", "masks")}
    for folder in folders.values():
        if not folder.is_dir():
            report.add("error", folder, "folder not found")
    if report.findings:
        return report
    images, masks = _files(folders["images"], report), _files(folders["masks"], report)
    for stem in sorted(images.keys() - masks.keys()):
        report.add("error", images[stem], f"no mask with this name in {folders['masks']}")
        report.bad.append(images[stem])
    for stem in sorted(masks.keys() - images.keys()):
        report.add("error", masks[stem], f"no image with this name in {folders['images']}")
        report.bad.append(masks[stem])
    for stem in sorted(images.keys() & masks.keys()):
        if _check_pair(images[stem], masks[stem], crop, report):
            report.pairs.append((images[stem], masks[stem]))
        else:
            report.bad.append(images[stem])
    if not report.pairs:
        report.add("error", Path(root) / split, "no usable image/mask pair in this split")
    elif not report.crack_pixels:
        report.add("warning", Path(root) / split, f"all {len(report.pairs)} masks are empty: no crack to learn "
                                                  "from (crack-free photos belong in --negatives)")
    return report


def check_data(root: Path, crop: int, splits: Sequence[str] = SPLITS) -> Dict[str, SplitReport]:
    """Check each split of a data root file by file (see `check_split`)."""
    return {split: check_split(Path(root), split, crop) for split in splits}


def check_negatives(folder: Path, crop: int) -> Dict[str, SplitReport]:
    """Every problem of a folder of crack-free photos (every 5th one is for validation, see
    `data.split_negatives`), and per split the photos fit to train on, as pairs without a mask."""
    reports = {split: SplitReport(split) for split in SPLITS}
    try:
        files = split_negatives(Path(folder))
    except DatasetError as error:
        reports["train"].add("error", Path(folder), str(error).split(": ", 1)[1])
        return reports
    for split, report in reports.items():
        for path in files[split]:
            if _check_image(path, crop, report) is not None:
                report.pairs.append((path, None))
            else:
                report.bad.append(path)
    return reports


def summary(reports: Dict[str, SplitReport]) -> str:
    """One line per split: pairs fit to train on, and the counts of errors, warnings and notes."""
    lines = []
    for split, report in reports.items():
        counts = {level: sum(f.level == level for f in report.findings) for level in ("error", "warning", "note")}
        lines.append(f"{split}: {len(report.pairs)} good pairs, {counts['error']} errors, "
                     f"{counts['warning']} warnings, {counts['note']} notes")
    return "\n".join(lines)


def errors(reports: Dict[str, SplitReport]) -> List[Finding]:
    """The findings of the reports that stop a run."""
    return [finding for report in reports.values() for finding in report.findings if finding.level == "error"]
