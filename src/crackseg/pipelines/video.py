"""Video files through the gated model, frame by frame: the stream the gate was built for.

Frames are decoded by PyAV (FFmpeg) one at a time in a background thread, never the whole video in memory, and
go through the same tiled gate as photos, so crack-free frames cost only the encoder. Each video gets a folder
with `frames.csv` (a row per frame processed, appended as it is done), a mask and an overlay per cracked frame,
`segments.csv` (cracked stretches as time ranges) and `video.json` (totals and speed).
"""
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Iterable, Iterator, List, Optional, Sequence, Set, Tuple

import torch

from crackseg.background import in_background
from crackseg.errors import DatasetError
from crackseg.files.images import image_files, load_image
from crackseg.files.writing import write_json
from crackseg.inference.predictor import Predictor
from crackseg.outputs.measurements import Measurements
from crackseg.outputs.tables import append_rows, read_rows, write_csv
from crackseg.pipelines.results import MEASURED, remeasure, result_fields, write_result

FRAME_FIELDS = ("frame", "time_s", "cracked", "crack_share", "tiles_decoded", "tiles_total", "max_tile_prob",
                "mask", "overlay") + MEASURED


@dataclass
class Frame:
    """One frame read: its index, time (s) and image (3, H, W) uint8, or None and why it could not be read."""

    index: int  # position in the video, 0-based
    time: float  # seconds from the start
    image: Optional[torch.Tensor]  # uint8 (3, H, W); None for a frame file that cannot be read
    error: str = ""  # why not, for such a file


FOLDER_FRAME_RATE = 25.0  # frames a second of a folder of numbered frames, for timestamps


def frame_files(folder: Path) -> List[Path]:
    """The image files of a folder of numbered frames, in name order."""
    return image_files(Path(folder))


def frame_count(path: Path) -> Tuple[int, float]:
    """The number of frames a video (or a folder of numbered frames) declares (0 if unknown) and its rate."""
    if Path(path).is_dir():
        return len(frame_files(path)), FOLDER_FRAME_RATE
    import av  # PyAV loads FFmpeg: only when a video is read

    try:
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            return declared_frames(stream), float(stream.average_rate or 0)
    except (av.FFmpegError, IndexError, OSError) as error:
        raise DatasetError(f"{path}: cannot read video ({error})") from None


def declared_frames(stream: Any) -> int:
    """The frames a video stream declares: its frame count, else its duration times its frame rate (Matroska
    and WebM store a duration, no count); 0 if it declares neither. Rounded down: a stream is called short only
    when whole frames are missing."""
    if stream.frames:
        return int(stream.frames)
    if stream.duration:
        seconds = float(stream.duration * stream.time_base)
    else:
        try:  # Matroska's tag of the track, HH:MM:SS.fraction
            hours, minutes, rest = stream.metadata.get("DURATION", "").split(":")
            seconds = int(hours) * 3600 + int(minutes) * 60 + float(rest)
        except ValueError:
            return 0
    return int(seconds * float(stream.average_rate or 0) + 1e-6)


def read_frames(path: Path, every: int = 1, fps: Optional[float] = None, skip: Set[int] = frozenset()
                ) -> Iterator[Frame]:
    """Decode a video's frames in order and yield every `every`-th one, or `fps` frames a second of video time,
    except those in `skip`. Frames not taken are decoded (the codec needs them) but never converted. A stream
    that ends before the frames it declares (or has none) raises DatasetError after its last frame. A folder is
    read as numbered frames (name order) at FOLDER_FRAME_RATE; a file of it that cannot be read is a Frame with
    no image and the error, and the frames after it follow."""
    if Path(path).is_dir():
        timed = ((file, index / FOLDER_FRAME_RATE) for index, file in enumerate(frame_files(path)))
        for index, (file, seconds) in _taken(timed, every, fps):
            if index not in skip:
                try:
                    image, error = load_image(file), ""
                except DatasetError as problem:
                    image, error = None, str(problem)
                yield Frame(index, round(seconds, 4), image, error)
        return
    import av

    try:
        container = av.open(str(path))
        stream = container.streams.video[0]
    except (av.FFmpegError, IndexError, OSError) as error:
        raise DatasetError(f"{path}: cannot read video ({error})") from None
    stream.thread_type = "AUTO"
    rate = float(stream.average_rate or 25)
    declared, decoded = declared_frames(stream), 0

    def timed() -> Iterator[Tuple[Any, float]]:
        nonlocal decoded
        for frame in container.decode(stream):
            yield frame, float(frame.time) if frame.time is not None else decoded / rate
            decoded += 1

    with container:
        try:
            for index, (frame, seconds) in _taken(timed(), every, fps):
                if index not in skip:
                    image = torch.from_numpy(frame.to_ndarray(format="rgb24")).permute(2, 0, 1)
                    yield Frame(index, round(seconds, 4), image)
        except av.FFmpegError as error:  # `decoded` counts the good frames: the broken one is the next
            raise DatasetError(f"{path}: video broken at frame {decoded}, after {decoded} good ones ({error})"
                               ) from None
    if not decoded:
        raise DatasetError(f"{path}: no frame could be decoded (a truncated or empty video?)")
    if decoded < declared:
        raise DatasetError(f"{path}: the stream ended after {decoded} of the {declared} frames it declares (a "
                           "truncated file?)")


