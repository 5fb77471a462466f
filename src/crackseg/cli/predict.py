"""`crackseg predict`."""
import argparse
import sys
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple

from tqdm import tqdm

from crackseg.analysis.units import length_px
from crackseg.cli.common import (
    grading,
    join_gap_px,
    measure_arguments,
    model_arguments,
    predictor_from_args,
    read_scales,
    summary_model,
)
from crackseg.cli.rasters import predict_one_raster
from crackseg.errors import ConfigError, DatasetError
from crackseg.files.geo import is_georeferenced
from crackseg.files.images import DEFAULT_MAX_PIXELS, VIDEO_EXTENSIONS
from crackseg.inference.predictor import DEFAULT_MIN_LENGTH, Predictor
from crackseg.outputs.measurements import Measurements
from crackseg.outputs.report import write_report
from crackseg.pipelines.photos import (
    expand_inputs,
    output_folder,
    predict_files,
    read_summary,
    shard,
    shard_suffix,
    summary_name,
    unwritable,
)
from crackseg.pipelines.raster import WINDOW_PX
from crackseg.pipelines.video import predict_video


def add_parser(commands: Any) -> None:
    """Add `crackseg predict` to the subcommands."""
    predict = commands.add_parser(
        "predict", help="find cracks in photos of any size",
        description="Gated inference: each image is cut into overlapping tiles of the training crop, the head "
                    "gates every tile, only tiles gated as cracked are decoded, and the mask is stitched back at "
                    "full resolution. Writes NAME_mask.png (0/255), NAME_overlay.png and summary.csv to --out; with "
                    "--measure the cracks' sizes, with --report report.html. Each video gets a folder with "
                    "frames.csv, segments.csv, video.json and the cracked frames' masks. An unreadable file is "
                    "reported and skipped; the exit code is 1 if any input failed. Without checkpoints it runs "
                    "the shipped model. A GeoTIFF with a coordinate system (an orthomosaic, COG or BigTIFF) is read "
                    "by windows (the gis extra): NAME_mask.tif with its CRS and transform, and its cracks in map "
                    "coordinates as NAME_cracks.geojson, .gpkg and .csv.")
    predict.add_argument("inputs", nargs="+", metavar="INPUT",
                         help="image or video files, folders (recursive) or globs")
    videos = predict.add_argument_group("videos (mp4, avi, mov, mkv, ...; each into its own folder in --out)")
    videos.add_argument("--every", type=int, default=1, help="run every N-th frame [1]")
    videos.add_argument("--fps", type=float, default=None, help="run this many frames a second of video instead")
    videos.add_argument("--frames", action="store_true",
                        help="read each folder given as the numbered frames of one video (name order, 25 frames "
                             "a second), with the outputs of a video")
    videos.add_argument("--min-gap", type=float, default=None,
                        help="cracked frames less than this many seconds apart form one segment [2 frame intervals]")
    predict.add_argument("--out", required=True, help="output folder")
    predict.add_argument("--shard", default=None, metavar="I/N",
                         help="process only shard I of N (0-based) of the sorted inputs, e.g. a Slurm array task or "
                              "a Kubernetes indexed job; writes summary-I-of-N.csv; a georeferenced raster is split "
                              "by windows instead, every N-th into part files (join both with merge-summaries)")
    predict.add_argument("--skip-existing", action="store_true",
                         help="resume: skip images whose outputs and summary row are already in --out, and "
                              "rasters (or their shard's part) already done")
    predict.add_argument("--window", type=int, default=WINDOW_PX,
                         help=f"side of the core windows a georeferenced raster is read in, px; memory grows with "
                              f"its square [{WINDOW_PX}]")
    predict.add_argument("--max-pixels", type=int, default=DEFAULT_MAX_PIXELS,
                         help="refuse larger images (decompression bombs); raise it to read huge photos such as "
                              f"orthomosaics on purpose, 0 for no limit [{DEFAULT_MAX_PIXELS} (~179 MP)]")
    measure_arguments(predict.add_argument_group("measurement (--measure, --report)"))
    predict.add_argument("--measure", action="store_true",
                         help="measure every crack found: cracks.csv, images.csv, cracks.json, NAME_measure.png, and "
                              "NAME_prob.png (crack probabilities x 255, for the confidence of a resumed run)")
    predict.add_argument("--report", action="store_true",
                         help="also write report.html, a self-contained inspection report (implies --measure)")
    model_arguments(predict)
    predict.set_defaults(handler=run)


