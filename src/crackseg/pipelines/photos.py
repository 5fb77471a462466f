"""`crackseg predict`: gated inference over files, folders and globs, writing masks, overlays and a summary."""
import csv
import functools
import glob
import itertools
import logging
import os
import sys
import tempfile
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple

import torch

from crackseg.background import prefetch
from crackseg.errors import ConfigError, DatasetError
from crackseg.files.images import DEFAULT_MAX_PIXELS, IMAGE_EXTENSIONS, VIDEO_EXTENSIONS, extension, load_image
from crackseg.files.writing import DISK_FULL
from crackseg.inference.predictor import Predictor
from crackseg.outputs.measurements import Measurements
from crackseg.outputs.tables import append_rows, printable, read_rows, write_csv
from crackseg.pipelines.results import remeasure, result_fields, write_result

SUMMARY_FIELDS = ("file", "status", "cracked", "max_tile_prob", "crack_share", "tiles_decoded", "tiles_total",
                  "width", "height", "mask", "overlay", "cracks", "total_length_px", "max_width_px")
MEDIA_EXTENSIONS = IMAGE_EXTENSIONS + VIDEO_EXTENSIONS  # what folders are searched for
log = logging.getLogger(__name__)


def folder_media(folder: Path) -> Tuple[List[Path], List[str]]:
    """The image and video files under a folder, recursively, in path order (a file named only '.png' is one),
    and the problems: subfolders that cannot be listed, links to nothing. The other files skipped are named in
    a note on the console (the "crackseg" logger), not silently passed over."""
    found: List[Path] = []
    problems: List[str] = []
    skipped: List[str] = []

    def unlisted(error: OSError) -> None:
        problems.append(f"{printable(error.filename)}: cannot list this folder ({error.strerror}): its files are "
                        "skipped")

    seen = set()  # (device, inode) of the folders walked: a link back up (ln -s . loop) is walked once
    for root, folders, files in os.walk(folder, onerror=unlisted, followlinks=True):
        status = os.stat(root)
        identity = (status.st_dev, status.st_ino)
        if identity in seen:
            folders.clear()
            log.info(f"note: {printable(root)}: a link to a folder already searched: skipped")
            continue
        seen.add(identity)
        folders.sort()
        for name in files:
            path = Path(root) / name
            if extension(path) not in MEDIA_EXTENSIONS:
                skipped.append(printable(path.relative_to(folder)))
            elif not path.is_file():
                problems.append(f"{printable(path)}: a link to nothing: skipped")
            else:
                found.append(path)
    if skipped:
        shown = ", ".join(sorted(skipped)[:5]) + (", ..." if len(skipped) > 5 else "")
        log.info(f"note: {printable(folder)}: skipped {len(skipped)} file(s) that are not images or videos crackseg "
                 f"reads ({', '.join(MEDIA_EXTENSIONS)}): {shown}")
    return sorted(found), problems


def expand_inputs(inputs: Sequence[str], out: Optional[Path] = None, frame_folders: bool = False
                  ) -> Tuple[Dict[Path, str], List[str]]:
    """Files, folders (searched recursively for images and videos) and glob patterns -> ({path: output name},
    problems).

    A file's output name is its path from the folder given (or from the glob's folder part), else its file name,
    extension kept (`coll.png`, `sub/coll.jpg`): it depends only on the file and how it was given, never on which
    other files exist, so it is the same on every run and in every shard. Two inputs that would share a name are
    both refused, as are file names that are not UTF-8 (the tables could not hold them). Files inside `out` are
    never inputs: they are outputs of an earlier run, and outputs must not overwrite inputs. With
    `frame_folders`, a folder is one input (a video of numbered frames) named after the folder itself."""
    named: Dict[Path, str] = {}
    problems: List[str] = []
    inside_out = _inside(out)
    for given in inputs:
        path = Path(given)
        if path.is_dir() and frame_folders:
            found = [(path, path.resolve().name)]
        elif path.is_dir():
            media, unread = folder_media(path)
            problems += unread
            found = [(p, p.relative_to(path).as_posix()) for p in media]
            if not found and not unread:
                problems.append(f"{given}: no images or videos ({', '.join(MEDIA_EXTENSIONS)}) in this folder")
        elif path.is_file():
            found = [(path, path.name)]
        elif glob.has_magic(given):
            base = Path(*itertools.takewhile(lambda part: not glob.has_magic(part), path.parts))
            found = [(Path(p), Path(p).relative_to(base).as_posix())
                     for p in sorted(glob.glob(given, recursive=True)) if Path(p).is_file()]
            if not found:
                problems.append(f"{given}: no file matches this pattern")
        else:
            problems.append(f"{given}: no such file or folder")
            continue
        outside = [(p, name) for p, name in found if not inside_out(p)]
        if found and not outside:
            problems.append(f"{given}: inside --out {out}, whose files are outputs, never inputs")
        for p, name in outside:
            named.setdefault(p, name)
    for path in [path for path in named if printable(path) != str(path)]:
        problems.append(f"{printable(path)}: its file name is not UTF-8, so the tables cannot hold it; rename it")
        del named[path]
    sharing: Dict[str, List[Path]] = {}
    for path, name in named.items():
        sharing.setdefault(name, []).append(path)
    for name, paths in sharing.items():
        if len(paths) > 1:
            for path in paths:
                others = ", ".join(str(other) for other in paths if other != path)
                problems.append(f"{path}: its outputs would be named {name}, as those of {others}; give them in "
                                "separate runs with their own --out")
                del named[path]
    return named, problems


