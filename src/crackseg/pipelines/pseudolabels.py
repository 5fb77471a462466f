"""Pseudo-labels: photos known to show a crack, but without masks (e.g. Ozgenel's crack folder), labelled with a
teacher model's masks, so that a successor trained with many hard negatives keeps finding the cracks the teacher
finds (docs/MODEL.md).

A source is a folder of cracked photos, split as folders of crack-free photos are (`split_negatives`: every 5th
file is valid), so the held-out fifth that scores the gate is never trained on. Each photo the teacher calls
cracked, by `predict`'s rule (`TiledResult.cracked`), is written with the teacher's mask to
OUT/{train,valid}/{images,masks} (every 5th written to valid, for stage 1's validation loss). A photo the teacher
does not call cracked is left out and counted: its empty mask would teach a cracked photo as crack-free.
"""
from pathlib import Path
from typing import Any, Dict, List, Sequence

from crackseg.background import prefetch
from crackseg.data.datasets import photos_of_split
from crackseg.errors import DatasetError
from crackseg.files.images import load_image
from crackseg.inference.predictor import Predictor
from crackseg.pipelines.negatives import write_example


def label_all(teacher: Predictor, sources: Sequence[Path], out: Path, split: str = "train",
              progress: Any = None) -> List[Dict[str, Any]]:
    """Label each source's photos with the teacher's masks into one `out` (names start with the source folder's
    name); per source: photos, how many were written and the share of their pixels labelled crack."""
    names = [Path(source).name for source in sources]
    if len(set(names)) < len(names):
        raise DatasetError(f"sources with the same folder name label into one {out}: {', '.join(map(str, sources))}")
    plans = [(Path(source), photos_of_split(Path(source), split)) for source in sources]  # every folder checked first
    written, results = 0, []
    for source, photos in plans:
        loaded: Dict[int, Any] = {}

        def images(photos=photos, loaded=loaded):
            for index, value in prefetch(lambda index: load_image(photos[index]), range(len(photos))):
                if isinstance(value, Exception):
                    raise value if isinstance(value, DatasetError) else DatasetError(f"{photos[index]}: {value}")
                loaded[index] = value
                yield index, value

        labelled = crack_pixels = pixels = 0
        for result in teacher.tiled(images()):
            image = loaded.pop(result.key)
            if result.cracked:
                binary = result.binary.numpy()
                write_example(out, written, f"{source.name}_{photos[result.key].stem}", image, binary)
                written += 1
                labelled += 1
                crack_pixels += int(binary.sum())
                pixels += binary.size
            if progress is not None:
                progress.update()
        results.append({"source": str(source), "split": split, "photos": len(photos), "labelled": labelled,
                        "left_out": len(photos) - labelled,
                        "share_of_pixels_labelled_crack": round(crack_pixels / pixels, 6) if pixels else None})
    return results
