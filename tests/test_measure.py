"""Crack measurement on masks of known geometry, the measure command, and the HTML report in a real browser."""
import csv
import json
import re
import shutil
import subprocess
import time

import numpy as np
import pytest
from PIL import Image
from skimage import draw
from test_commands import write_checkpoints

from crackseg.analysis.measure import has_crack, measure_mask
from crackseg.analysis.skeleton import graph, prune, simplify, trace
from crackseg.cli import main


def bar(width, length, angle, size=None, centre=None):
    """A straight crack: the pixels whose centres lie in a width x length rectangle turned by `angle` degrees
    (counter-clockwise), centred at a generic sub-pixel point."""
    size = size or int(length + 4 * width + 40)
    cy, cx = centre or (size / 2 + 0.21, size / 2 + 0.37)
    t = np.radians(angle)
    yy, xx = np.mgrid[0:size, 0:size].astype(float)
    along = (xx - cx) * np.cos(t) - (yy - cy) * np.sin(t)
    across = (xx - cx) * np.sin(t) + (yy - cy) * np.cos(t)
    return (np.abs(along) < length / 2) & (np.abs(across) < width / 2)


@pytest.mark.parametrize("angle", [0, 30, 45, 90])
@pytest.mark.parametrize("width", [1, 2, 3, 5, 9])
@pytest.mark.parametrize("length", [50, 400])
def test_straight_bars_measure_their_length_width_and_direction(width, length, angle):
    mask = bar(width, length, angle)
    cracks = measure_mask(mask, min_area=1)
    assert len(cracks) == 1
    crack = cracks[0]
    assert crack.length_px == pytest.approx(length, rel=0.03)
    drawn = mask.sum() / length  # the width the pixels have
    if angle == 45:
        # Pixel centres lie on diagonals 1/sqrt(2) px apart: a bar covers a whole number of them (a bar of width 1
        # and one of width 2 both cover two, 1.41 px), so there the width to find is the one the pixels have.
        assert abs(drawn - width) <= 0.5 ** 0.5
    assert crack.mean_width_px == pytest.approx(drawn if angle == 45 else width, abs=0.5)
    assert crack.median_width_px == pytest.approx(drawn, abs=0.5)
    assert drawn - 0.5 <= crack.max_width_px <= drawn + 1.5  # a local estimate: the widest few px
    assert crack.area_px == mask.sum()
    assert min(abs(crack.orientation_deg - angle), 180 - abs(crack.orientation_deg - angle)) < 2


def test_a_y_junction_measures_the_sum_of_its_branches():
    size = 300
    centre = (150.21, 150.37)
    mask = np.zeros((size, size), bool)
    branches = []
    for angle in (90, 210, 330):  # three arms of 100 px from the centre
        t = np.radians(angle)
        arm_centre = (centre[0] - 50 * np.sin(t), centre[1] + 50 * np.cos(t))
        mask |= bar(3, 100, angle, size=size, centre=arm_centre)
        branches.append(100)
    cracks = measure_mask(mask, min_area=1)
    assert len(cracks) == 1
    assert cracks[0].length_px == pytest.approx(sum(branches), rel=0.05)
    assert len(cracks[0].centreline) == 3  # three polylines meeting at the junction


def test_local_widths_of_branches_shorter_than_the_window_are_their_own():
    speck = np.zeros((9, 9), bool)
    speck[3:6, 2:7] = True  # 5 x 3 px: its centreline is 3 px, less than the 7 px window
    crack = measure_mask(speck, min_area=1)[0]
    assert crack.max_width_px == pytest.approx(2.771, abs=0.01)  # was 3.831: np.convolve(mode="same") gave 7 values
    assert [len(widths) for widths in crack.widths] == [len(line) for line in crack.centreline]


