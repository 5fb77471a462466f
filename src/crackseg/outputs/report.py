"""Measurement outputs (cracks.csv, images.csv, cracks.json, numbered overlays) and the inspection report.

`Measurements` collects the cracks of each image as masks come in (from `crackseg measure` or from `predict
--measure`) and writes the tables at the end; `write_report` turns them into one self-contained HTML page
(thumbnails embedded as data URIs, no scripts or styles from the network) that opens offline in any browser.
"""
import base64
import io
import json
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple
from urllib.parse import quote

import numpy as np
from jinja2 import Environment, FileSystemLoader
from matplotlib import colormaps
from PIL import Image, ImageDraw, ImageFont

from crackseg import __version__
from crackseg.analysis.cracktypes import crack_type, image_type, type_totals
from crackseg.analysis.measure import JOIN_GAP_PX, MIN_AREA, Crack, image_row, measure_mask
from crackseg.analysis.severity import Standard, class_totals, crack_grades
from crackseg.files.images import IMAGE_EXTENSIONS, DatasetError, photo_metadata
from crackseg.outputs.tables import write_csv
from crackseg.training.config import ConfigError

PHOTO_PX = 1000  # longest side of each photo in the report
CROP_PX = 400  # ... of each crop around a crack (full resolution up to this)
CROP_MARGIN_PX = 16
CROPS_PER_IMAGE = 12  # the widest cracks of a photo get a crop each
TEMPLATES = Path(__file__).parent / "templates"
WIDTH_COLOURS = colormaps["plasma"]


@dataclass
class ImageMeasurement:
    file: str
    name: str
    shape: tuple
    cracks: List[Crack]
    overlay: Optional[str] = None  # file name of the numbered overlay, in the output folder
    extra: Dict[str, Any] = field(default_factory=dict)  # e.g. predict's summary fields
    mm_per_px: Optional[float] = None  # this image's scale
    metadata: Dict[str, Any] = field(default_factory=dict)  # when and where it was taken (EXIF)


def draw_measurements(image: np.ndarray, cracks: Sequence[Crack], width_scale: float) -> Image.Image:
    """The image (H, W, 3) uint8 with each crack's centreline coloured by its local width (plasma: thin = dark,
    `width_scale` px = bright) and its number at its start."""
    canvas = Image.fromarray(np.asarray(image, dtype=np.uint8)).convert("RGB")
    draw = ImageDraw.Draw(canvas)
    line = max(2, round(max(canvas.size) / 400))
    for crack in cracks:
        for points, widths in zip(crack.centreline, crack.widths):
            for (x0, y0), (x1, y1), width in zip(points, points[1:], widths):
                colour = tuple(int(255 * c) for c in WIDTH_COLOURS(min(width / width_scale, 1.0))[:3])
                draw.line([(x0, y0), (x1, y1)], fill=colour, width=line)
    font = ImageFont.load_default(size=max(11, round(max(canvas.size) / 90)))
    for crack, box in zip(cracks, label_boxes(draw, font, cracks, canvas.size)):
        left, top, _, _ = draw.textbbox((0, 0), str(crack.id), font=font)  # the glyphs' offset from their origin
        draw.rectangle(box, fill=(255, 255, 255), outline=(0, 0, 0))
        draw.text((box[0] + 2 - left, box[1] + 1 - top), str(crack.id), fill=(0, 0, 0), font=font)
    return canvas


def label_boxes(draw: ImageDraw.ImageDraw, font: Any, cracks: Sequence[Crack], size: Tuple[int, int]
                ) -> List[Tuple[float, float, float, float]]:
    """Where each crack's number goes: beside its centreline, clear of the numbers placed before it."""
    placed: List[Tuple[float, float, float, float]] = []
    for crack in cracks:
        placed.append(_free_place(draw, font, str(crack.id), _label_anchors(crack), placed, size))
    return placed


