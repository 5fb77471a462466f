"""Georeferenced rasters: whether a file is one, its ground scale, and the GIS libraries (rasterio for rasters,
Fiona for vector files; both GDAL bindings, installed with the `gis` extra)."""
import warnings
from pathlib import Path
from typing import Any, Optional

import numpy as np

from crackseg.errors import ConfigError

GEO_EXTENSIONS = (".tif", ".tiff")


def rasterio_module() -> Any:
    """rasterio, or a clear error naming what to install."""
    try:
        import rasterio
    except ImportError:
        raise ConfigError("georeferenced rasters need rasterio: pip install 'crackseg[gis]' (or pip install "
                          "rasterio fiona)") from None
    return rasterio


def is_georeferenced(path: Path) -> bool:
    """A .tif/.tiff file with a coordinate system (read by window as a raster); False without rasterio, for
    plain TIFF photos, and for files rasterio cannot open (they are read as photos and fail there if broken)."""
    if Path(path).suffix.lower() not in GEO_EXTENSIONS:
        return False
    try:
        import rasterio
        from rasterio.errors import NotGeoreferencedWarning, RasterioIOError
    except ImportError:
        return False
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NotGeoreferencedWarning)  # a plain TIFF photo: that is the answer
            with rasterio.open(path) as dataset:
                return dataset.crs is not None
    except RasterioIOError:
        return False


def mm_per_px_of(dataset: Any, given: Optional[float]) -> float:
    """Ground size of a pixel in mm: the given one, else from the geotransform of a projected CRS in metres (or
    feet); a geographic CRS (degrees) needs --mm-per-px."""
    if given:
        return float(given)
    crs = dataset.crs
    if crs.is_geographic:
        raise ConfigError(f"{dataset.name}: its CRS ({crs.to_string()}) is in degrees: give --mm-per-px (the ground "
                          "size of a pixel)")
    size_x, size_y = abs(dataset.transform.a), abs(dataset.transform.e)
    if not np.isclose(size_x, size_y, rtol=0.01):
        raise ConfigError(f"{dataset.name}: pixels of {size_x:g} x {size_y:g} {crs.linear_units}, not square: give "
                          "--mm-per-px")
    metres = crs.linear_units_factor[1] if crs.linear_units_factor else 1.0
    return (size_x + size_y) / 2 * metres * 1000


def fiona_module() -> Any:
    """Fiona, or a clear error naming what to install."""
    try:
        import fiona
    except ImportError:
        raise ConfigError("GIS outputs need Fiona: pip install 'crackseg[gis]' (or pip install rasterio fiona)"
                          ) from None
    return fiona
