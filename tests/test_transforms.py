import pytest
import torch
from torchvision.transforms.v2 import RandomHorizontalFlip, RandomVerticalFlip

from crackseg.data.transforms import (
    Compose,
    FiveCrop,
    RandomJoint,
    RandomMarking,
    RandomRotate90,
    RandomWindow,
    five_crop_boxes,
    train_transform,
    valid_transform,
)


def asymmetric_pair(height=80, width=96):
    """A mask with an L-shaped mark off centre, and an image whose red channel carries the same mark."""
    mask = torch.zeros(1, height, width, dtype=torch.uint8)
    mask[0, 5:40, 7:12] = 1
    mask[0, 35:40, 7:50] = 1
    mask[0, 60:62, 70:90] = 1
    image = torch.randint(0, 60, (3, height, width), dtype=torch.uint8)
    image[0][mask[0].bool()] = 250
    return image, mask


def assert_aligned(images, masks):
    assert set(masks.unique().tolist()) <= {0, 1}
    assert torch.equal(images[..., 0, :, :] > 0.5 if images.is_floating_point() else images[..., 0, :, :] > 128,
                       masks[..., 0, :, :].bool())


@pytest.mark.parametrize("transform", [RandomHorizontalFlip(p=1.0), RandomVerticalFlip(p=1.0), RandomRotate90(),
                                       FiveCrop(48), RandomWindow(64)])
def test_each_paired_transform_keeps_image_and_mask_aligned(transform):
    image, mask = asymmetric_pair()
    for seed in range(8):
        torch.manual_seed(seed)
        out_image, out_mask = Compose([transform])(image, mask)
        assert_aligned(out_image, out_mask)


def test_train_preset_aligned_over_many_draws_and_actually_random():
    image, mask = asymmetric_pair()
    seen = set()
    for seed in range(40):
        torch.manual_seed(seed)
        images, masks = train_transform(48)(image, mask)
        assert images.shape == (5, 3, 48, 48) and masks.shape == (5, 1, 48, 48)
        assert images.dtype == torch.float32 and images.max() <= 1.0
        assert_aligned(images, masks)
        seen.add(masks.numpy().tobytes())
    assert len(seen) >= 8  # flips x rotations give up to 16 distinct outcomes


def test_flips_and_rotation_move_pixels_as_expected():
    image, mask = asymmetric_pair()
    flipped_image, flipped_mask = Compose([RandomHorizontalFlip(p=1.0)])(image, mask)
    assert torch.equal(flipped_mask, mask.flip(-1)) and torch.equal(flipped_image, image.flip(-1))
    assert type(flipped_mask) is torch.Tensor and type(flipped_image) is torch.Tensor  # plain tensors out
    turned_image, turned_mask = Compose([RandomRotate90()])(image, mask)
    turns = [k for k in range(4) if torch.equal(turned_mask, torch.rot90(mask, k, dims=(-2, -1)))]
    assert len(turns) == 1 and torch.equal(turned_image, torch.rot90(image, turns[0], dims=(-2, -1)))
    _, unflipped = Compose([RandomVerticalFlip(p=0.0)])(image, mask)
    assert torch.equal(unflipped, mask)


def test_valid_preset_is_deterministic_five_crop():
    image, mask = asymmetric_pair()
    first = valid_transform(48)(image, mask)
    second = valid_transform(48)(image, mask)
    assert torch.equal(first[0], second[0]) and torch.equal(first[1], second[1])
    boxes = five_crop_boxes(80, 96, 48)
    assert boxes == [(0, 0), (0, 48), (32, 0), (32, 48), (16, 24)]
    y, x = boxes[4]
    assert torch.equal(first[1][4], mask[:, y:y + 48, x:x + 48].float())


def test_five_crop_rejects_small_images():
    with pytest.raises(ValueError, match="smaller than the crop size 64"):
        five_crop_boxes(48, 100, 64)