def _label_anchors(crack: Crack) -> List[Tuple[float, float]]:
    """Where a crack's number may go: beside points along its centreline, its start first."""
    points = [point for line in crack.centreline for point in line] or [crack.bbox[:2]]
    step = max(1, len(points) // 8)
    return points[::step] + [points[-1]]


def _free_place(draw: ImageDraw.ImageDraw, font: Any, label: str, anchors: Sequence[Tuple[float, float]],
                placed: Sequence[Tuple[float, float, float, float]], size: Tuple[int, int]
                ) -> Tuple[float, float, float, float]:
    """The label's box at the first anchor and offset where it overlaps no label already placed and stays inside
    the image; the first candidate when there is none."""
    left, top, right, bottom = draw.textbbox((0, 0), label, font=font)
    width, height = right - left + 4, bottom - top + 2
    candidates = []
    for x, y in anchors:
        for dx, dy in ((4, 4), (4, -height - 4), (-width - 4, 4), (-width - 4, -height - 4)):
            x0 = min(max(x + dx, 0), size[0] - width)
            y0 = min(max(y + dy, 0), size[1] - height)
            candidates.append((x0, y0, x0 + width, y0 + height))
    for box in candidates:
        if all(box[2] <= other[0] or other[2] <= box[0] or box[3] <= other[1] or other[3] <= box[1]
               for other in placed):
            return box
    return candidates[0]


class Measurements:
    """Measures masks one by one, draws their overlays into `out_dir`, and writes the tables with `write`.

    Args:
        out_dir: where NAME_measure.png, cracks.csv, images.csv and cracks.json go.
        mm_per_px: ground size of a pixel in mm: adds mm columns (mm^2 for areas) [pixels only].
        min_area: components smaller than this many px are ignored.
        min_length: ... and so are those whose centreline is shorter than this many px.
        standard: grade each crack's widths under this standard (`severity.standard`; needs a scale): class
            columns in cracks.csv, length per class in images.csv.
        scales: mm per px of particular images, by file name, by the path as given or by output name (photos
            taken at different distances); the others take `mm_per_px`.
        join_gap: pieces of a crack across gaps up to this many px are one crack.
        axis_deg: the road's (or wall's) axis for crack types (`cracktypes`), 0 = image horizontal, 90 = vertical.

    Example:
        >>> measurements = Measurements(Path("out"), mm_per_px=0.5)
        >>> measurements.add("photo.jpg", "photo", mask, image)  # mask (H, W) bool, image (H, W, 3) uint8
        >>> measurements.write()  # [out/cracks.csv, out/images.csv, out/cracks.json]
    """

    def __init__(self, out_dir: Path, mm_per_px: Optional[float] = None, min_area: int = MIN_AREA,
                 min_length: float = 0.0, standard: Optional[Standard] = None, axis_deg: float = 90.0,
                 join_gap: float = JOIN_GAP_PX, scales: Optional[Dict[str, float]] = None):
        if mm_per_px is not None and mm_per_px <= 0:
            raise ConfigError("--mm-per-px must be positive")
        if standard is not None and not mm_per_px and not scales:
            raise ConfigError(f"--standard {standard.name} grades widths in mm: give --mm-per-px or --scale-csv too")
        if min_area < 1:
            raise ConfigError("--min-area must be at least 1 px")
        self.out_dir = Path(out_dir)
        self.mm_per_px = mm_per_px
        self.min_area = min_area
        self.min_length = min_length
        self.standard = standard
        self.axis_deg = axis_deg
        self.join_gap = join_gap
        self.scales = dict(scales or {})
        self.images: List[ImageMeasurement] = []

    def add(self, file: str, name: str, mask: np.ndarray, image: Optional[np.ndarray] = None,
            extra: Optional[Dict[str, Any]] = None, probs: Optional[np.ndarray] = None,
            redraw: bool = True) -> Dict[str, Any]:
        """Measure one binary mask (H, W) (with `probs`, the crack probabilities it came from, each crack's
        confidence); draw its overlay on `image` (H, W, 3) (or on the mask, in grey) as NAME_measure.png (NAME may
        hold folders: `sub/photo.jpg`); return the image's row of images.csv. `redraw=False` keeps the overlay an
        earlier run drew of the same mask (a resumed video, whose frames are not decoded again)."""
        scale = self.scale_of(file, name)
        if self.standard is not None and not scale:
            raise DatasetError(f"{file}: no scale to grade its cracks under {self.standard.name}: add it to "
                               "--scale-csv or give --mm-per-px")
        cracks = measure_mask(mask, self.min_area, self.min_length, probs, self.join_gap)
        overlay = f"{name}_measure.png"
        if redraw or not (self.out_dir / overlay).is_file():
            background = image if image is not None else np.repeat((np.asarray(mask) * 96)[..., None], 3, axis=2)
            widest = max((c.max_width_px for c in cracks), default=1.0)
            temporary = self.out_dir / (overlay + ".tmp")
            temporary.parent.mkdir(parents=True, exist_ok=True)
            draw_measurements(background, cracks, max(widest, 1.0)).save(temporary, format="PNG")
            temporary.replace(self.out_dir / overlay)
        source = Path(file.split("#")[0])  # a video's frame: FILE#N
        metadata = photo_metadata(source) if source.suffix.lower() in IMAGE_EXTENSIONS and source.is_file() else {}
        entry = ImageMeasurement(file, name, tuple(np.asarray(mask).shape), cracks, overlay, dict(extra or {}),
                                 scale, metadata)
        self.images.append(entry)
        return image_row(cracks, entry.shape, scale)

    def scale_of(self, file: str, name: str) -> Optional[float]:
        """The image's mm per px: from `scales` (by output name, path as given or file name), else the default."""
        source = file.split("#")[0]  # a video's frames take the video's scale
        for key in (name, file, Path(file).name, source, Path(source).name):
            if key in self.scales:
                return self.scales[key]
        return self.mm_per_px

    def crack_row(self, crack: Crack, mm_per_px: Optional[float] = None) -> Dict[str, Any]:
        """A crack's row of cracks.csv: its measures, in mm at its image's scale, its type, and its classes under
        the standard."""
        row = crack.row(mm_per_px)
        row["type"] = crack_type(crack, self.axis_deg, mm_per_px)
        if self.standard and mm_per_px:
            row.update(crack_grades(self.standard, row, mm_per_px))
        return row

    def write(self) -> List[Path]:
        """Write cracks.csv (a row per crack), images.csv (a row per image) and cracks.json (centrelines as
        polylines of (x, y) px, for GIS/CAD tools); returns their paths."""
        per_image = [[{"file": entry.file, **self.crack_row(crack, entry.mm_per_px)} for crack in entry.cracks]
                     for entry in self.images]
        crack_rows = [row for rows in per_image for row in rows]
        scaled = self.mm_per_px or next(iter(self.scales.values()), None)
        located = sorted({key for entry in self.images for key in entry.metadata})
        image_rows = [{"file": entry.file, **image_row(entry.cracks, entry.shape, entry.mm_per_px),
                       "type": image_type(entry.cracks, self.axis_deg, entry.mm_per_px),
                       **(class_totals(self.standard, rows) if self.standard else {}),
                       **(type_totals(rows, entry.mm_per_px) if self.standard else {}),
                       **({"mm_per_px": entry.mm_per_px} if self.scales else {}),
                       **{key: entry.metadata.get(key, "") for key in located}, "overlay": entry.overlay}
                      for entry, rows in zip(self.images, per_image)]
        paths = [self.out_dir / "cracks.csv", self.out_dir / "images.csv", self.out_dir / "cracks.json"]
        crack_fields = ["file"] + list(self.crack_row(Crack(0, 0, 0, 0, 0, 0, 0, (0, 0, 0, 0)), scaled))
        image_fields = list(dict.fromkeys(key for row in image_rows for key in row)) or ["file"]
        write_csv(paths[0], crack_fields, crack_rows, ignore_extra=True)
        write_csv(paths[1], image_fields, image_rows, ignore_extra=True)
        standard = self.standard and {"name": self.standard.name, "title": self.standard.title,
                                      "source": self.standard.source, "classes": self.standard.limits(),
                                      "graded_widths": list(self.standard.width)}
        overall = class_totals(self.standard, crack_rows) if self.standard else None
        document = {"mm_per_px": self.mm_per_px, "min_area_px": self.min_area, "min_length_px": self.min_length,
                    "join_gap_px": self.join_gap, "standard": standard, "length_per_class_mm": overall,
                    "axis_deg": self.axis_deg, "coordinates": "x, y in px",
                    "images": [{"file": entry.file, "height": entry.shape[0], "width": entry.shape[1],
                                "mm_per_px": entry.mm_per_px, **entry.metadata,
                                "cracks": [{**row, "polylines": crack.centreline, "widths_px": crack.widths}
                                           for crack, row in zip(entry.cracks, rows)]}
                               for entry, rows in zip(self.images, per_image)]}
        paths[2].write_text(json.dumps(document, indent=1) + "\n")
        return paths


def _jpeg(image: Image.Image, side: int, quality: int = 85) -> str:
    """A JPEG data URI of an image, its longest side at most `side` px (embedded: the page opens offline)."""
    image = image.convert("RGB")
    image.thumbnail((side, side))
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=quality)
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode()


