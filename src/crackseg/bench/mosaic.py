"""An orthomosaic-like GeoTIFF from a folder of photos, to try and time the raster path on real imagery:
`python -m crackseg.bench.mosaic PHOTOS OUT.tif --grid 16 --gsd-mm 1 --crs EPSG:32633 [--size 40000]`.

The photos (name order, repeated as needed) are centre-cropped to one tile size and laid out in a grid; the CRS
and ground sampling distance are made up but valid. With `--size` larger than the grid, the mosaic sits in the
top-left corner of a raster of that side whose other pixels are nodata (sparse: they take no disk), which shows
what a large, partly covered orthomosaic costs."""
import argparse
from pathlib import Path

import numpy as np

from crackseg.files.geo import rasterio_module
from crackseg.files.images import image_files, load_image


def write_mosaic(photos: Path, out: Path, grid: int, gsd_mm: float, crs: str, size: int = 0) -> Path:
    """Write the mosaic; returns its path."""
    rasterio = rasterio_module()
    from rasterio.transform import from_origin
    from rasterio.windows import Window

    files = image_files(photos)
    images = [load_image(path) for path in files[:grid * grid]]
    tile = min(min(image.shape[1:]) for image in images)
    side = max(size, grid * tile)
    profile = {"driver": "GTiff", "width": side, "height": side, "count": 3, "dtype": "uint8", "crs": crs,
               "transform": from_origin(500000.0, 5600000.0, gsd_mm / 1000, gsd_mm / 1000), "nodata": 0,
               "tiled": True, "blockxsize": 512, "blockysize": 512, "compress": "deflate", "BIGTIFF": "IF_SAFER",
               "SPARSE_OK": True}
    with rasterio.open(out, "w", **profile) as target:
        for index in range(grid * grid):
            image = images[index % len(images)]
            top, left = (image.shape[1] - tile) // 2, (image.shape[2] - tile) // 2
            crop = image[:, top:top + tile, left:left + tile].numpy()
            crop = np.maximum(crop, 1)  # 0 is nodata
            row, col = divmod(index, grid)
            target.write(crop, window=Window(col * tile, row * tile, tile, tile))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("photos", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--grid", type=int, default=16, help="photos per side [16]")
    parser.add_argument("--gsd-mm", type=float, default=1.0, help="ground size of a pixel in mm [1]")
    parser.add_argument("--crs", default="EPSG:32633", help="a projected CRS in metres [EPSG:32633, UTM 33N]")
    parser.add_argument("--size", type=int, default=0, help="side of the raster, if larger than the grid [the grid]")
    args = parser.parse_args()
    print(write_mosaic(args.photos, args.out, args.grid, args.gsd_mm, args.crs, args.size))


if __name__ == "__main__":
    main()
