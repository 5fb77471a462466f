"""Videos through the gated model: a test video made here, with crack-free and cracked stretches."""
import csv
import json
import re

import av
import numpy as np
import pytest

from crackseg.cli import main
from crackseg.inference.predictor import Predictor
from crackseg.models import UNetClassifier
from crackseg.pipelines import results, video

FPS = 10
CRACKED = set(range(10, 15)) | set(range(22, 25))  # frames 1.0-1.4 s and 2.2-2.4 s
FRAMES = 30


def write_video(path, codec="ffv1", pixel_format="bgr0", **options):
    """FRAMES frames of 64x96 px at FPS: uniform grey, with a dark crack line in the CRACKED frames."""
    with av.open(str(path), "w", options=options) as container:
        stream = container.add_stream(codec, rate=FPS)
        stream.width, stream.height, stream.pix_fmt = 96, 64, pixel_format
        for index in range(FRAMES):
            pixels = np.full((64, 96, 3), 150, np.uint8)
            if index in CRACKED:
                pixels[20:23, 10:80] = 30
            for packet in stream.encode(av.VideoFrame.from_ndarray(pixels, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


@pytest.fixture
def predictor():
    return seeing_predictor()


def read_frames_csv(folder):
    with open(folder / "frames.csv", newline="") as handle:
        return list(csv.DictReader(handle))


def test_cracked_segments_are_found_at_their_times_and_crack_free_frames_are_never_decoded(tmp_path, predictor):
    path = write_video(tmp_path / "clip.mkv")
    summary = video.predict_video(predictor, path, tmp_path / "out")
    rows = read_frames_csv(tmp_path / "out")
    assert [int(row["frame"]) for row in rows] == list(range(FRAMES))
    assert {int(row["frame"]) for row in rows if row["cracked"] == "1"} == CRACKED
    assert all(row["tiles_decoded"] == "0" for row in rows if int(row["frame"]) not in CRACKED)
    assert [(s["start_s"], s["end_s"], s["frames"]) for s in summary["segments"]] == [(1.0, 1.4, 5), (2.2, 2.4, 3)]
    assert sorted(p.name for p in (tmp_path / "out").glob("*_mask.png")) == [
        f"frame_{index:07d}_mask.png" for index in sorted(CRACKED)]  # masks for the cracked frames only
    decoded = sum(int(row["tiles_decoded"]) for row in rows)
    assert summary["decoded_share"] == pytest.approx(decoded / sum(int(row["tiles_total"]) for row in rows), abs=1e-6)
    assert json.loads((tmp_path / "out" / "video.json").read_text())["cracked_frames"] == len(CRACKED)
    assert (tmp_path / "out" / "segments.csv").read_text().splitlines() == ["start_s,end_s,frames", "1.0,1.4,5",
                                                                            "2.2,2.4,3"]


def test_every_and_fps_sample_frames_and_mp4_reads_the_same(tmp_path, predictor):
    path = write_video(tmp_path / "clip.mp4", codec="libx264", pixel_format="yuv444p")
    assert [f.index for f in video.read_frames(path, every=3)] == list(range(0, FRAMES, 3))
    assert [f.time for f in video.read_frames(path, fps=2.5)] == [0.0, 0.4, 0.8, 1.2, 1.6, 2.0, 2.4, 2.8]
    summary = video.predict_video(predictor, path, tmp_path / "out", every=2, min_gap=0.5)
    rows = read_frames_csv(tmp_path / "out")
    assert [int(row["frame"]) for row in rows] == list(range(0, FRAMES, 2))
    assert [(s["start_s"], s["end_s"]) for s in summary["segments"]] == [(1.0, 1.4), (2.2, 2.4)]


def interrupt_the_third_overlay(monkeypatch):
    """Ctrl-C while the third cracked frame's overlay is drawn; returns the real drawing function."""
    real, calls = results.crack_overlay, []

    def interrupted(image, binary):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(image, binary)

    monkeypatch.setattr(results, "crack_overlay", interrupted)
    return real


def test_ctrl_c_keeps_the_frames_done_and_skip_existing_resumes(tmp_path, predictor, monkeypatch):
    path = write_video(tmp_path / "clip.mkv")
    real = interrupt_the_third_overlay(monkeypatch)
    with pytest.raises(KeyboardInterrupt):
        video.predict_video(predictor, path, tmp_path / "out")
    done = read_frames_csv(tmp_path / "out")
    assert [int(row["frame"]) for row in done] == list(range(12))  # frames 0..11 complete, 12 was interrupted
    assert json.loads((tmp_path / "out" / "video.json").read_text())["frames_processed"] == 12
    seen = []
    monkeypatch.setattr(results, "crack_overlay", real)
    monkeypatch.setattr(predictor, "crops", lambda crops, real_crops=predictor.crops: seen.append(len(crops))
                        or real_crops(crops))
    summary = video.predict_video(predictor, path, tmp_path / "out", skip_existing=True)
    rows = read_frames_csv(tmp_path / "out")
    assert sorted(int(row["frame"]) for row in rows) == list(range(FRAMES))
    assert sum(seen) == (FRAMES - 12) * int(rows[0]["tiles_total"])  # only the frames not done ran
    assert summary["cracked_frames"] == len(CRACKED)


def test_fps_sampling_starts_at_the_first_timestamp():
    timed = ((index, 0.95 + index / 10) for index in range(30))  # a stream whose first frame is at 0.95 s
    taken = [seconds for _, (_, seconds) in video._taken(timed, 1, 1.0)]
    assert taken == pytest.approx([0.95, 1.95, 2.95])  # was 0.95, 1.05, 2.05: a grid from t=0


def test_a_stream_broken_mid_way_names_the_frame_that_broke(tmp_path, monkeypatch):
    class Frame:
        def __init__(self, index):
            self.time = index / 10

        def to_ndarray(self, format):
            return np.zeros((4, 4, 3), np.uint8)

    class Container:
        streams = type("Streams", (), {"video": [type("Stream", (), {"average_rate": 10, "frames": 30})()]})

        def decode(self, stream):
            yield from map(Frame, range(7))
            raise av.FFmpegError(1094995529, "Invalid data found when processing input")

        def __enter__(self):
            return self

        def __exit__(self, *error):
            return False

    monkeypatch.setattr(av, "open", lambda path: Container())  # video.py imports av when it reads
    frames = video.read_frames(tmp_path / "clip.mp4", every=5)
    assert [next(frames).index, next(frames).index] == [0, 5]
    with pytest.raises(video.DatasetError, match="broken at frame 7, after 7 good ones"):  # was "frame 5"
        next(frames)


def test_predict_command_takes_videos_and_names_a_broken_one(tmp_path, capsys):
    from test_commands import write_checkpoints

    write_video(tmp_path / "clip.mkv")
    (tmp_path / "broken.mp4").write_bytes(b"not a video")
    flags = write_checkpoints(tmp_path, gate_bias=-20.0)  # a gate that decodes nothing
    code = main(["predict", str(tmp_path / "clip.mkv"), str(tmp_path / "broken.mp4"), "--out", str(tmp_path / "out"),
                 "--fps", "5", *flags])
    assert code == 1
    captured = capsys.readouterr()
    assert "broken.mp4: cannot read video" in captured.err and "Traceback" not in captured.err
    rows = read_frames_csv(tmp_path / "out" / "clip.mkv")
    assert len(rows) == 15 and all(row["tiles_decoded"] == "0" for row in rows)


def test_a_folder_of_numbered_frames_is_read_as_a_video(tmp_path, predictor):
    from PIL import Image

    folder = tmp_path / "frames"
    folder.mkdir()
    for index in range(12):
        pixels = np.full((64, 96, 3), 150, np.uint8)
        if index in (5, 6):
            pixels[20:23, 10:80] = 30
        Image.fromarray(pixels).save(folder / f"frame_{index:04d}.png")
    summary = video.predict_video(predictor, folder, tmp_path / "out", every=1)
    rows = read_frames_csv(tmp_path / "out")
    assert [float(row["time_s"]) for row in rows] == [index / 25 for index in range(12)]
    assert [int(row["frame"]) for row in rows if row["cracked"] == "1"] == [5, 6]
    assert [(s["start_s"], s["end_s"]) for s in summary["segments"]] == [(0.2, 0.24)]


def test_predict_command_reads_frame_folders_with_frames_flag(tmp_path):
    from PIL import Image
    from test_commands import write_checkpoints

    folder = tmp_path / "clip"
    folder.mkdir()
    for index in range(6):
        Image.new("RGB", (40, 40), (100, 100, 100)).save(folder / f"{index:03d}.png")
    flags = write_checkpoints(tmp_path, gate_bias=-20.0)
    assert main(["predict", str(folder), "--out", str(tmp_path / "out"), "--frames", "--every", "2", *flags]) == 0
    assert [row["frame"] for row in read_frames_csv(tmp_path / "out" / "clip")] == ["0", "2", "4"]


def seeing_predictor(args=None):
    """A model that sees the test videos' cracks exactly: crack probability 0.83 on dark pixels, 0 elsewhere, and
    a tile gated as cracked when it holds any (in place of `cli.predict.predictor_from_args`)."""
    def crops(tiles):
        masks = (tiles[:, :1] < 100).float() * 0.83
        return masks, masks.flatten(1).amax(1)

    predictor = Predictor(UNetClassifier(width=4, crop_size=32), fast=False, batch_size=8, mask_threshold=0.5)
    predictor.crops = crops
    return predictor


def read_table(path):
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def test_measured_videos_keep_their_tables_overlays_and_report_in_their_own_folders(tmp_path, monkeypatch):
    from crackseg.cli import predict

    monkeypatch.setattr(predict, "predictor_from_args", seeing_predictor)
    (tmp_path / "in").mkdir()
    videos = [write_video(tmp_path / "in" / f"{name}.mkv") for name in "abc"]
    out = tmp_path / "out"
    assert main(["predict", str(tmp_path / "in"), "--out", str(out), "--every", "6", "--report"]) == 0
    for path in videos:  # frames 0, 6, ..., 24: 12 and 24 are cracked
        folder = out / path.name
        assert sorted({row["file"] for row in read_table(folder / "cracks.csv")}) == [f"{path}#12", f"{path}#24"]
        assert [row["overlay"] for row in read_table(folder / "images.csv")] == [
            "frame_0000012_measure.png", "frame_0000024_measure.png"]
        assert all((folder / f"frame_00000{index}_measure.png").is_file() for index in (12, 24))
        assert f"{path}#24" in (folder / "report.html").read_text()
    assert not list(out.glob("*.png")) and not list(out.glob("*.csv")) and not (out / "report.html").exists()


def test_an_interrupted_measured_video_resumes_with_every_frame_measured(tmp_path, monkeypatch, capsys):
    from crackseg.cli import predict

    monkeypatch.setattr(predict, "predictor_from_args", seeing_predictor)
    path = write_video(tmp_path / "clip.mkv")
    flags = ["--every", "2", "--measure"]  # cracked: frames 10, 12, 14, 22, 24
    assert main(["predict", str(path), "--out", str(tmp_path / "whole"), *flags]) == 0
    real = interrupt_the_third_overlay(monkeypatch)
    assert main(["predict", str(path), "--out", str(tmp_path / "parts"), *flags]) == 130
    assert capsys.readouterr().err.splitlines()[-1] == "interrupted after 0 of 1 inputs; --skip-existing resumes"
    # the tables hold the two cracked frames measured before the Ctrl-C (none were written before)
    assert [row["file"].split("#")[1] for row in read_table(tmp_path / "parts" / "clip.mkv" / "images.csv")] == [
        "10", "12"]
    monkeypatch.setattr(results, "crack_overlay", real)
    assert main(["predict", str(path), "--out", str(tmp_path / "parts"), "--skip-existing", *flags]) == 0
    whole, parts = tmp_path / "whole" / "clip.mkv", tmp_path / "parts" / "clip.mkv"
    assert len(read_table(parts / "frames.csv")) == 15

    for table in ("cracks.csv", "images.csv"):  # confidence too: the probabilities are kept beside the masks
        assert read_table(parts / table) == read_table(whole / table) and len(read_table(whole / table)) == 5
    assert {row["confidence"] for row in read_table(parts / "cracks.csv")} == {"0.831"}  # 212 / 255
    polylines = [[[crack["polylines"] for crack in image["cracks"]] for image in json.loads(
        (folder / "cracks.json").read_text())["images"]] for folder in (parts, whole)]
    assert polylines[0] == polylines[1]


def test_a_broken_frame_costs_that_frame_only(tmp_path, capsys):
    from PIL import Image
    from test_commands import write_checkpoints

    folder = tmp_path / "clip"
    folder.mkdir()
    for index in range(6):
        Image.new("RGB", (40, 40), (100, 100, 100)).save(folder / f"{index:03d}.png")
    (folder / "003.png").write_bytes(b"not a frame")
    flags = write_checkpoints(tmp_path, gate_bias=-20.0)  # batches of 5 tiles: frames 0-2 wait in one
    assert main(["predict", str(folder), "--out", str(tmp_path / "out"), "--frames", *flags]) == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err and f"error: {folder / '003.png'}: cannot read image" in err
    assert [row["frame"] for row in read_frames_csv(tmp_path / "out" / "clip")] == ["0", "1", "2", "4", "5"]
    assert json.loads((tmp_path / "out" / "clip" / "video.json").read_text())["errors"][0].startswith(
        f"{folder / '003.png'}: cannot read image")


@pytest.mark.parametrize("name, options, kept, message", [
    ("clip.mkv", {}, 0.6, r"the stream ended after (\d+) of the 30 frames it declares"),
    ("clip.mkv", {}, 0.1, r"no frame could be decoded()"),
    ("clip.mp4", {"codec": "mpeg4", "pixel_format": "yuv420p", "movflags": "faststart"}, 0.6,
     r"the stream ended after (\d+) of the 30 frames it declares")])
def test_a_truncated_video_says_how_many_frames_it_lost_and_fails(tmp_path, capsys, name, options, kept, message):
    from test_commands import write_checkpoints

    data = write_video(tmp_path / name, **options).read_bytes()
    (tmp_path / name).write_bytes(data[:int(len(data) * kept)])
    flags = write_checkpoints(tmp_path, gate_bias=-20.0)
    assert main(["predict", str(tmp_path / name), "--out", str(tmp_path / "out"), *flags]) == 1
    err = capsys.readouterr().err
    found = re.search(f"error: {re.escape(str(tmp_path / name))}: {message}", err)
    assert found and "Traceback" not in err, err
    read = int(found.group(1) or 0)
    assert read < FRAMES and len(video.read_rows(tmp_path / "out" / name / "frames.csv")) == read


def test_a_resumed_frame_whose_mask_was_lost_is_run_again_once(tmp_path, predictor):
    path = write_video(tmp_path / "clip.mkv")
    out = tmp_path / "out"
    video.predict_video(predictor, path, out)
    (out / "frame_0000012_mask.png").unlink()  # a cracked frame's mask lost
    video.predict_video(predictor, path, out, skip_existing=True)
    frames = [int(row["frame"]) for row in read_frames_csv(out)]
    assert sorted(frames) == list(range(FRAMES)) and len(set(frames)) == len(frames)  # frame 12 was listed twice
    assert (out / "frame_0000012_mask.png").is_file()
