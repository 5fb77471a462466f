"""Pseudo-labels: photos known to show a crack, but without masks (e.g. Ozgenel's crack folder), labelled with a
teacher model's masks, so that a successor trained with many hard negatives keeps finding the cracks the teacher
finds (docs/MODEL.md).

A source is a folder of cracked photos, split as folders of crack-free photos are (`split_negatives`: every 5th
file is valid), so the held-out fifth that scores the gate is never trained on. Each photo the teacher calls
cracked, by `predict`'s rule (`TiledResult.cracked`), is written with the teacher's mask to
OUT/{train,valid}/{images,masks} (every 5th written to valid, for stage 1's validation loss). A photo the teacher
does not call cracked is left out and counted: its empty mask would teach a cracked photo as crack-free.
"""
import sys
from pathlib import Path
from typing import Any, Dict, List, Sequence

from crackseg.background import prefetch
from crackseg.data.datasets import photos_of_split
from crackseg.data.writer import data_root
from crackseg.files.images import load_image
from crackseg.inference.predictor import Predictor


def label_all(teacher: Predictor, sources: Sequence[Path], out: Path, split: str = "train",
              progress: Any = None) -> List[Dict[str, Any]]:
    """Label each source's photos with the teacher's masks into one `out` (an empty or missing folder, written only
    if the whole run succeeds; names start with the source folder's name); per source: photos, how many were
    written, left out, and unreadable (skipped with a note on stderr, as `predict` does), and the share of the
    written pixels labelled crack."""
    plans = [(Path(source), photos_of_split(Path(source), split)) for source in sources]  # every folder checked first
    results = []
    with data_root(out, "pseudolabel") as writer:
        for source, photos in plans:
            loaded: Dict[int, Any] = {}
            unreadable: List[str] = []

            def images(photos=photos, loaded=loaded, unreadable=unreadable):
                for index, value in prefetch(lambda index: load_image(photos[index]), range(len(photos))):
                    if isinstance(value, Exception):
                        unreadable.append(str(photos[index]))
                        (progress.write if progress is not None else print)(f"skipped: {value}", file=sys.stderr)
                        if progress is not None:
                            progress.update()
                        continue
                    loaded[index] = value
                    yield index, value

            labelled = crack_pixels = pixels = 0
            for result in teacher.tiled(images()):
                image = loaded.pop(result.key)
                if result.cracked:
                    binary = result.binary.numpy()
                    writer.write(writer.written, f"{source.name}_{photos[result.key].stem}", image, binary)
                    labelled += 1
                    crack_pixels += int(binary.sum())
                    pixels += binary.size
                if progress is not None:
                    progress.update()
            results.append({"source": str(source), "split": split, "photos": len(photos), "labelled": labelled,
                            "left_out": len(photos) - labelled - len(unreadable), "unreadable": len(unreadable),
                            "share_of_pixels_labelled_crack": round(crack_pixels / pixels, 6) if pixels else None})
    return results
