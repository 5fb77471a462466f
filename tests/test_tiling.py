import pytest
import torch
from torch import nn

from crackseg.inference.tiling import (
    TileGrid,
    extract_tiles,
    owned_ranges,
    pad_to,
    pad_to_multiple,
    stitch,
    tile_starts,
)


def test_tile_starts_cover_the_image_with_a_regular_stride_and_a_flush_last_tile():
    assert tile_starts(100, 32, 8) == [0, 24, 48, 68]
    assert tile_starts(32, 32, 8) == [0]
    assert tile_starts(20, 32, 8) == [0]  # smaller than a tile: one tile on the padded image
    with pytest.raises(ValueError, match="overlap"):
        tile_starts(100, 32, 32)


def test_owned_ranges_partition_the_image_at_overlap_midpoints():
    ranges = owned_ranges([0, 24, 48, 68], 32, 100)
    assert ranges == [(0, 28), (28, 52), (52, 74), (74, 100)]
    for (start, (lo, hi)) in zip([0, 24, 48, 68], ranges):
        assert start <= lo < hi <= start + 32  # each tile owns only pixels it holds


def conv_model():
    """Fully convolutional, receptive field radius 2 px (two 3x3 convolutions)."""
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.Tanh(), nn.Conv2d(4, 2, 3, padding=1)).eval()


@pytest.mark.parametrize("height, width", [(75, 50), (20, 50), (33, 97)])
def test_tiled_and_stitched_equals_the_untiled_output(height, width):
    model = conv_model()
    image = torch.rand(3, height, width)
    grid = TileGrid.of(height, width, tile=32, overlap=8)
    with torch.no_grad():
        tiles = extract_tiles(image, grid)
        assert tiles.shape == (len(grid), 3, 32, 32)
        stitched = stitch(model(tiles), grid)
        padded = pad_to(image, *grid.padded_size)  # only images smaller than a tile are padded
        reference = model(padded[None])[0, :, :height, :width]
    assert stitched.shape == (2, height, width)
    torch.testing.assert_close(stitched, reference, rtol=0, atol=1e-6)


def test_stitch_keeps_what_a_run_neighbour_saw_where_the_owner_was_skipped():
    grid = TileGrid.of(8, 14, tile=8, overlap=2)  # xs = [0, 6], owned x: [0, 7), [7, 14)
    assert grid.xs == [0, 6]
    outputs = torch.stack([torch.full((1, 8, 8), 0.9), torch.full((1, 8, 8), 0.3)])
    result = stitch(outputs, grid, computed=torch.tensor([True, False]))
    assert torch.all(result[:, :, :8] == 0.9)  # tile 0's own pixels and the overlap it covers (x 6..7)
    assert torch.all(result[:, :, 8:] == 0)  # only the skipped tile covers these
    result = stitch(outputs, grid, computed=torch.tensor([False, True]))
    assert torch.all(result[:, :, :6] == 0) and torch.all(result[:, :, 6:] == 0.3)


def test_padding_mirrors_and_falls_back_to_edge_repetition_for_tiny_images():
    image = torch.arange(12, dtype=torch.uint8).reshape(1, 3, 4)
    assert pad_to_multiple(image, 4).shape == (1, 4, 4)
    assert pad_to_multiple(image, 4)[0, 3].tolist() == image[0, 1].tolist()  # reflect: row 3 mirrors row 1
    tiny = pad_to(image, 16, 16)
    assert tiny.shape == (1, 16, 16) and tiny.dtype == torch.uint8
    assert tiny[0, 15, 15] == image[0, 2, 3]  # replicate


def test_stitching_tiles_as_they_arrive_in_any_order_gives_the_same_map():
    from crackseg.inference.tiling import Stitcher

    grid = TileGrid.of(70, 90, tile=32, overlap=8)
    torch.manual_seed(3)
    outputs = torch.rand(len(grid), 1, 32, 32)
    computed = torch.rand(len(grid)) > 0.4
    reference = stitch(outputs, grid, computed)
    for seed in range(5):
        order = torch.randperm(len(grid), generator=torch.Generator().manual_seed(seed)).tolist()
        stitcher = Stitcher(grid)
        for index in order:
            if computed[index]:
                stitcher.add(index, outputs[index])
        assert torch.equal(stitcher.result, reference)
        assert torch.equal(stitcher.run, computed)
