"""Speed and agreement on media: a video stream through the gate, and the masks of the fast paths against plain
fp32 on real photos."""
import copy
import tempfile
from pathlib import Path
from typing import Any, Callable, Dict, Optional, Tuple

import numpy as np
import torch

from crackseg.bench.timing import drive_gate, flops, gemm_peak
from crackseg.inference.acceleration import int8_head_supported, interleaved, precision_is_timed, reduced_precision
from crackseg.inference.predictor import Predictor
from crackseg.models import UNetClassifier


def write_stream(path: Path, frames: int, height: int, width: int, seed: int = 0) -> Path:
    """An H.264 video of synthetic pavement: a slowly panning textured background, as a survey camera sees it."""
    import av

    rng = np.random.default_rng(seed)
    texture = rng.normal(128, 30, (height, width + frames * 4)).clip(0, 255)
    texture = (texture + np.roll(texture, 1, 0) + np.roll(texture, 1, 1)) / 3  # some grain, not pure noise
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=25)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        for index in range(frames):
            grey = texture[:, index * 4:index * 4 + width].astype(np.uint8)
            frame = av.VideoFrame.from_ndarray(np.repeat(grey[..., None], 3, axis=2), format="rgb24")
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def video_stream(width: int, crop: int, rounds: int, device: torch.device, precision: str = "auto",
                 frames: int = 40, size: Tuple[int, int] = (360, 640), share: float = 0.1) -> Dict[str, Any]:
    """Frames per second of a video stream: the decoder alone (PyAV), and the fast-path model on decoded frames,
    gated with `share` of the tiles cracked and always decoding."""
    from crackseg.pipelines.video import read_frames

    model = UNetClassifier(width, crop)
    predictor = Predictor(model, device, precision=precision)
    with tempfile.TemporaryDirectory() as temporary:
        path = write_stream(Path(temporary) / "stream.mp4", frames, *size)
        decoded = [frame.image for frame in read_frames(path)]

        def decoder() -> int:
            return sum(1 for _ in read_frames(path))

        def model_at(level: float) -> Callable[[], int]:
            def run() -> int:
                handle = drive_gate(predictor.model, level, 10)
                try:
                    return sum(1 for _ in predictor.tiled(enumerate(decoded)))
                finally:
                    handle.remove()
            return run

        speeds = interleaved({"decoder": decoder, "gated": model_at(share), "always": model_at(1.0)}, rounds,
                             device)
    return {"frames": frames, "frame_size": list(size), "cracked_tile_share": share, "frames_per_s": speeds,
            "gated_over_always": speeds["gated"] / speeds["always"],
            "decoder_over_gated": speeds["decoder"] / speeds["gated"]}


def agreement(model: UNetClassifier, device: torch.device, precision: str, images: Callable[[], Any],
              onnx: bool = True) -> Dict[str, Any]:
    """How the faster variants agree with the plain fp32 model on real photos: the Dice between binarised gated
    masks (over all pixels of `images`) and the share of tiles gated alike. Variants: the fast path as it runs by
    default, with the float gate where that default is the int8 gate, the fp32 fast path with an int8 head (where
    supported; with the gate `auto` picks for it), and with `onnx` the onnxruntime engine."""
    plain = Predictor(model, device, fast=False)
    variants = {"fast": Predictor(model, device, precision=precision)}
    if variants["fast"].int8_gate:  # the fast path as it runs by default, with the float gate
        variants["float_gate"] = Predictor(model, device, precision=precision, gate="float")
    if int8_head_supported(device):
        variants["fp32_int8_head"] = Predictor(model, device, precision="fp32", head="int8")
    if onnx:
        variants["onnxruntime"] = Predictor(model, device, engine="onnxruntime")
    counts = {name: torch.zeros(5) for name in variants}  # both, ours, plain's crack pixels; tiles alike, tiles
    for results in zip(plain.tiled(images()), *(variant.tiled(images()) for variant in variants.values())):
        reference = results[0]
        b = reference.binary
        for name, result in zip(variants, results[1:]):
            a = result.binary
            counts[name] += torch.tensor([float((a & b).sum()), float(a.sum()), float(b.sum()),
                                          float((result.decoded == reference.decoded).sum()), len(reference.grid)])
    report: Dict[str, Any] = {"crack_pixels_fp32": float(counts["fast"][2])}
    for name, (both, ours, theirs, alike, tiles) in counts.items():
        report[name] = {"mask_dice_vs_fp32": float(2 * both / (ours + theirs)) if ours + theirs else 1.0,
                        "tiles_gated_alike": float(alike / tiles), "tiles": int(tiles)}
    return report