def _inside(folder: Optional[Path]) -> Callable[[Path], bool]:
    """Whether a path is inside `folder` (or is it), symbolic links resolved; never, without a folder."""
    if folder is None:
        return lambda path: False
    resolved = folder.resolve()
    parents = functools.lru_cache(maxsize=None)(Path.resolve)  # a folder's files share one look-up

    return lambda path: (parents(path.parent) / path.name).is_relative_to(resolved)


def output_folder(given: str) -> Path:
    """The --out folder, made if missing and tried with a file, so that a file, a folder below a file or a
    read-only place is one line before any model loads, not a traceback after the work."""
    out = Path(given)
    if out.is_file():
        raise ConfigError(f"--out {out}: a file, not a folder")
    try:
        out.mkdir(parents=True, exist_ok=True)
        tempfile.TemporaryFile(dir=out).close()
    except OSError as error:
        raise ConfigError(f"--out {out}: cannot write the outputs there ({error.strerror})") from None
    return out


def shard(paths: Sequence[Path], index: int, count: int) -> List[Path]:
    """Shard `index` of `count` (0-based): every count-th of the sorted paths, starting at `index`. The shards
    together hold every path exactly once, whatever machine computes them."""
    if not 0 <= index < count:
        raise ValueError(f"--shard {index}/{count}: the index must be in 0..{count - 1}")
    return sorted(paths)[index::count]


def shard_suffix(shard_spec: Optional[Tuple[int, int]] = None) -> str:
    """What a shard's tables carry after their names: "-I-of-N" ("" unsharded)."""
    return "" if shard_spec is None else f"-{shard_spec[0]}-of-{shard_spec[1]}"


def summary_name(shard_spec: Optional[Tuple[int, int]] = None) -> str:
    """summary.csv, or summary-I-of-N.csv for one shard of several (joined by `merge_summaries`)."""
    return f"summary{shard_suffix(shard_spec)}.csv"


def read_summary(path: Path) -> List[Dict[str, str]]:
    """The complete rows of a summary file."""
    return [row for row in read_rows(path) if row["status"]]


def write_summary(path: Path, rows: Sequence[Dict[str, Any]]) -> None:
    """Write a summary CSV atomically."""
    write_csv(path, SUMMARY_FIELDS, rows)


def summary_parts(out_dir: Path) -> List[Path]:
    """The shards' summary-I-of-N.csv files of a folder."""
    return sorted(out_dir.glob("summary-*-of-*.csv"))


def merge_summaries(out_dir: Path) -> Tuple[Path, int]:
    """Join the shards' summary-I-of-N.csv files of a folder into summary.csv (sorted by file), and their
    cracks-I-of-N.csv and images-I-of-N.csv into cracks.csv and images.csv; returns the summary's path and row
    count. All N shards must be there, and no file may appear twice."""
    parts = summary_parts(out_dir)
    if not parts:
        raise FileNotFoundError(f"{out_dir}: no summary-I-of-N.csv files (nor raster parts) to merge")
    counts = {part.stem.rsplit("-of-", 1)[1] for part in parts}
    if len(counts) != 1:
        raise DatasetError(f"{out_dir}: summaries of different shard counts ({', '.join(sorted(counts))})")
    count = int(counts.pop())
    missing = sorted(set(range(count)) - {int(part.stem.split("-")[1]) for part in parts})
    if missing:
        raise DatasetError(f"{out_dir}: shard(s) {', '.join(map(str, missing))} of {count} have no summary yet")
    rows = [row for part in parts for row in read_summary(part)]
    files = [row["file"] for row in rows]
    if len(set(files)) != len(files):
        raise DatasetError(f"{out_dir}: some files appear in several shard summaries")
    path = out_dir / "summary.csv"
    write_summary(path, sorted(rows, key=lambda row: row["file"]))
    for table in ("cracks", "images"):  # the shards' measurement tables (--measure), if they wrote them
        shards = {int(part.stem.split("-")[1]): part for part in out_dir.glob(f"{table}-*-of-{count}.csv")}
        if not shards:
            continue
        absent = sorted(set(range(count)) - set(shards))
        if absent:
            raise DatasetError(f"{out_dir}: shard(s) {', '.join(map(str, absent))} of {count} have no {table}-I-of-"
                               f"{count}.csv (run them with --measure, as the others)")
        measured = [row for index in sorted(shards) for row in read_rows(shards[index])]
        headers = [_header(shards[index]) for index in sorted(shards)]
        write_csv(out_dir / f"{table}.csv", list(dict.fromkeys(key for header in headers for key in header)),
                  sorted(measured, key=lambda row: row["file"]))  # stable: a photo's cracks keep their order
    return path, len(rows)