def _legend() -> str:
    """The width colours, thin to wide, as a PNG data URI."""
    ramp = (np.asarray(WIDTH_COLOURS(np.linspace(0, 1, 256)))[None, :, :3] * 255).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(np.repeat(ramp, 8, axis=0)).save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def _crops(overlay: Image.Image, cracks: Sequence[Crack]) -> List[Dict[str, Any]]:
    """Full-resolution crops of the numbered overlay around the widest cracks (CROPS_PER_IMAGE at most), so that
    thin cracks and their numbers can be seen whatever the photo's size."""
    crops = []
    for crack in sorted(cracks, key=lambda c: -c.max_width_px)[:CROPS_PER_IMAGE]:
        x, y, w, h = crack.bbox
        box = (max(x - CROP_MARGIN_PX, 0), max(y - CROP_MARGIN_PX, 0), min(x + w + CROP_MARGIN_PX, overlay.width),
               min(y + h + CROP_MARGIN_PX, overlay.height))
        crops.append({"id": crack.id, "src": _jpeg(overlay.crop(box), CROP_PX, quality=90)})
    return sorted(crops, key=lambda crop: crop["id"])


def _fixed(value: float, digits: int) -> str:
    return f"{value:.{digits}f}"


def write_report(measurements: Measurements, settings: Dict[str, Any], path: Path) -> Path:
    """One self-contained HTML page (a jinja2 template, autoescaped): when and by what it was made, the settings
    in plain words, units, the direction convention and the width colours; totals, the standard's classes and the
    length per class; then the images, those with cracks to review first, then by largest crack width, each with
    its numbered overlay, full-resolution crops of its widest cracks, its cracks' table and a link to its mask."""
    in_mm = bool(measurements.images) and all(entry.mm_per_px for entry in measurements.images)
    unit = "mm" if in_mm else "px"  # mm only when every image has a scale (each its own, with --scale-csv)
    digits = 2 if in_mm else 1  # widths to 0.01 mm (lengths to 0.1): finer than a pixel of any photo here

    def size(entry: ImageMeasurement) -> float:
        return entry.mm_per_px if in_mm else 1.0

    rule = measurements.standard
    images, graded = [], []
    for entry in measurements.images:
        rows = [measurements.crack_row(crack, entry.mm_per_px) for crack in entry.cracks]
        graded += rows
        scale = size(entry)
        overlay = Image.open(measurements.out_dir / entry.overlay) if entry.overlay else None
        widest = max((c.max_width_px for c in entry.cracks), default=0.0) * scale
        gps = entry.metadata.get("gps_lat"), entry.metadata.get("gps_lon")
        images.append({
            "file": entry.file, "mask": quote(str(entry.extra["mask"])) if entry.extra.get("mask") else None,
            "picture": _jpeg(overlay, PHOTO_PX) if overlay else None,
            "crops": _crops(overlay, entry.cracks) if overlay else [],
            "review": sum(bool(c.review_reasons) for c in entry.cracks), "widest": widest,
            "width": _fixed(widest, digits), "length": _fixed(sum(c.length_px for c in entry.cracks) * scale, 1),
            "area": _fixed(100 * sum(c.area_px for c in entry.cracks) / float(entry.shape[0] * entry.shape[1]), 2),
            "captured": entry.metadata.get("captured"),
            "gps": f"{gps[0]:.6f}, {gps[1]:.6f}" if None not in gps else None,
            "cracks": [{"id": c.id, "type": row["type"], "length": _fixed(c.length_px * scale, 1),
                        "mean_width": _fixed(c.mean_width_px * scale, digits),
                        "max_width": _fixed(c.max_width_px * scale, digits),
                        "area": _fixed(c.area_px * scale ** 2, 1), "direction": f"{c.orientation_deg:.0f}",
                        "grade": (f"{row[f'class_{rule.width[0]}']} ({row[f'class_{rule.width[0]}_range']})"
                                  if rule and f"class_{rule.width[0]}" in row else ""),
                        "confidence": "" if c.confidence is None else f"{c.confidence:.2f}",
                        "review": "; ".join(c.review_reasons)} for c, row in zip(entry.cracks, rows)]})
        if overlay:
            overlay.close()
    images.sort(key=lambda image: (-image["review"], -image["widest"]))
    for rank, image in enumerate(images, start=1):
        image["rank"] = rank
    cracks = [crack for image in images for crack in image["cracks"]]
    totals = {"images": len(images), "images with cracks": sum(bool(image["cracks"]) for image in images),
              "cracks": len(cracks), "cracks to review": sum(bool(crack["review"]) for crack in cracks),
              f"total length ({unit})": _fixed(sum(float(image["length"]) for image in images), 1),
              f"largest width ({unit})": _fixed(max((image["widest"] for image in images), default=0.0), digits)}
    standard = None
    if rule:
        key = f"class_{rule.width[0]}"
        lengths = class_totals(rule, graded)
        standard = {"title": rule.title, "source": rule.source, "limits": rule.limits(),
                    "widths": " and ".join({"max": "largest", "typical": "typical (median)", "mean": "mean"}[w]
                                           for w in rule.width) + " width" + ("s" if len(rule.width) > 1 else ""),
                    "rows": [{"name": name, "cracks": sum(str(row[key]) == name for row in graded),
                              "length": _fixed(lengths[f"length_mm_class_{name}"], 1)}
                             for name, _, _ in rule.classes]}
    scales = sorted({entry.mm_per_px for entry in measurements.images if entry.mm_per_px})
    unit_words = (f"mm, at {scales[0]:g} mm per pixel; every length and width is uncertain by at least one pixel "
                  f"(+-{scales[0]:g} mm)" if in_mm and len(scales) == 1 else
                  "mm, each photo at its own scale (images.csv); every length and width is uncertain by at least one "
                  "pixel of its photo (uncertainty_mm in cracks.csv)" if in_mm else
                  "pixels (no scale given: --mm-per-px or --scale-csv); every figure +-1 px at least")
    environment = Environment(loader=FileSystemLoader(TEMPLATES), autoescape=True)
    page = environment.get_template("report.html.j2").render(
        made=datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"), version=__version__, settings=settings,
        unit=unit, unit_words=unit_words, axis=f"{measurements.axis_deg:g}", legend=_legend(), totals=totals,
        standard=standard, images=images)
    path.write_text(page, encoding="utf-8")
    return path