def _taken(timed: Iterable[Tuple[Any, float]], every: int, fps: Optional[float]) -> Iterator[Tuple[int, Any]]:
    """(index, item) of the items (with their times in s) to run: every `every`-th, or `fps` a second from the
    first item's time (a stream's first timestamp need not be 0)."""
    next_time: Optional[float] = None
    for index, (item, seconds) in enumerate(timed):
        if fps:
            next_time = seconds if next_time is None else next_time
            take = seconds + 1e-6 >= next_time
            while next_time <= seconds + 1e-6:
                next_time += 1.0 / fps
        else:
            take = index % every == 0
        if take:
            yield index, (item, seconds)


def segments(rows: Sequence[Dict[str, Any]], min_gap: float) -> List[Dict[str, Any]]:
    """Cracked stretches: consecutive cracked frames (in time) merged while less than `min_gap` s apart."""
    found: List[Dict[str, Any]] = []
    for row in sorted(rows, key=lambda r: float(r["time_s"])):
        if not int(row["cracked"]):
            continue
        moment = float(row["time_s"])
        if found and moment - found[-1]["end_s"] <= min_gap:
            found[-1].update(end_s=moment, frames=found[-1]["frames"] + 1)
        else:
            found.append({"start_s": moment, "end_s": moment, "frames": 1})
    return found


def _done_frames(frames_csv: Path, out_dir: Path) -> Dict[int, Dict[str, Any]]:
    """The rows of frames an earlier run finished (with their mask and overlay, if cracked), by frame; frames.csv
    is rewritten without the others, which run again (or they would repeat)."""
    done = [row for row in read_rows(frames_csv)
            if all((out_dir / row[key]).is_file() for key in ("mask", "overlay") if row[key])]
    rows = {int(row["frame"]): row for row in done}
    if frames_csv.is_file():
        write_csv(frames_csv, FRAME_FIELDS, [rows[index] for index in sorted(rows)], ignore_extra=True)
    return rows


def predict_video(predictor: Predictor, path: Path, out_dir: Path, every: int = 1, fps: Optional[float] = None,
                  min_gap: Optional[float] = None, skip_existing: bool = False,
                  measurements: Optional[Measurements] = None, progress: Any = None) -> Dict[str, Any]:
    """Run the gated model over a video's frames into `out_dir` (its own folder); returns the video's summary.
    With `skip_existing`, frames already in frames.csv (with their mask and overlay, if cracked) are not run
    again, and with `measurements` (into `out_dir` too: each video has its own tables) their masks are measured
    again from the files. A frame file that cannot be read costs that frame only, and a stream that breaks or
    ends early keeps the frames before: both are listed in the summary's "errors". A Ctrl-C leaves frames.csv,
    masks and overlays complete for the frames done, and the summary of those."""
    out_dir.mkdir(parents=True, exist_ok=True)
    frames_csv = out_dir / "frames.csv"
    rows = _done_frames(frames_csv, out_dir) if skip_existing else {}
    if not skip_existing:
        frames_csv.unlink(missing_ok=True)
    if measurements is not None:
        for index, row in sorted(rows.items()):
            if row["mask"]:
                remeasure(measurements, out_dir, f"{path}#{index}", frame_name(index), row)
    total, rate = frame_count(path)
    if progress is not None and total and not fps:
        progress.total = -(-total // every)
        progress.refresh()
    gap = min_gap if min_gap is not None else 2.0 / (fps or (rate / every if rate else 1.0))
    started = time.perf_counter()
    processed = 0
    errors: List[str] = []

    def readable() -> Iterator[Tuple[Frame, torch.Tensor]]:
        try:
            for frame in in_background(read_frames(path, every, fps, skip=set(rows))):
                if frame.image is None:
                    errors.append(frame.error)
                else:
                    yield frame, frame.image
        except DatasetError as error:  # the frames read before it still finish
            errors.append(str(error))

    try:
        for result in predictor.tiled(readable()):
            frame = result.key
            row: Dict[str, Any] = {"frame": frame.index, "time_s": frame.time, **result_fields(result)}
            if result.cracked:
                write_result(out_dir, frame_name(frame.index), f"{path}#{frame.index}", frame.image, result,
                             row, measurements)
            append_rows(frames_csv, FRAME_FIELDS, [row])
            rows[frame.index] = row
            processed += 1
            if progress is not None:
                progress.update()
                progress.set_postfix_str(f"t={frame.time:.1f}s")
    finally:
        seconds = time.perf_counter() - started
        summary = write_video_summary(path, out_dir, list(rows.values()), gap, processed, seconds, total, every,
                                      fps, errors)
    return summary


def frame_name(index: int) -> str:
    """The outputs' name of a video's frame: frame_0000012 for frame 12."""
    return f"frame_{index:07d}"


def write_video_summary(path: Path, out_dir: Path, rows: List[Dict[str, Any]], gap: float, processed: int,
                  seconds: float, total: int, every: int, fps: Optional[float], errors: Sequence[str] = ()
                  ) -> Dict[str, Any]:
    """segments.csv and video.json of the frames done so far (and the errors: frames lost, a stream cut
    short); returns the summary."""
    found = segments(rows, gap)
    write_csv(out_dir / "segments.csv", ("start_s", "end_s", "frames"), found)
    tiles = sum(int(row["tiles_total"]) for row in rows)
    summary = {
        "video": str(path), "frames_in_video": total, "every": every, "fps_sampled": fps,
        "frames_processed": len(rows), "cracked_frames": sum(int(row["cracked"]) for row in rows),
        "decoded_share": round(sum(int(row["tiles_decoded"]) for row in rows) / tiles, 6) if tiles else 0.0,
        "segments": found, "min_gap_s": round(gap, 4),
        "frames_per_second": round(processed / seconds, 3) if seconds and processed else None,
        "errors": list(errors)}
    write_json(out_dir / "video.json", summary)
    return summary