def test_window_sampling_trains_on_every_region_of_a_large_photo():
    # A 256x256 photo and 32 px crops: FiveCrop alone only ever sees the corners and the centre.
    side, crop = 256, 32
    position = torch.arange(side * side, dtype=torch.int32).view(1, side, side)  # each pixel's own index
    image = torch.stack([position // 256 % 256, position % 256, torch.zeros_like(position)], 1)[0].to(torch.uint8)
    mask = torch.zeros(1, side, side, dtype=torch.uint8)

    def seen(sampling, draws):
        covered = torch.zeros(side, side, dtype=torch.bool)
        for seed in range(draws):
            torch.manual_seed(seed)
            crops, _ = train_transform(crop, sampling)(image, mask)
            rows = (crops[:, 0] * 255).round().long().flatten()
            cols = (crops[:, 1] * 255).round().long().flatten()
            covered[rows, cols] = True
        return covered.float().mean().item()

    assert seen("five", 60) < 5 * crop * crop / (side * side) + 1e-6  # five fixed boxes, whatever the flips
    assert seen("window", 300) > 0.9  # random windows of 2x the crop reach (almost) everything
    image_small, mask_small = torch.zeros(3, 40, 300, dtype=torch.uint8), torch.zeros(1, 40, 300, dtype=torch.uint8)
    out, out_mask = Compose([RandomWindow(64)])(image_small, mask_small)  # a side smaller than the window is kept whole
    assert out.shape == (3, 40, 64) and out_mask.shape == (1, 40, 64)
    with pytest.raises(ValueError, match="unknown sampling"):
        train_transform(crop, "random")


def stripe_pair(side=200, width=4):
    """A grey photo with a dark vertical stripe `width` px wide, labelled crack."""
    image = torch.full((3, side, side), 180, dtype=torch.uint8)
    mask = torch.zeros(1, side, side, dtype=torch.uint8)
    image[:, :, 98:98 + width], mask[0, :, 98:98 + width] = 40, 1
    return image, mask


def stripe_width(image, mask):
    """The stripe's width in px in the image (its darkness summed along a row: resizing keeps it) and in the mask
    (labelled pixels per row), averaged over the rows the stripe crosses."""
    dark = ((180 - image[0].float()) / 140).sum(1)
    rows = mask[0].sum(1) > 0
    return dark[rows].mean().item(), mask[0].sum(1)[rows].float().mean().item()


def test_a_zoomed_window_widens_or_narrows_cracks_in_image_and_mask_alike():
    image, mask = stripe_pair()
    for zoom, expected in ((2.0, 8.0), (0.5, 2.5)):  # 4 px at 0.5: 2 or 3 px, as the stripe meets the pixel grid
        torch.manual_seed(0)
        for _ in range(20):
            out, out_mask = Compose([RandomWindow(64, (zoom, zoom), 32)])(image, mask)
            assert out.shape == (3, 64, 64) and out_mask.shape == (1, 64, 64) and out.dtype == torch.uint8
            assert set(out_mask.unique().tolist()) <= {0, 1}
            visible = bool(((180 - out[0].float()) > 20).any())
            assert bool(out_mask.any()) == visible  # a stripe in the window is labelled, and only then
            if visible:
                in_image, in_mask = stripe_width(out, out_mask)
                assert in_mask == pytest.approx(expected, abs=1) and in_image == pytest.approx(expected, abs=1)
                darkness = 180 - out[0].float()
                near = torch.nn.functional.max_pool2d(out_mask.float()[None], 3, 1, 1)[0, 0] > 0
                assert darkness[near].sum() > 0.95 * darkness.sum()  # the label stays on the stripe
    # a zoom out never leaves a side below min_side: a 100 px photo at 0.5 would be 50 px, so it is zoomed to 60
    small, small_mask = stripe_pair(side=100)
    out, out_mask = Compose([RandomWindow(64, (0.5, 0.5), 60)])(small, small_mask)
    assert out.shape == (3, 60, 60) and out_mask.shape == (1, 60, 60) and out_mask.sum() > 0
    with pytest.raises(ValueError, match="zoom"):
        RandomWindow(64, (2.0, 1.0))


def test_a_hairline_stays_labelled_when_zoomed_out():
    image, mask = stripe_pair(side=120, width=1)
    for zoom in (0.3, 0.5, 0.6, 0.75):
        for seed in range(10):
            torch.manual_seed(seed)
            out, out_mask = Compose([RandomWindow(64, (zoom, zoom), 32)])(image, mask)
            if ((180 - out[0].float()) > 20).any():  # the hairline is in the window, fainter
                assert (out_mask[0].sum(1) == 1).all(), (zoom, seed)  # every row: one pixel of crack


def test_zooms_spread_over_their_range_and_none_is_drawn_without_one():
    image, mask = stripe_pair(side=400, width=6)
    window = RandomWindow(64, (0.5, 2.0), 32)
    torch.manual_seed(0)
    zooms = torch.tensor([64 / window.make_params([image, mask])["height"] for _ in range(400)])
    assert zooms.min() < 0.55 and zooms.max() > 1.85  # the whole range is drawn ...
    assert zooms.log().median().abs() < 0.15 and ((zooms > 0.9) & (zooms < 1.1)).float().mean() < 0.2  # log-uniform
    torch.manual_seed(3)
    unzoomed = Compose([RandomWindow(64, (1.0, 1.0), 32)])(image, mask)
    torch.manual_seed(3)  # without a zoom, the window's only draws are its corner's, as before zooms existed
    top, left = int(torch.randint(400 - 64 + 1, ())), int(torch.randint(400 - 64 + 1, ()))
    assert torch.equal(unzoomed[0], image[:, top:top + 64, left:left + 64])
    assert torch.equal(unzoomed[1], mask[:, top:top + 64, left:left + 64])
    crops, _ = train_transform(32, "window", zoom=(0.7, 1.5))(image, mask)
    assert crops.shape == (5, 3, 32, 32)
    with pytest.raises(ValueError, match="window sampling"):
        train_transform(32, "five", zoom=(0.7, 1.5))


def straight_features(transform, low, high, height=96, width=128, draws=20):
    """For `draws` seeds: (photo, photo after `transform`, where its mask was cleared) for a random photo with pixel
    values in [low, high) labelled crack everywhere; checks that both stay uint8 and the mask binary."""
    for seed in range(draws):
        torch.manual_seed(seed)
        image = torch.randint(low, high, (3, height, width), dtype=torch.uint8)
        mask = torch.ones(1, height, width, dtype=torch.uint8)
        changed, cleared = Compose([transform])(image, mask)
        assert changed.dtype == torch.uint8 and cleared.dtype == torch.uint8
        assert set(cleared.unique().tolist()) <= {0, 1}
        yield image, changed, cleared[0] == 0


def grown(pixels, by):
    return torch.nn.functional.max_pool2d(pixels[None, None].float(), 2 * by + 1, 1, by)[0, 0].bool()


def test_a_road_marking_is_a_bright_band_with_no_crack_labelled_under_it():
    # Dark asphalt labelled crack everywhere: after painting, the label is cleared exactly under the paint.
    height, width = 96, 128
    for image, painted, band in straight_features(RandomMarking(1.0), 30, 60, height, width):
        paint = painted.float().mean(0) > 100  # paint (grey 110-250) over asphalt under 60; a seam only darkens
        assert 0 < band.sum() < 0.5 * height * width  # a band, not the whole image
        inside = ~grown(~band, 1)  # the band but its anti-aliased edge
        assert bool(paint[inside].all()) and not bool((paint & ~grown(band, 1)).any())
        near = grown(band, 2)
        away = ~paint & ~near  # more than 2 px from the band: only a dark seam may change the photo there
        assert bool((painted[:, away] <= image[:, away]).all())
        assert not torch.equal(painted, image)


def test_markings_paint_the_share_of_images_asked_for_and_none_by_default():
    image = torch.full((3, 64, 64), 40, dtype=torch.uint8)
    mask = torch.zeros(1, 64, 64, dtype=torch.uint8)
    torch.manual_seed(0)
    painted = sum(bool((Compose([RandomMarking(0.25)])(image, mask)[0] > 100).any()) for _ in range(400))
    assert 70 <= painted <= 130  # 100 expected
    kinds = lambda transform: [type(t) for t in transform.transforms.transforms]  # noqa: E731
    assert RandomMarking not in kinds(train_transform(32)) and RandomJoint not in kinds(train_transform(32))
    assert kinds(train_transform(32, markings=0.25, joints=0.5))[:2] == [RandomMarking, RandomJoint]


def test_a_joint_is_a_thin_straight_dark_line_with_no_crack_labelled_on_it():
    for image, cut, line in straight_features(RandomJoint(1.0), 100, 200):
        assert torch.equal(cut[:, ~line], image[:, ~line])  # the photo is untouched off the line
        assert bool((cut[:, line] <= image[:, line]).all()) and cut[:, line].float().mean() < 0.9 * image[
            :, line].float().mean()  # and darker on it
        ys, xs = line.nonzero(as_tuple=True)
        points = torch.stack([ys, xs], 1).float()
        spread = torch.linalg.eigvalsh(torch.cov(points.T))  # a line: long one way, 1-6 px wide the other
        assert spread[1] > 50 and spread[0] < 4, spread
