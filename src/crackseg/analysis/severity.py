"""Crack widths graded under named standards, each rule in one table with its source.

A standard turns a width in mm into a class. Each crack is graded twice, by its largest and by its typical
(median local) width, since standards and practices differ in which they mean; `astm-d6433` grades by the mean
width, as its severity levels are written for a crack's width along its length. A width measured in pixels is
uncertain by at least one pixel, so each grade also says the classes the width could fall in within +-1 px
(`Grade.range`): a crack graded "2" whose range is "1-2" lies within a pixel of the boundary.

| standard | for | classes (mm) | source |
|---|---|---|---|
| bre251 | buildings, masonry | 0 < 0.1 <= 1 <= 1 < 2 <= 5 < 3 <= 15 < 4 <= 25 < 5 | BRE Digest 251, Table 1 |
| aci224r | reinforced concrete | within / exceeds the tolerable width of the exposure | ACI 224R-01, Table 4.1 |
| ec2 | concrete structures | within / exceeds wmax of the exposure class | EN 1992-1-1, Table 7.1N |
| astm-d6433 | pavement L&T cracking | low < 10 <= medium <= 75 < high (mean width) | ASTM D6433, L&T cracking |
"""
import math
from dataclasses import dataclass
from typing import Dict, List, Optional, Tuple

from crackseg.analysis.units import to_mm
from crackseg.errors import ConfigError


@dataclass(frozen=True)
class Standard:
    """Classes as (name, upper limit in mm, whether the limit belongs to the class), in increasing width."""

    name: str
    title: str
    source: str
    width: Tuple[str, ...]  # which widths are graded: "max", "typical" (median), "mean"
    classes: Tuple[Tuple[str, float, bool], ...]

    def grade(self, width_mm: float) -> str:
        """The class a width in mm falls in under this rule."""
        for name, limit, inclusive in self.classes:
            if width_mm < limit or (inclusive and width_mm == limit):
                return name
        return self.classes[-1][0]

    def limits(self) -> str:
        """The classes in plain words, for reports: '0: < 0.1 mm; 1: <= 1 mm; ...'."""
        parts, lower = [], None
        for name, limit, inclusive in self.classes:
            if math.isinf(limit):
                parts.append(f"{name}: > {_mm(lower)} mm" if lower is not None else f"{name}: any width")
            else:
                parts.append(f"{name}: {'<=' if inclusive else '<'} {_mm(limit)} mm")
            lower = limit
        return "; ".join(parts)


def _mm(value: float) -> str:
    return f"{value:g}"


INF = math.inf
BRE251 = Standard("bre251", "BRE Digest 251: damage to walls by crack width",
                  "BRE Digest 251 (1995), Assessment of damage in low-rise buildings, Table 1",
                  ("max", "typical"),
                  (("0", 0.1, False), ("1", 1.0, True), ("2", 5.0, True), ("3", 15.0, True), ("4", 25.0, True),
                   ("5", INF, True)))
# tolerable crack widths of reinforced concrete by exposure (ACI 224R-01, Table 4.1), mm
ACI224R_EXPOSURES = {"dry-air": 0.41, "humid": 0.30, "de-icing": 0.18, "seawater": 0.15, "water-retaining": 0.10}
# Eurocode 2 recommended wmax (EN 1992-1-1, Table 7.1N), mm
EC2_EXPOSURES = {"X0": 0.4, "XC1": 0.4, "XC2": 0.3, "XC3": 0.3, "XC4": 0.3, "XD1": 0.3, "XD2": 0.3, "XD3": 0.3,
                 "XS1": 0.3, "XS2": 0.3, "XS3": 0.3, "prestressed": 0.2}
ASTM_D6433 = Standard("astm-d6433", "ASTM D6433 longitudinal and transverse cracking, severity by mean width",
                      "ASTM D6433, Standard Practice for Roads and Parking Lots Pavement Condition Index Surveys, "
                      "distress 10 (L&T cracking)", ("mean",),
                      (("low", 10.0, False), ("medium", 75.0, True), ("high", INF, True)))
STANDARDS = ("bre251", "aci224r", "ec2", "astm-d6433")
DEFAULT_EXPOSURE = {"aci224r": "humid", "ec2": "XC3"}


def standard(name: str, exposure: Optional[str] = None) -> Standard:
    """The standard called `name`; aci224r and ec2 take an exposure (their limit depends on it)."""
    if name == "bre251":
        return BRE251
    if name == "astm-d6433":
        return ASTM_D6433
    if name in ("aci224r", "ec2"):
        exposures = ACI224R_EXPOSURES if name == "aci224r" else EC2_EXPOSURES
        chosen = exposure or DEFAULT_EXPOSURE[name]
        if chosen not in exposures:
            raise ConfigError(f"--exposure {chosen!r} is not an exposure of {name}; expected one of "
                              f"{', '.join(exposures)}")
        limit = exposures[chosen]
        title = (f"ACI 224R tolerable crack width, exposure {chosen} ({limit} mm)" if name == "aci224r" else
                 f"Eurocode 2 wmax, exposure class {chosen} ({limit} mm)")
        source = ("ACI 224R-01, Control of Cracking in Concrete Structures, Table 4.1" if name == "aci224r" else
                  "EN 1992-1-1:2004 (Eurocode 2), Table 7.1N, recommended values")
        return Standard(name, title, source, ("max", "typical"), (("within", limit, True), ("exceeds", INF, True)))
    raise ConfigError(f"--standard {name!r}: expected one of {', '.join(STANDARDS)}")


@dataclass(frozen=True)
class Grade:
    """A width's class, and the classes within +-`uncertainty_mm` ("1" or "1-2")."""

    name: str
    range: str


def grade(rule: Standard, width_mm: float, uncertainty_mm: float) -> Grade:
    """A width's class under `rule`, and the classes it could be in within +- `uncertainty_mm`."""
    names = [name for name, _, _ in rule.classes]
    low, high = rule.grade(max(width_mm - uncertainty_mm, 0.0)), rule.grade(width_mm + uncertainty_mm)
    span = names[names.index(low):names.index(high) + 1]
    return Grade(rule.grade(width_mm), span[0] if len(span) == 1 else f"{span[0]}-{span[-1]}")


WIDTH_FIELDS = {"max": "max_width_px", "typical": "median_width_px", "mean": "mean_width_px"}


def crack_grades(rule: Standard, row: Dict[str, float], mm_per_px: float) -> Dict[str, str]:
    """The class columns of one crack's row of cracks.csv (its widths in px): class_max, class_max_range, ..."""
    columns = {}
    for which in rule.width:  # the width as written in the table (0.01 mm): 3 px x 0.1 is 0.3, not 0.30000000000000004
        graded = grade(rule, to_mm(row[WIDTH_FIELDS[which]], mm_per_px), mm_per_px)
        columns[f"class_{which}"], columns[f"class_{which}_range"] = graded.name, graded.range
    return columns


def class_totals(rule: Standard, rows: List[Dict[str, object]]) -> Dict[str, float]:
    """Total length in mm per class (by the standard's first graded width) over crack rows that carry it."""
    key = f"class_{rule.width[0]}"
    totals = {name: 0.0 for name, _, _ in rule.classes}
    for row in rows:
        totals[str(row[key])] += float(row["length_mm"])
    return {f"length_mm_class_{name}": round(total, 2) for name, total in totals.items()}