def parse_shard(text: Optional[str]) -> Optional[Tuple[int, int]]:
    """'I/N' -> (I, N), checked; None stays None."""
    if text is None:
        return None
    try:
        index, count = (int(part) for part in text.split("/"))
    except ValueError:
        raise ConfigError(f"--shard {text}: expected I/N, e.g. 0/4") from None
    if count < 1 or not 0 <= index < count:
        raise ConfigError(f"--shard {text}: I must be in 0..N-1")
    return index, count


def measurement_settings(args: argparse.Namespace) -> Dict[str, Any]:
    """The measurement flags, read and checked once (each folder of results, the images' and each video's, gets
    its own `Measurements` from them); flags that only apply to measured cracks are refused without --measure."""
    measuring = args.measure or args.report
    scale_used = str(args.min_length).lower().endswith("mm") or str(args.join_gap).lower().endswith("mm")
    unused = [flag for flag, value in (("--standard", args.standard), ("--exposure", args.exposure),
                                       ("--scale-csv", args.scale_csv),
                                       ("--mm-per-px", args.mm_per_px and not scale_used)) if value and not measuring]
    if unused:
        raise ConfigError(f"{', '.join(unused)} only apply to measured cracks: add --measure or --report")
    return dict(mm_per_px=args.mm_per_px, min_area=args.min_area,
                min_length=length_px(args.min_length, args.mm_per_px, DEFAULT_MIN_LENGTH),
                standard=grading(args) if measuring else None, axis_deg=args.axis, join_gap=join_gap_px(args),
                scales=read_scales(args.scale_csv))


def check_scales(args: argparse.Namespace, settings: Dict[str, Any], out: Path, names: Dict[Path, str]) -> None:
    """The measurement settings are valid (before the model loads, whatever the inputs), and a standard, which
    grades widths in mm, has the scale of every photo (a georeferenced raster has its own)."""
    checked = Measurements(out, **{**settings, "standard": None})  # refuses a scale <= 0, --min-area < 1
    if not settings["standard"]:
        return
    unscaled = [path for path, name in names.items()
                if not checked.scale_of(str(path), name) and not is_georeferenced(path)]
    if unscaled:
        raise ConfigError(f"--standard {args.standard} needs the scale of every photo: {len(unscaled)} are not in "
                          f"--scale-csv ({', '.join(map(str, unscaled[:3]))}{', ...' if len(unscaled) > 3 else ''});"
                          " add them or give --mm-per-px for the rest")


def predict_one_video(args: argparse.Namespace, predictor: Predictor, video: Path, out: Path, folder: Path,
                      measurements: Optional[Measurements], fail: Callable[[str], None]) -> None:
    """One video (or folder of frames) into its own folder in `out`; its problems go to `fail`."""
    try:
        with tqdm(desc=video.name, unit="frame", disable=None) as progress:  # its total: from the video
            summary = predict_video(predictor, video, folder, args.every, args.fps, args.min_gap,
                                    args.skip_existing, measurements, progress)
    except DatasetError as error:
        fail(str(error))
    except OSError as error:
        fail(unwritable(error, video, out))
    else:
        for problem in summary["errors"]:  # frames lost, a stream cut short
            fail(problem)
        print(f"{video}: {summary['frames_processed']} frames, {summary['cracked_frames']} cracked in "
              f"{len(summary['segments'])} segment(s), {100 * summary['decoded_share']:.1f}% of tiles "
              f"decoded, {summary['frames_per_second']} frames/s; frames.csv, segments.csv, video.json in {folder}")
        if measurements is not None:
            write_measurements(args, predictor, measurements)


