"""CSV tables: written atomically, appended row by row (a kill keeps the rows written), read back complete."""
import csv
import io
import os
from pathlib import Path
from typing import Any, Dict, List, Sequence

from crackseg.files.writing import atomic


def read_rows(path: Path) -> List[Dict[str, str]]:
    """The complete rows of a CSV file written by `append_rows` (a row cut short by a kill is dropped); none if
    there is no file."""
    if not path.is_file():
        return []
    with open(path, newline="", encoding="utf-8") as handle:  # as every table is written
        text = handle.read()
    complete = text[:text.rfind("\n") + 1]  # a last row without its line end was cut inside a field
    return [row for row in csv.DictReader(io.StringIO(complete)) if None not in row.values()]


def append_rows(path: Path, fields: Sequence[str], rows: Sequence[Dict[str, Any]]) -> None:
    """Append rows to a CSV file (with a header if it is new) and flush them, so a kill keeps them. A last row
    that a kill cut short (no line end) is dropped first: the new rows would otherwise continue it."""
    with open(path, "a+b") as raw:
        end = raw.seek(0, os.SEEK_END)
        if end:
            raw.seek(end - 1)
            if raw.read(1) != b"\n":
                raw.seek(0)
                end = raw.truncate(raw.read().rfind(b"\n") + 1)
        with io.TextIOWrapper(raw, newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=list(fields))
            if end == 0:
                writer.writeheader()
            writer.writerows(rows)


def write_csv(path: Path, fields: Sequence[str], rows: Sequence[Dict[str, Any]], ignore_extra: bool = False) -> None:
    """Write a CSV file atomically: a kill leaves the old file or the new one. With `ignore_extra`, keys of a row
    that are not among `fields` are left out instead of being an error."""
    with atomic(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(fields), extrasaction="ignore" if ignore_extra else "raise")
        writer.writeheader()
        writer.writerows(rows)


def printable(path: Path) -> str:
    """A path as text that prints and writes anywhere: bytes of its name that are not UTF-8 as \\xNN escapes."""
    return os.fsencode(path).decode("utf-8", "backslashreplace")