def _header(path: Path) -> List[str]:
    """The field names of a CSV file (its first row)."""
    with path.open(newline="", encoding="utf-8") as handle:
        return next(csv.reader(handle), [])


def unwritable(error: OSError, path: Path, out_dir: Path) -> str:
    """The one-line problem of an input whose outputs cannot be written (its name too long, say); a full disk is
    raised again instead, since it stops the run: every later file would fail too."""
    if error.errno in DISK_FULL:
        raise error
    return f"{path}: cannot write its outputs in {out_dir} ({error.strerror})"


def _done(summary_path: Path, out_dir: Path) -> Dict[str, Dict[str, Any]]:
    """The summary rows of images an earlier run finished (status ok, mask and overlay on disk), by file."""
    return {row["file"]: row for row in read_summary(summary_path) if row["status"] == "ok"
            and (out_dir / row["mask"]).is_file() and (out_dir / row["overlay"]).is_file()}


def predict_files(predictor: Predictor, paths: Sequence[Path], out_dir: Path, progress: Any = None, *,
                  names: Sequence[str], summary: str = "summary.csv", skip_existing: bool = False,
                  max_pixels: Optional[int] = DEFAULT_MAX_PIXELS,
                  measurements: Optional[Measurements] = None) -> List[Dict[str, Any]]:
    """Run the gated model over image files; write `<name>_mask.png` (0/255) and `<name>_overlay.png` per image
    (`names` as from `expand_inputs`; one with folders gets them in out_dir) and the summary (a row per image,
    appended as each image is done, then sorted). Files that cannot be read, or whose outputs cannot be written
    (a name too long), get an error row and do not stop the others; a full disk stops the run. With
    `skip_existing`, images with an "ok" row in the summary and their outputs on disk are not run again (with
    `measurements`, their masks are measured again from the files). With `measurements`, every mask's cracks are
    measured too. Returns the rows, in input order."""
    out_dir.mkdir(parents=True, exist_ok=True)
    summary_path = out_dir / summary
    done = _done(summary_path, out_dir) if skip_existing else {}
    todo = [index for index, path in enumerate(paths) if str(path) not in done]
    rows = {index: done[str(path)] for index, path in enumerate(paths) if str(path) in done}
    if progress is not None:
        progress.update(len(rows))
    if measurements is not None:
        for index in sorted(rows):
            remeasure(measurements, out_dir, str(paths[index]), names[index], rows[index],
                      load_image(paths[index], max_pixels))
    images: Dict[int, torch.Tensor] = {}
    write_summary(summary_path, [rows[index] for index in sorted(rows)])

    def record(index: int, row: Dict[str, Any]) -> None:
        rows[index] = row
        append_rows(summary_path, SUMMARY_FIELDS, [row])  # as images finish: a kill keeps them
        if progress is not None:
            progress.update()

    def fail(index: int, problem: str) -> None:
        if progress is not None:
            progress.write(f"skipped: {problem}", file=sys.stderr)
        record(index, {"file": str(paths[index]), "status": f"error: {problem}"})

    def readable() -> Iterator[Tuple[int, torch.Tensor]]:
        for index, image in prefetch(lambda i: load_image(paths[i], max_pixels), todo):
            if isinstance(image, Exception):
                fail(index, str(image))
                continue
            images[index] = image
            yield index, image

    for result in predictor.tiled(readable()):
        image = images.pop(result.key)
        name = names[result.key]
        row = {"file": str(paths[result.key]), "status": "ok", **result_fields(result),
               "width": image.shape[2], "height": image.shape[1]}
        try:
            (out_dir / name).parent.mkdir(parents=True, exist_ok=True)
            write_result(out_dir, name, row["file"], image, result, row, measurements)
        except OSError as error:
            fail(result.key, unwritable(error, paths[result.key], out_dir))
            continue
        record(result.key, row)
    ordered = [rows[index] for index in sorted(rows)]
    write_summary(summary_path, ordered)
    return ordered
