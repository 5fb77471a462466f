"""How long measuring cracks takes, on the worst case and on real masks, as JSON:
`python -m crackseg.bench.measuring [--sizes 500 1000 2000] [--density 0.5] [--masks DIR]`.

The worst case is noise: a mask whose pixels are crack at random with probability `--density` has a skeleton
of about 40% of its pixels in hundreds of thousands of branches of a few px (a thresholded map of noise, a bad
model, a textured surface). `--masks` also times each mask of a folder (e.g. a set's ground truth)."""
import argparse
import json
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

import numpy as np

from crackseg.analysis.measure import measure_mask
from crackseg.bench.timing import machine
from crackseg.files.images import image_files, load_mask


def timed(mask: np.ndarray) -> Dict[str, Any]:
    """Seconds to measure one mask, its cracks and the microseconds per pixel."""
    started = time.perf_counter()
    cracks = measure_mask(mask)
    seconds = time.perf_counter() - started
    return {"shape": list(mask.shape), "cracks": len(cracks), "seconds": round(seconds, 3),
            "us_per_px": round(1e6 * seconds / mask.size, 3),
            "total_length_px": round(sum(crack.length_px for crack in cracks), 1)}


def benchmark(sizes: List[int], density: float, masks: Optional[Path] = None, seed: int = 0) -> Dict[str, Any]:
    """Noise masks of each size (side in px), and the masks of a folder if given."""
    noise = [np.random.default_rng([seed, size]).random((size, size)) < density for size in sizes]
    report: Dict[str, Any] = {"date": time.strftime("%Y-%m-%d %H:%M"), "machine": machine(), "density": density,
                              "noise": [timed(mask) for mask in noise]}
    if masks is not None:
        rows = [timed(load_mask(path).numpy()[0] > 0) for path in image_files(masks)]
        report["masks"] = {"folder": str(masks), "count": len(rows),
                           "seconds": round(sum(row["seconds"] for row in rows), 3),
                           "slowest": max(rows, key=lambda row: row["seconds"], default=None)}
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[500, 1000, 2000], help="sides of the noise masks")
    parser.add_argument("--density", type=float, default=0.5, help="share of crack pixels in the noise [0.5]")
    parser.add_argument("--masks", type=Path, default=None, help="also time every mask of this folder")
    args = parser.parse_args()
    print(json.dumps(benchmark(args.sizes, args.density, args.masks), indent=2))


if __name__ == "__main__":
    main()