@pytest.mark.parametrize("angle", [0, 22.5, 45, 67.5, 90, 135])
def test_a_one_pixel_hairline_is_one_pixel_wide_at_any_angle(angle):
    t = np.radians(angle)
    mask = np.zeros((140, 140), bool)
    dy, dx = 60 * np.sin(t), 60 * np.cos(t)
    mask[draw.line(*np.round([70 - dy, 70 + dx, 70 + dy, 70 - dx]).astype(int))] = True
    crack = measure_mask(mask)[0]
    assert crack.median_width_px == pytest.approx(1.0, abs=0.01)  # at 45 degrees: 0.707
    assert crack.mean_width_px == pytest.approx(1.0, abs=0.01)  # 0.708
    assert crack.max_width_px == pytest.approx(1.0, abs=0.05)


def skeleton_of(*pixels):
    image = np.zeros((12, 12), bool)
    image[tuple(np.array(pixels).T)] = True
    return image


def test_branches_are_traced_in_order_between_nodes_around_loops_and_alone():
    ring = [(2, 4), (2, 5), (3, 6), (4, 6), (5, 5), (5, 4), (4, 3), (3, 3)]  # no nodes: a loop of its own
    points, edges = graph(skeleton_of(*ring, (9, 9)))
    branches = trace(points, edges)
    paths = [[tuple(p) for p in path] for path in branches.split(branches.pixels)]
    assert len(paths) == 2 and [(9, 9)] in paths  # the lone pixel
    loop = next(path for path in paths if len(path) > 1)
    assert loop[0] == loop[-1] and sorted(set(loop)) == sorted(ring) and len(loop) == 9
    assert all(max(abs(a[0] - b[0]), abs(a[1] - b[1])) == 1 for a, b in zip(loop, loop[1:]))  # walked in order
    # a T: three branches from the junction; an L-bend's corner is no junction
    points, edges = graph(skeleton_of(*[(5, x) for x in range(1, 10)], *[(y, 5) for y in range(6, 11)],
                                      (1, 1), (2, 1), (2, 2), (2, 3)))
    branches = trace(points, edges)
    ends = sorted(sorted([tuple(path[0]), tuple(path[-1])]) for path in branches.split(branches.pixels))
    assert ends == [[(1, 1), (2, 3)], [(5, 1), (5, 5)], [(5, 5), (5, 9)], [(5, 5), (10, 5)]]


def test_pruned_spurs_leave_one_branch_in_linear_time():
    """A line 40,000 px long with a 1-px spur every 4 px: the spurs are shorter than the crack's width, and once
    they are gone the 10,000 pieces between them meet only each other (joining them one pair at a time, looking
    again after each, took minutes)."""
    length = 40_000
    skeleton = np.zeros((4, length + 2), bool)
    skeleton[1, 1:length + 1] = True
    skeleton[2, 3:length - 4:4] = True
    started = time.perf_counter()
    points, edges = graph(skeleton)
    branches, keep, lengths = prune(points, edges, np.ones(skeleton.shape))
    assert time.perf_counter() - started < 5
    assert branches.count == 1 and lengths[0] == pytest.approx(length - 1)
    assert sorted(map(tuple, branches.pixels)) == [(1, x) for x in range(1, length + 1)]
    assert keep.sum() == 2  # a straight line keeps its two ends
    # where three long branches meet, nothing is pruned or joined
    points, edges = graph(skeleton_of(*[(5, x) for x in range(1, 10)], *[(y, 5) for y in range(6, 11)]))
    assert prune(points, edges, np.ones((12, 12)))[0].count == 3


def test_a_noisy_mask_measures_in_seconds():
    """Noise is measuring's worst case: a skeleton of about 40% of the pixels in tens of thousands of branches of
    a few px. Walking and simplifying each branch in Python took about 130 us a pixel (20 s here); as arrays it
    takes about 1 s on a 2-core CPU."""
    mask = np.random.default_rng(4).random((400, 400)) < 0.5
    started = time.perf_counter()
    cracks = measure_mask(mask)
    assert time.perf_counter() - started < 8
    assert sum(crack.area_px for crack in cracks) > 0.45 * mask.sum()  # nearly all of it is one network of cracks
    assert all(len(line) == len(widths) for crack in cracks for line, widths in zip(crack.centreline, crack.widths))


