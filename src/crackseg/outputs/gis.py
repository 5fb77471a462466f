"""Cracks as GIS features in a raster's coordinate system: GeoJSON and GeoPackage (written by Fiona, GDAL's OGR),
loadable in QGIS or any GIS, and the crack table as CSV.

Each crack is one feature: its centreline as a MultiLineString (pixel centres mapped through the raster's
geotransform) with cracks.csv's fields as attributes (lengths and widths in mm and the length in m, confidence,
`review`, `review_reason` and `closed_loop`, `type`, and the classes under `--standard`). The GeoPackage also
holds a layer `outlines`: each crack's outline polygon.
"""
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

from crackseg.analysis.measure import Crack
from crackseg.analysis.severity import Standard
from crackseg.files.geo import fiona_module
from crackseg.outputs.measurements import crack_row
from crackseg.outputs.tables import write_csv

CRACK_LAYER = "cracks"
OUTLINE_LAYER = "outlines"


def crack_records(cracks: Sequence[Crack], mm_per_px: float, standard: Optional[Standard] = None,
                  axis_deg: float = 90.0) -> List[Dict[str, Any]]:
    """The attributes of each crack: cracks.csv's fields, with the length in metres too."""
    rows = []
    for crack in cracks:
        row = crack_row(crack, mm_per_px, standard, axis_deg)
        row["length_m"] = round(row["length_mm"] / 1000, 5)
        rows.append(row)
    return rows


def _schema(rows: Sequence[Dict[str, Any]], geometry: str) -> Dict[str, Any]:
    types = {}
    for key, value in rows[0].items():
        types[key] = "int" if isinstance(value, (bool, int)) else "str" if isinstance(value, str) else "float"
    return {"geometry": geometry, "properties": types}


def _mapped(transform: Any, points: Sequence[Tuple[float, float]], centre: bool) -> List[Tuple[float, float]]:
    """Raster (x, y) px -> map coordinates; pixel centres (`centre`) sit half a pixel inside their corner."""
    shift = 0.5 if centre else 0.0
    return [tuple(transform @ (x + shift, y + shift)) for x, y in points]


def write_gis(out_stem: Path, cracks: Sequence[Crack], outlines: Sequence[Dict[str, Any]], mm_per_px: float,
              crs: Any, transform: Any, standard: Optional[Standard] = None, axis_deg: float = 90.0) -> List[Path]:
    """OUT_STEM.geojson (centrelines), OUT_STEM.gpkg (layers cracks and outlines) and OUT_STEM.csv, in this order
    (the CSV last).

    Args:
        out_stem: path without extension, e.g. OUT/ortho_cracks.
        cracks: in raster px (`pipelines.raster.predict_raster`); outlines: their (Multi)Polygons in raster px.
        mm_per_px: the ground size of a pixel.
        crs, transform: the raster's coordinate system and geotransform.
        standard, axis_deg: grade each crack under this standard; the road's axis for crack types.
    """
    fiona = fiona_module()
    rows = crack_records(cracks, mm_per_px, standard, axis_deg)
    paths = [out_stem.with_name(out_stem.name + extension) for extension in (".geojson", ".gpkg", ".csv")]
    for path in paths:
        path.unlink(missing_ok=True)
    if not rows:
        write_csv(paths[2], ["id"], rows)
        return [paths[2]]
    lines = [{"type": "MultiLineString", "coordinates": [_mapped(transform, line, True) for line in crack.centreline]}
             for crack in cracks]
    polygons = [{"type": "MultiPolygon", "coordinates": [[_mapped(transform, ring, False) for ring in polygon]
                                                          for polygon in outline["coordinates"]]}
                for outline in outlines]
    wkt = crs.to_wkt()
    for path, driver in ((paths[0], "GeoJSON"), (paths[1], "GPKG")):
        with fiona.open(path, "w", driver=driver, crs_wkt=wkt, schema=_schema(rows, "MultiLineString"),
                        layer=CRACK_LAYER) as layer:
            layer.writerecords(fiona.Feature.from_dict(geometry=line, properties=row)
                               for line, row in zip(lines, rows))
    with fiona.open(paths[1], "w", driver="GPKG", crs_wkt=wkt, layer=OUTLINE_LAYER,
                    schema={"geometry": "MultiPolygon", "properties": {"id": "int"}}) as layer:
        layer.writerecords(fiona.Feature.from_dict(geometry=polygon, properties={"id": row["id"]})
                           for polygon, row in zip(polygons, rows))
    write_csv(paths[2], list(rows[0]), rows)  # last: a raster whose CSV is there is done (--skip-existing)
    return paths
