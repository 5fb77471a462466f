"""The specificity test video: flat noisy concrete with a crack in some frames only."""
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

VIDEO_CRACKED = range(10, 20)  # frames of `write_test_video` that carry a crack


def write_test_video(path: Path, frames: int = 40, seed: int = 0) -> Path:
    """The specificity test video (issue 22): `frames` frames of 320x240 px at 10 fps, mpeg4, of flat grey
    concrete (level 170, Gaussian noise of std 12: compression turns it into blotches); frames 10-19 carry a dark
    (60) 5 px polyline through (20, 40), (120, 90), (200, 130), (300, 210). A model should call those 10 frames
    cracked and none of the others."""
    import av  # PyAV: a dependency of crackseg's video support

    rng = np.random.default_rng(seed)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("mpeg4", rate=10)
        stream.width, stream.height, stream.pix_fmt = 320, 240, "yuv420p"
        for index in range(frames):
            grey = Image.fromarray(np.clip(170 + rng.normal(0, 12, (240, 320)), 0, 255).astype(np.uint8))
            if index in VIDEO_CRACKED:
                ImageDraw.Draw(grey).line([(20, 40), (120, 90), (200, 130), (300, 210)], fill=60, width=5)
            pixels = np.repeat(np.asarray(grey)[..., None], 3, axis=2)
            for packet in stream.encode(av.VideoFrame.from_ndarray(pixels, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return Path(path)