def test_separate_cracks_are_separate_rows_specks_are_dropped_and_empty_masks_give_nothing():
    mask = np.zeros((100, 200), bool)
    mask[10:13, 10:90] = True  # crack 1
    mask[50:130, 150:152] = True  # crack 2 (clipped at the border)
    mask[80, 20] = True  # a speck
    cracks = measure_mask(mask, min_area=5)
    assert [c.id for c in cracks] == [1, 2]
    assert cracks[0].bbox == (10, 10, 80, 3) and cracks[1].bbox == (150, 50, 2, 50)
    assert cracks[0].length_px == pytest.approx(80, abs=1) and cracks[1].length_px == pytest.approx(50, abs=1)
    assert measure_mask(np.zeros((50, 50), bool)) == []


def test_mm_values_scale_to_the_hundredth_of_a_mm_with_their_uncertainty(tmp_path):
    mask = bar(3, 120, 30)
    crack = measure_mask(mask)[0]
    row = crack.row(mm_per_px=0.25)
    for key in ("length", "mean_width", "median_width", "max_width"):
        assert row[f"{key}_mm"] == round(row[f"{key}_px"] * 0.25, 2)  # was 16 digits (4.7421999999999995)
    assert row["area_mm2"] == round(row["area_px"] * 0.0625, 2)
    assert row["uncertainty_mm"] == 0.25  # one pixel
    assert "length_mm" not in crack.row() and "uncertainty_mm" not in crack.row()


def test_measure_command_writes_tables_json_and_numbered_overlays(tmp_path):
    masks = tmp_path / "masks"
    masks.mkdir()
    two = np.zeros((120, 160), np.uint8)
    two[20:23, 10:150] = 255
    two[40:110, 80:85] = 255
    Image.fromarray(two).save(masks / "two.png")
    Image.fromarray(np.zeros((60, 60), np.uint8)).save(masks / "none.png")
    assert main(["measure", str(masks), "--out", str(tmp_path / "out"), "--mm-per-px", "0.5"]) == 0
    with open(tmp_path / "out" / "cracks.csv", newline="") as handle:
        cracks = list(csv.DictReader(handle))
    with open(tmp_path / "out" / "images.csv", newline="") as handle:
        images = {row["file"].rsplit("/", 1)[1]: row for row in csv.DictReader(handle)}
    assert [row["id"] for row in cracks] == ["1", "2"] and all(row["file"].endswith("two.png") for row in cracks)
    assert float(cracks[0]["length_mm"]) == pytest.approx(float(cracks[0]["length_px"]) / 2)
    assert images["two.png"]["cracks"] == "2" and images["none.png"]["cracks"] == "0"
    total = float(cracks[0]["length_px"]) + float(cracks[1]["length_px"])
    assert float(images["two.png"]["total_length_px"]) == pytest.approx(total)
    document = json.loads((tmp_path / "out" / "cracks.json").read_text())
    polyline = document["images"][1]["cracks"][0]["polylines"][0]
    assert all(len(point) == 2 for point in polyline) and abs(polyline[0][1] - 21) <= 1  # (x, y) in px
    overlay = np.asarray(Image.open(tmp_path / "out" / "two.png_measure.png"))
    coloured = overlay[19:24, 30:130].astype(int).std(axis=2) > 0  # the centreline, not the grey mask
    assert overlay.shape == (120, 160, 3) and coloured.any(axis=0).all() and not coloured[[0, -1]].any()


def chromium():
    return shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")


