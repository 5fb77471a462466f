"""Training examples written as one more data root: OUT/{train,valid}/{images,masks}/NAME.png (masks 0/255).

Hard-negative mining (`crackseg negatives --mine`) and pseudo-labels (`crackseg pseudolabel`) write the photos of
many source folders into one root, named after the source folder and the photo. Such names can repeat (folder
`crack` with photo `x_1.png` and folder `crack_x` with photo `1.png`; `A.png` and `a.png`, one file on a
case-insensitive disk): a repeated name gets a `-2`, `-3`, ... suffix instead of overwriting an example.

The root is built in a hidden folder beside OUT and renamed to OUT when the run ends without an error, so that a
failed or interrupted run leaves no half-written root that the next run would refuse or train on.
"""
import os
import shutil
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Set

import numpy as np
import torch
from PIL import Image

from crackseg.errors import DatasetError
from crackseg.files.writing import atomic

VALID_EVERY = 5  # of the examples of a source, every 5th goes to valid


class DataRootWriter:
    """Writes examples into `root` (see the module's docstring); `written` counts them."""

    def __init__(self, root: Path):
        self.root = Path(root)
        self.written = 0
        self._names: Set[str] = set()  # casefolded: unique on case-insensitive disks too

    def write(self, index: int, name: str, image: torch.Tensor, mask: np.ndarray) -> str:
        """The `index`-th example of its source (every 5th to valid): `image` (3, H, W) uint8 and `mask` (H, W)
        bool as NAME.png, NAME made unique; returns the name written."""
        split = "valid" if index % VALID_EVERY == VALID_EVERY - 1 else "train"
        unique, number = name, 1
        while unique.casefold() in self._names:
            number += 1
            unique = f"{name}-{number}"
        self._names.add(unique.casefold())
        for folder, array in (("images", image.permute(1, 2, 0).numpy()), ("masks", mask.astype(np.uint8) * 255)):
            path = self.root / split / folder / f"{unique}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            with atomic(path, "wb") as handle:
                Image.fromarray(array).save(handle, format="PNG")
        self.written += 1
        return unique


def check_empty(out: Path, flag: str) -> None:
    """Refuse an `out` that is a file or a folder with anything in it (`flag` names the option, in the error)."""
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise DatasetError(f"{out}: not an empty folder; {flag} writes only into an empty or missing one")


@contextmanager
def data_root(out: Path, flag: str) -> Iterator[DataRootWriter]:
    """A `DataRootWriter` building the root beside `out`, renamed to `out` (which must be empty or missing) when
    the block ends without an error, removed otherwise. A root with no examples leaves `out` as it was."""
    out = Path(out).resolve()  # "." has no name to put beside it
    check_empty(out, flag)
    staging = out.with_name(f".{out.name}.partial")
    shutil.rmtree(staging, ignore_errors=True)  # left by a run that was killed
    writer = DataRootWriter(staging)
    try:
        yield writer
        if writer.written:
            if out.is_dir():
                out.rmdir()  # empty: checked above
            out.parent.mkdir(parents=True, exist_ok=True)
            os.replace(staging, out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
