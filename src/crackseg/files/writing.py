"""Writing files so that a kill, a full disk or a power loss leaves the old file or the new one, never part of one.

Every output of crackseg is written through `atomic`: to `NAME.tmp` beside the target, then renamed over it.
`durable=True` also flushes the file and the rename to the disk (checkpoints and the shipped weights, which a
crash must not lose); the other outputs can be written again by running again.
"""
import errno
import json
import os
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any, Iterator, Optional

import numpy as np

DISK_FULL = (errno.ENOSPC, errno.EDQUOT)  # write errors that stop a run: every later file would fail too


@contextmanager
def atomic(path: os.PathLike, mode: str = "w", durable: bool = False, **options: Any) -> Iterator[IO]:
    """Open a temporary file beside `path` for writing (`mode` "w" or "wb", `options` as for `open`); when the
    block ends without an error it replaces `path`, otherwise it is removed and `path` is untouched.

    Args:
        path: the file to write.
        mode: "w" (text) or "wb" (bytes).
        durable: flush the file and the folder entry to the disk before returning.
    """
    path = Path(path)
    temporary = path.with_name(path.name + ".tmp")
    try:
        with open(temporary, mode, **options) as handle:
            yield handle
            if durable:
                handle.flush()
                os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    if durable:
        fsync_folder(path.parent)


def write_text(path: os.PathLike, text: str, durable: bool = False) -> Path:
    """Write UTF-8 text atomically; returns the path."""
    with atomic(path, "w", durable, encoding="utf-8") as handle:
        handle.write(text)
    return Path(path)


def write_json(path: os.PathLike, value: Any, indent: Optional[int] = 2) -> Path:
    """Write a value as JSON atomically (NumPy and torch scalars as numbers, paths as text); returns the path."""
    return write_text(path, json.dumps(value, indent=indent, default=_jsonable) + "\n")


def _jsonable(value: Any) -> Any:
    if isinstance(value, np.generic) or (hasattr(value, "item") and getattr(value, "ndim", None) == 0):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"cannot write {type(value).__name__} to JSON")


def fsync_folder(folder: Path) -> None:
    """Flush a folder's entries (a rename) to the disk, where the platform allows it."""
    if os.name == "nt":  # Windows cannot open a folder for fsync; its renames are journaled
        return
    descriptor = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