def test_measure_refuses_a_photo_given_as_a_mask_and_measures_the_rest(tmp_path, capsys):
    yy, xx = np.mgrid[0:64, 0:96]
    photo = (60 + xx + np.random.default_rng(0).integers(0, 40, (64, 96))).astype(np.uint8)  # a grey ramp
    Image.fromarray(photo).save(tmp_path / "photo.jpg")
    Image.fromarray(np.stack([photo] * 3, axis=2)).save(tmp_path / "colour.png")
    mask = np.zeros((64, 96), np.uint8)
    mask[20:23, 10:80] = 255
    Image.fromarray(mask).save(tmp_path / "mask.png")
    paths = [str(tmp_path / name) for name in ("photo.jpg", "colour.png", "mask.png")]
    assert main(["measure", *paths, "--out", str(tmp_path / "out")]) == 1
    err = capsys.readouterr().err
    for name in ("photo.jpg", "colour.png"):  # measured before: dozens of 'cracks' over half the area
        assert f"{name}: not a binary mask:" in err and "a photo saved as a mask?" in err
    with open(tmp_path / "out" / "images.csv", newline="") as handle:
        assert [row["file"] for row in csv.DictReader(handle)] == [paths[2]]


@pytest.mark.skipif(chromium() is None, reason="no Chromium on this machine (Debian package 'chromium')")
def test_the_report_renders_offline_in_a_real_browser(tmp_path):
    photos = tmp_path / "photos"
    photos.mkdir()
    rng = np.random.default_rng(0)
    for index in range(3):
        Image.fromarray(rng.integers(60, 200, (70, 90, 3), dtype=np.uint8)).save(photos / f"p{index}.png")
    out = tmp_path / "out"
    flags = write_checkpoints(tmp_path, gate_bias=20.0)
    assert main(["predict", str(photos), "--out", str(out), "--report", "--mask-threshold", "0.05", *flags]) == 0
    page = (out / "report.html").read_text()
    assert not re.search(r"""(src|href)=["']https?:""", page)  # nothing from the network
    common = [chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
              "--disable-background-networking", "--disable-component-update", "--disable-sync",
              f"--user-data-dir={tmp_path / 'profile'}"]
    url = (out / "report.html").as_uri()
    dom = subprocess.run(common + ["--dump-dom", url], capture_output=True, text=True, timeout=120).stdout
    assert dom.count('class="image-row"') == 3
    subprocess.run(common + [f"--screenshot={tmp_path / 'shot.png'}", "--window-size=1000,1400", url],
                   capture_output=True, timeout=120)
    shot = np.asarray(Image.open(tmp_path / "shot.png").convert("L"))
    assert shot.std() > 10 and (shot < 128).mean() > 0.005  # text and thumbnails, not a blank page


def test_a_dashed_crack_is_one_crack_and_side_by_side_cracks_stay_two():
    dashed = np.zeros((60, 300), bool)
    for start in range(10, 280, 33):  # 30 px dashes, 3 px gaps
        dashed[30:33, start:start + 30] = True
    (crack,) = measure_mask(dashed)
    assert crack.length_px == pytest.approx(9 * 30, rel=0.03)  # the pieces' length, not the gaps'
    assert len(measure_mask(dashed, join_gap=0)) == 9
    assert len(measure_mask(dashed, join_gap=2)) == 9  # gaps wider than allowed stay gaps
    parallel = np.zeros((60, 300), bool)
    parallel[20:23, 10:290] = True
    parallel[26:29, 10:290] = True  # 3 px apart, side by side: their ends do not face each other
    assert len(measure_mask(parallel)) == 2
    crossing = np.zeros((100, 100), bool)
    crossing[50:53, 5:45] = True
    crossing[10:48, 60:63] = True  # an end 4 px from another piece's end, at right angles to it
    assert len(measure_mask(crossing)) == 2


def test_pieces_too_short_alone_are_a_crack_together():
    dashed = np.zeros((40, 120), bool)
    for start in (10, 25, 40):  # three 12 px dashes, 3 px gaps: 36 px in all
        dashed[20:22, start:start + 12] = True
    assert has_crack(dashed, 10, 30) and len(measure_mask(dashed, 10, 30)) == 1
    assert not has_crack(dashed, 10, 30, join_gap=0)


def test_a_blob_wider_than_long_is_no_crack():
    yy, xx = np.mgrid[:80, :80]
    blob = (yy - 40) ** 2 + (xx - 40) ** 2 < 20 ** 2
    assert measure_mask(blob) == [] and not has_crack(blob)


