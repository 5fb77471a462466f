"""Pixels and millimetres: the one conversion of measured figures, and lengths given as flags in either unit."""
import math
from typing import Any, Optional

from crackseg.errors import ConfigError

# mm figures are written to 0.01 mm: finer than any pixel of a photo of a surface, and a measured width is
# uncertain by a whole pixel anyway (uncertainty_mm = one pixel, the least a figure can be off)
MM_DIGITS = 2


def to_mm(value_px: float, mm_per_px: float, power: int = 1) -> float:
    """A figure in px (power 1: lengths, widths) or px^2 (power 2: areas) in mm or mm^2, to MM_DIGITS places."""
    return round(value_px * mm_per_px ** power, MM_DIGITS)


def length_px(text: Optional[str], mm_per_px: Any, default: float, flag: str = "--min-length") -> float:
    """A length flag in px: '30' or '30px' are px, '2.5mm' needs the scale (`mm_per_px` False: the command has no
    scale flag)."""
    if text is None:
        return default
    value = text.strip().lower()
    unit = "mm" if value.endswith("mm") else "px"
    try:
        number = float(value[:-2] if value.endswith(("mm", "px")) else value)
    except ValueError:
        raise ConfigError(f"{flag} {text!r}: expected a length such as 20, 20px or 2.5mm") from None
    if not math.isfinite(number) or number < 0:
        raise ConfigError(f"{flag} {text!r} must be a finite length of 0 or more")
    if unit == "mm":
        if mm_per_px is False:
            raise ConfigError(f"{flag} {text!r} is in mm: this command takes lengths in px (it has no --mm-per-px)")
        if not mm_per_px:
            raise ConfigError(f"{flag} {text!r} is in mm: give --mm-per-px too, or a length in px")
        return number / mm_per_px
    return number
