"""The inspection report: `write_report` turns `Measurements` into one self-contained HTML page (photos and
crops embedded as data URIs, no scripts or styles from the network) that opens offline in any browser, from the
jinja2 template templates/report.html.j2 with autoescape."""
import base64
import io
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Dict, List, Sequence
from urllib.parse import quote

import numpy as np
from jinja2 import Environment, FileSystemLoader
from PIL import Image

from crackseg import __version__
from crackseg.analysis.measure import Crack
from crackseg.analysis.severity import Standard, class_totals
from crackseg.files.writing import write_text
from crackseg.outputs.measurements import WIDTH_COLOURS, ImageMeasurement, Measurements

PHOTO_PX = 1000  # longest side of each photo in the report
CROP_PX = 400  # ... of each crop around a crack (full resolution up to this)
CROP_MARGIN_PX = 16
CROPS_PER_IMAGE = 12  # the widest cracks of a photo get a crop each
TEMPLATES = Path(__file__).parent / "templates"


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


def _standard_table(rule: Standard, graded: List[Dict[str, Any]]) -> Dict[str, Any]:
    """The report's section on the standard: its source, its class limits and the cracks and length per class."""
    key = f"class_{rule.width[0]}"
    lengths = class_totals(rule, graded)
    return {"title": rule.title, "source": rule.source, "limits": rule.limits(),
            "widths": " and ".join({"max": "largest", "typical": "typical (median)", "mean": "mean"}[w]
                                   for w in rule.width) + " width" + ("s" if len(rule.width) > 1 else ""),
            "rows": [{"name": name, "cracks": sum(str(row[key]) == name for row in graded),
                      "length": _fixed(lengths[f"length_mm_class_{name}"], 1)} for name, _, _ in rule.classes]}


def _unit_words(in_mm: bool, scales: List[float]) -> str:
    """The units of the report's figures and their uncertainty, in words."""
    if in_mm and len(scales) == 1:
        return (f"mm, at {scales[0]:g} mm per pixel; every length and width is uncertain by at least one pixel "
                f"(+-{scales[0]:g} mm)")
    if in_mm:
        return ("mm, each photo at its own scale (images.csv); every length and width is uncertain by at least one "
                "pixel of its photo (uncertainty_mm in cracks.csv)")
    return "pixels (no scale given: --mm-per-px or --scale-csv); every figure +-1 px at least"


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
    scales = sorted({entry.mm_per_px for entry in measurements.images if entry.mm_per_px})
    environment = Environment(loader=FileSystemLoader(TEMPLATES), autoescape=True)
    page = environment.get_template("report.html.j2").render(
        made=datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"), version=__version__, settings=settings,
        unit=unit, unit_words=_unit_words(in_mm, scales), axis=f"{measurements.axis_deg:g}", legend=_legend(),
        totals=totals, standard=_standard_table(rule, graded) if rule else None, images=images)
    write_text(path, page)
    return path