def test_measure_joins_at_join_gap_in_px_or_mm(tmp_path):
    dashed = np.zeros((60, 300), np.uint8)
    for start in range(10, 280, 33):
        dashed[30:33, start:start + 30] = 255
    Image.fromarray(dashed).save(tmp_path / "dashed.png")
    counts = {}
    for flags in ([], ["--join-gap", "0"], ["--join-gap", "1mm", "--mm-per-px", "0.5"],
                  ["--join-gap", "1mm", "--mm-per-px", "0.1"]):
        out = tmp_path / f"out{len(counts)}"
        assert main(["measure", str(tmp_path / "dashed.png"), "--out", str(out), *flags]) == 0
        with open(out / "images.csv", newline="") as handle:
            counts[" ".join(flags)] = int(next(csv.DictReader(handle))["cracks"])
    assert list(counts.values()) == [1, 9, 9, 1]  # 1 mm at 0.5 mm/px is 2 px: less than the 3 px gaps


def test_every_branch_is_simplified_at_once_exactly_as_douglas_peucker_would_alone():
    from skimage.measure import approximate_polygon

    rng = np.random.default_rng(2)
    steps = [(dy, dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1) if dy or dx]
    paths = []
    while len(paths) < 500:  # random self-avoiding pixel paths, as skeleton branches are, of 1 to 80 px
        path = [(0, 0)]
        for _ in range(int(rng.integers(0, 80))):
            dy, dx = steps[rng.integers(8)]
            path.append((path[-1][0] + dy, path[-1][1] + dx))
        if len(set(path)) == len(path):
            paths.append(np.asarray(path, float))
    sizes = np.array([len(path) for path in paths])
    keep = simplify(np.concatenate(paths), np.concatenate([[0], np.cumsum(sizes)[:-1]]), sizes)
    for path, kept in zip(paths, np.split(keep, np.cumsum(sizes)[:-1])):
        np.testing.assert_array_equal(path[kept], approximate_polygon(path, tolerance=1.0))


def test_crack_numbers_do_not_overlap_where_cracks_crowd():
    from PIL import ImageDraw, ImageFont

    from crackseg.outputs.measurements import label_boxes

    mask = np.zeros((120, 200), bool)
    for row in range(10):
        mask[10 + row * 10:12 + row * 10, 20:60] = True  # ten short cracks 8 px apart, all starting at x = 20
    cracks = measure_mask(mask, join_gap=0)
    canvas = Image.new("RGB", (200, 120))
    placed = label_boxes(ImageDraw.Draw(canvas), ImageFont.load_default(size=11), cracks, canvas.size)
    assert len(placed) == 10
    for index, box in enumerate(placed):
        assert 0 <= box[0] and box[2] <= 200 and 0 <= box[1] and box[3] <= 120
        for other in placed[:index]:
            assert box[2] <= other[0] or other[2] <= box[0] or box[3] <= other[1] or other[3] <= box[1]


def test_skeleton_by_component_and_neighbour_counts_equal_the_whole_image_versions():
    from scipy import ndimage
    from skimage.morphology import skeletonize

    from crackseg.analysis.fragments import neighbour_counts, skeleton_of
    from crackseg.analysis.skeleton import EIGHT

    rng = np.random.default_rng(0)
    for trial in range(40):
        height, width = rng.integers(5, 90, 2)
        mask = ndimage.binary_dilation(rng.random((height, width)) < rng.uniform(0.005, 0.2),
                                       iterations=int(rng.integers(0, 4)))
        if trial % 2:  # components on the image's border
            mask[0] |= rng.random(width) < 0.5
            mask[:, -1] = True
        skeleton = skeletonize(mask)
        assert np.array_equal(skeleton_of(ndimage.label(mask, structure=EIGHT)[0]), skeleton)
        points = np.argwhere(skeleton)
        whole = ndimage.convolve(skeleton.astype(np.uint8), EIGHT.astype(np.uint8), mode="constant") - 1
        assert np.array_equal(neighbour_counts(skeleton, points), whole[points[:, 0], points[:, 1]])