def photos(model: UNetClassifier, device: torch.device, precision: str, images: Callable[[], Any],
           rounds: int, overlap: Optional[int] = None, onnx: bool = False) -> Dict[str, Any]:
    """Speed of `crackseg predict`'s model work on real photos: megapixels and photos a second, gated (as predict
    runs), always decoding (every tile) and the gate alone (no tile decoded), the share of tiles the gate decoded,
    and the decoder's share of the gated run's time (1 - gated rate / gate-alone rate); on CPUs with native bf16
    and `precision` auto, also gated in fp32 and in bf16 (auto's choice between them); with `onnx`, also gated
    and always decoding in the onnxruntime engine, and its speed over torch's. `v2_default` is gated predict
    as crackseg-v2 shipped: tiles overlapping by a quarter, no fused convolutions, the float gate, and `precision`
    auto taking bf16 wherever the CPU has native bf16 (untimed); `gated_over_v2_default` is the speed bought
    since; where the gate ran in int8 (`int8_gate`), `gated_float_gate` is gated with the float gate. The photos
    are decoded once, beforehand, so the rates are the model's and the stitching's, not the JPEG decoder's.

    Args:
        model: the gated model (its gate threshold as shipped or given).
        images: a callable returning (key, image (3, H, W) uint8) pairs.
        rounds: interleaved timed rounds of the three variants over all the photos (the median counts).
        overlap: the tiles' overlap in px [predict's default, an eighth of the tile].
    """
    decoded = list(images())
    megapixels = sum(image.shape[1] * image.shape[2] for _, image in decoded) / 1e6
    always_model, gate_model = copy.copy(model), copy.copy(model)  # the same weights, other thresholds:
    always_model.threshold = -1.0  # no probability is below it: every tile decoded
    gate_model.threshold = 2.0  # none is above it: the gate alone (encoder and head), for the decoder's share
    variants = (("gated", model), ("always_decoding", always_model), ("gate_only", gate_model))
    predictors = {name: Predictor(variant, device, precision=precision, overlap=overlap) for name, variant in variants}
    if precision_is_timed(device, precision):
        # auto picked one of the two on a chunk of tiles: both, on the whole photos, show whether it picked right
        predictors.update({f"gated_{kind}": Predictor(model, device, precision=kind, overlap=overlap)
                           for kind in ("fp32", "bf16")})
    v2_precision = {None: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}[reduced_precision(device, precision)]
    if predictors["gated"].int8_gate:  # auto took the int8 gate: the float one beside it shows what it bought
        predictors["gated_float_gate"] = Predictor(model, device, precision=precision, overlap=overlap, gate="float")
    predictors["v2_default"] = Predictor(model, device, precision=v2_precision, overlap=model.crop_size // 4,
                                         fuse=False, gate="float")
    if onnx:
        predictors.update({f"{name}_onnxruntime": Predictor(variant, device, overlap=overlap, engine="onnxruntime")
                           for name, variant in variants[:2]})
    counted: Dict[str, Tuple[int, int]] = {}  # variant -> (tiles, tiles decoded) of its last round

    def over_all(name: str) -> Callable[[], int]:
        def run() -> int:
            results = list(predictors[name].tiled(iter(decoded)))
            counted[name] = (sum(len(r.grid) for r in results), sum(int(r.decoded.sum()) for r in results))
            return len(results)
        return run

    rates = interleaved({name: over_all(name) for name in predictors}, rounds, device, warmup=0)
    mp_per_s = {name: rate * megapixels / len(decoded) for name, rate in rates.items()}
    tiles, decoded_tiles = counted["gated"]
    return {"photos": len(decoded), "megapixels": round(megapixels, 3), "overlap": predictors["gated"].overlap,
            "int8_gate": predictors["gated"].int8_gate, "tiles": tiles,
            "decoded_share": round(decoded_tiles / tiles, 4) if tiles else None,
            "photos_per_s": {name: round(rate, 4) for name, rate in rates.items()},
            "mp_per_s": {name: round(rate, 4) for name, rate in mp_per_s.items()},
            "gated_over_always": round(rates["gated"] / rates["always_decoding"], 3),
            "gated_over_v2_default": round(rates["gated"] / rates["v2_default"], 3),
            "v2_default": {"overlap": predictors["v2_default"].overlap, "tiles": counted["v2_default"][0],
                           "precision": v2_precision},
            **({"onnxruntime_over_torch": {name: round(rates[f"{name}_onnxruntime"] / rates[name], 3)
                                           for name in ("gated", "always_decoding")}} if onnx else {}),
            "decoder_share_of_gated": round(max(0.0, 1 - rates["gated"] / rates["gate_only"]), 3),
            "limit": photo_limits(model, predictors["gated"].dtype, tiles / megapixels, decoded_tiles / tiles,
                                  mp_per_s)
            if device.type == "cpu" else None}  # the GEMM peak is the CPU's


def photo_limits(model: UNetClassifier, dtype: Optional[torch.dtype], tiles_per_mp: float, decoded_share: float,
                 mp_per_s: Dict[str, float]) -> Dict[str, Any]:
    """The MP/s the FLOPs of each variant allow at the CPU's measured GEMM peak (fp32 and bf16, in this run), and
    the share of that limit each variant reached at the peak of the type it ran in. A tile costs the gate
    (encoder and head) and, when decoded, the decoder."""
    costs = flops(model, model.crop_size)
    gate, decoder = costs["gate_gflop_per_crop"], costs["decoder_gflop_per_crop"]
    per_tile = {"gated": gate + decoded_share * decoder, "always_decoding": gate + decoder, "gate_only": gate}
    peaks = {"fp32": gemm_peak(torch.float32), "bf16": gemm_peak(torch.bfloat16)}
    ran = "bf16" if dtype == torch.bfloat16 else "fp32"
    limits = {name: {kind: peak / (cost * tiles_per_mp) for kind, peak in peaks.items()}
              for name, cost in per_tile.items()}
    return {"gemm_gflop_per_s": {kind: round(peak, 1) for kind, peak in peaks.items()}, "ran_in": ran,
            "gflop_per_tile": {name: round(cost, 4) for name, cost in per_tile.items()},
            "mp_per_s": {name: {kind: round(value, 3) for kind, value in limit.items()}
                         for name, limit in limits.items()},
            "share_of_limit": {name: round(mp_per_s[name] / limits[name][ran], 3) for name in per_tile}}