def run(args: argparse.Namespace) -> int:
    """`crackseg predict` with its parsed flags; returns the exit code."""
    shard_spec = parse_shard(args.shard)
    if args.every < 1 or (args.fps is not None and args.fps <= 0):
        raise ConfigError("--every must be at least 1 and --fps positive")
    if args.window < 64:
        raise ConfigError("--window must be at least 64 px")
    out = output_folder(args.out)  # before the model loads, as are the measurement settings
    settings = measurement_settings(args)
    names, problems = expand_inputs(args.inputs, out, frame_folders=args.frames)  # all inputs: shards agree
    check_scales(args, settings, out, names)
    for problem in problems:
        print(f"error: {problem}", file=sys.stderr)
    if not names:
        print("error: no input images", file=sys.stderr)
        return 1
    rasters = [path for path in names if is_georeferenced(path)]  # every shard runs its windows of each
    paths = [path for path in names if path not in rasters]
    is_video = lambda path: path.suffix.lower() in VIDEO_EXTENSIONS or path.is_dir()  # noqa: E731 (or frames)
    photos_anywhere = not all(map(is_video, paths))
    paths = shard(paths, *shard_spec) if shard_spec else paths
    total = len(paths) + len(rasters)
    videos = [path for path in paths if is_video(path)]
    paths = [path for path in paths if path not in videos]
    predictor = predictor_from_args(args)
    if args.overlap is not None and args.overlap >= predictor.tile:
        raise ConfigError(f"--overlap must be less than the tile ({predictor.tile} px)")

    def measurements_in(folder: Path, suffix: str = "") -> Optional[Measurements]:
        return Measurements(folder, **settings, suffix=suffix) if args.measure or args.report else None

    def fail(problem: str) -> None:
        problems.append(problem)
        print(f"error: {problem}", file=sys.stderr)

    rows: List[Dict[str, Any]] = []
    finished = 0  # inputs done, for the line a Ctrl-C prints
    measurements: Optional[Measurements] = None  # those in progress, written on a Ctrl-C too
    try:
        for raster in rasters:
            predict_one_raster(args, predictor, raster, out, names[raster], settings, shard_spec, fail)
            finished += 1
        for video in videos:
            measurements = measurements_in(out / names[video])
            predict_one_video(args, predictor, video, out, out / names[video], measurements, fail)
            measurements = None
            finished += 1
        if paths or (shard_spec and photos_anywhere):  # a shard's summary, even if empty: merge needs all N
            measurements = measurements_in(out, shard_suffix(shard_spec))
            with tqdm(total=len(paths), desc="predict", unit="image", disable=None) as progress:
                rows = predict_files(predictor, paths, out, progress, names=[names[path] for path in paths],
                                     summary=summary_name(shard_spec), skip_existing=args.skip_existing,
                                     max_pixels=args.max_pixels or None, measurements=measurements)
            if measurements is not None:
                write_measurements(args, predictor, measurements)
                measurements = None
    except KeyboardInterrupt:
        if paths and finished == len(rasters) + len(videos):  # among the images: their summary rows say how far
            finished += len(read_summary(out / summary_name(shard_spec)))
        if measurements is not None and measurements.images:  # the tables match the masks written so far
            write_measurements(args, predictor, measurements)
        print(f"interrupted after {finished} of {total} inputs; --skip-existing resumes", file=sys.stderr)
        return 130
    return report_outcome(rows, problems, bool(paths), out, summary_name(shard_spec), predictor.mask_threshold)


def report_outcome(rows: List[Dict[str, Any]], problems: List[str], images: bool, out: Path, summary: str,
                   mask_threshold: float) -> int:
    """The closing lines of a run, and its exit code: 1 if any input failed."""
    failed = [row for row in rows if row["status"] != "ok"]
    cracked = sum(int(row.get("cracked") or 0) for row in rows)
    if images:
        print(f"{len(rows) - len(failed)} images: {cracked} with cracks; masks, overlays and {summary} in {out} "
              f"(mask threshold {mask_threshold:.2f})")
    if failed or problems:
        print(f"error: {len(failed) + len(problems)} input(s) failed", file=sys.stderr)
        return 1
    return 0


def write_measurements(args: argparse.Namespace, predictor: Predictor, measurements: Measurements) -> None:
    """cracks.csv, images.csv, cracks.json and, with --report, report.html, into the measurements' folder."""
    written = [path.name for path in measurements.write()]
    if args.report:
        model = summary_model(args, predictor)
        source = (f"the shipped model {model['shipped']}" if "shipped" in model else
                  f"exported model {model['onnx']}" if "onnx" in model else
                  f"checkpoints {model['segmentation']} and {model['classification']}")
        scale = (f"{args.mm_per_px:g} mm per pixel" if args.mm_per_px else "none (lengths in pixels)")
        if args.scale_csv:
            scale = f"each photo's from {args.scale_csv}; the others: {scale}"
        settings = {"inputs": ", ".join(args.inputs), "model": f"{source} (U-Net width {model['width']}, "
                    f"{model['crop']} px tiles, {predictor.engine}{', int8 gate head' if predictor.int8_head else ''}"
                    f"{', int8 gate' if predictor.int8_gate else ''})",
                    "tiles": f"{predictor.tile} px, overlapping by {predictor.overlap} px; a tile's mask is decoded "
                             f"when the gate's crack probability exceeds {predictor.model.threshold:.2f}",
                    "crack pixels": f"crack probability of at least {predictor.mask_threshold:.2f}",
                    "a crack": f"at least {predictor.min_area} px in area and {predictor.min_length:g} px long; "
                               f"pieces across gaps up to {predictor.join_gap:g} px joined",
                    "scale": scale}
        report = measurements.out_dir / f"report{measurements.suffix}.html"  # a shard's: report-I-of-N.html
        written.append(write_report(measurements, settings, report).name)
    print(f"measured {sum(len(entry.cracks) for entry in measurements.images)} cracks: {', '.join(written)} in "
          f"{measurements.out_dir}")
