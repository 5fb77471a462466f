"""Measurement outputs: cracks.csv, images.csv, cracks.json and numbered overlays.

`Measurements` collects the cracks of each image as masks come in (from `crackseg measure` or from `predict
--measure`) and writes the tables at the end.
"""
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
from matplotlib import colormaps
from PIL import Image, ImageDraw, ImageFont

from crackseg.analysis.cracktypes import crack_type, image_type, type_totals
from crackseg.analysis.measure import JOIN_GAP_PX, MIN_AREA, Crack, image_row, measure_mask
from crackseg.analysis.severity import Standard, class_totals, crack_grades
from crackseg.errors import ConfigError, DatasetError
from crackseg.files.images import IMAGE_EXTENSIONS, photo_metadata
from crackseg.files.writing import write_json
from crackseg.outputs.tables import write_csv

WIDTH_COLOURS = colormaps["plasma"]


@dataclass
class ImageMeasurement:
    """The cracks of one image (or video frame) and what its rows in the tables need."""

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
    for crack in cracks:  # each segment in the colour of the width at its start, all of a crack's looked up at once
        widths = np.concatenate([line_widths[:-1] for line_widths in crack.widths] or [[]])
        colours = map(tuple, (255 * WIDTH_COLOURS(np.minimum(widths / width_scale, 1.0))[:, :3]).astype(int).tolist())
        segments = ((start, end) for points in crack.centreline for start, end in zip(points, points[1:]))
        for segment, colour in zip(segments, colours):
            draw.line(segment, fill=colour, width=line)
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


def crack_row(crack: Crack, mm_per_px: Optional[float], standard: Optional[Standard] = None,
              axis_deg: float = 90.0) -> Dict[str, Any]:
    """A crack's row of cracks.csv: its measures, in mm at its image's scale, its type (`cracktypes`, the road's
    axis at `axis_deg`), and its classes under the standard (with a scale)."""
    row = crack.row(mm_per_px)
    row["type"] = crack_type(crack, axis_deg, mm_per_px)
    if standard and mm_per_px:
        row.update(crack_grades(standard, row, mm_per_px))
    return row


def on_earth(latitude: Any, longitude: Any) -> bool:
    """Whether EXIF gave a position on the earth: finite degrees in range (a camera without a fix writes 0/0)."""
    return (isinstance(latitude, (int, float)) and isinstance(longitude, (int, float))
            and abs(latitude) <= 90 and abs(longitude) <= 180)  # NaN fails both comparisons


def photo_points(image_rows: Sequence[Dict[str, Any]]) -> Dict[str, Any]:
    """images.csv's rows of photos with an EXIF GPS position as a GeoJSON FeatureCollection of points (RFC 7946:
    longitude, latitude in WGS 84), each with its row as properties: where the photos were taken, with what
    each holds."""
    return {"type": "FeatureCollection", "features": [
        {"type": "Feature", "geometry": {"type": "Point", "coordinates": [row["gps_lon"], row["gps_lat"]]},
         "properties": {key: value for key, value in row.items() if key not in ("gps_lat", "gps_lon")}}
        for row in image_rows]}


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
        suffix: after each table's name: a shard's tables (cracks-0-of-4.csv) do not overwrite the others'.

    Example:
        >>> measurements = Measurements(Path("out"), mm_per_px=0.5)
        >>> measurements.add("photo.jpg", "photo", mask, image)  # mask (H, W) bool, image (H, W, 3) uint8
        >>> measurements.write()  # [out/cracks.csv, out/images.csv, out/cracks.json]
    """

    def __init__(self, out_dir: Path, mm_per_px: Optional[float] = None, min_area: int = MIN_AREA,
                 min_length: float = 0.0, standard: Optional[Standard] = None, axis_deg: float = 90.0,
                 join_gap: float = JOIN_GAP_PX, scales: Optional[Dict[str, float]] = None, suffix: str = ""):
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
        self.suffix = suffix
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
        """A crack's row of cracks.csv (`crack_row` with this run's standard and axis)."""
        return crack_row(crack, mm_per_px, self.standard, self.axis_deg)

    def write(self) -> List[Path]:
        """Write cracks.csv (a row per crack), images.csv (a row per image), cracks.json (centrelines as
        polylines of (x, y) px, for GIS/CAD tools) and, when photos carry an EXIF GPS position, images.geojson
        (`photo_points`); returns their paths."""
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
        paths = [self.out_dir / f"{table}{self.suffix}{extension}"
                 for table, extension in (("cracks", ".csv"), ("images", ".csv"), ("cracks", ".json"))]
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
        write_json(paths[2], document, indent=None)  # compact: a noisy mask's polylines run to millions of points
        points = self.out_dir / f"images{self.suffix}.geojson"
        located_rows = [row for row in image_rows if on_earth(row.get("gps_lat"), row.get("gps_lon"))]
        points.unlink(missing_ok=True)
        if located_rows:
            write_json(points, photo_points(located_rows), indent=1)
            paths.append(points)
        return paths
