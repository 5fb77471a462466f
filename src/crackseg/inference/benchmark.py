"""`crackseg bench`: inference and training throughput, measured in one run, printed and written as JSON.

Variants are timed in interleaved rounds (each round runs every variant once), so slow drifts of the machine hit
all of them alike and their ratios are fair. Weights are random: speed does not depend on them, and the gate's
decisions are driven so the share of decoded crops is exact.
"""
import platform
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple

import numpy as np
import torch
from torch.utils.data import DataLoader
from torch.utils.flop_counter import FlopCounterMode

from crackseg.data.datasets import CracksDataset, collate_crops
from crackseg.data.synthetic import generate
from crackseg.data.transforms import train_transform
from crackseg.inference.acceleration import (
    autocast,
    cpu_has_native_bf16,
    int8_head_supported,
    reduced_precision,
    training_layout,
)
from crackseg.inference.predictor import Predictor
from crackseg.models import UNet, UNetClassifier
from crackseg.training.losses import BCEDiceLoss

GATED_SHARES = (0.0, 0.1, 0.5, 1.0)


# Instruction-set extensions that decide which kernels run: AVX2/FMA (fp32 everywhere), AVX-512, VNNI (int8 dot
# products), AVX512-BF16 and AMX (native bfloat16 / int8 matrix units).
ISA_FLAGS = ("avx2", "fma", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_tile", "amx_bf16", "amx_int8")


def machine() -> Dict[str, Any]:
    cpu = platform.processor() or platform.machine()
    flags: set = set()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        lines = cpuinfo.read_text().splitlines()
        names = [line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")]
        cpu = names[0] if names else cpu
        flags = next((set(line.split(":", 1)[1].split()) for line in lines if line.startswith("flags")), set())
    return {"cpu": cpu, "isa": [flag for flag in ISA_FLAGS if flag in flags], "threads": torch.get_num_threads(),
            "cpu_capability": torch.backends.cpu.get_cpu_capability(), "native_bf16": cpu_has_native_bf16(),
            "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
            "torch": torch.__version__, "python": platform.python_version()}


def flops(model: UNetClassifier, crop: int) -> Dict[str, float]:
    """FLOPs per crop of the always-decoding U-Net and of the gate alone (encoder + head), and their ratio: the
    ideal speedup of gating when no crop is cracked."""
    x = torch.zeros(1, 3, crop, crop)
    counts = {}
    with torch.no_grad():
        for name, run in {"unet": lambda: model.decoder(*model.encoder(x)),
                          "gate": lambda: model.head(model.encoder(x)[0])}.items():
            counter = FlopCounterMode(display=False)
            with counter:
                run()
            counts[name] = counter.get_total_flops()
    return {"unet_gflop_per_crop": counts["unet"] / 1e9, "gate_gflop_per_crop": counts["gate"] / 1e9,
            "ideal_gated_speedup_at_0": counts["unet"] / counts["gate"]}


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def interleaved(variants: Dict[str, Callable[[], int]], rounds: int, device: torch.device,
                warmup: int = 1) -> Dict[str, float]:
    """Items per second of each variant (each call returns how many items it processed), from the median round,
    so that one round disturbed by the machine does not move the result."""
    for run in variants.values():
        for _ in range(warmup):
            run()
    rates: Dict[str, List[float]] = {name: [] for name in variants}
    for _ in range(rounds):
        for name, run in variants.items():
            _synchronize(device)
            start = time.perf_counter()
            items = run()
            _synchronize(device)
            rates[name].append(items / (time.perf_counter() - start))
    return {name: statistics.median(values) for name, values in rates.items()}


def drive_gate(model: UNetClassifier, share: float, period: int) -> Any:
    """Force the head's decisions: of every `period` consecutive crops it sees (counted across forward calls,
    so chunked batches keep the share), exactly the first round(share * period) are called cracked. Returns
    the hook handle."""
    cracked = round(share * period)
    seen = [0]

    def hook(module: Any, inputs: Any, logits: torch.Tensor) -> torch.Tensor:
        position = (seen[0] + torch.arange(logits.shape[0], device=logits.device)) % period
        seen[0] += logits.shape[0]
        forced = torch.full_like(logits, -20.0)
        forced[position < cracked] = 20.0
        return forced

    return model.head.register_forward_hook(hook)


def inference(width: int, crop: int, batch: int, rounds: int, device: torch.device,
              precision: str = "auto", onnx: bool = True) -> Dict[str, Any]:
    """Crops per second: the plain eager fp32 U-Net (on the whole batch, and one crop at a time, its best on
    CPUs), the fast path always decoding, and the gated model on the fast path at several crack shares; where the
    fast path's head is int8 (fp32 CPUs), also the full-precision head gated at 0 and 100%; with `onnx`, the
    onnxruntime engine always decoding and gated at 0 and 100%."""
    torch.manual_seed(0)
    crops = torch.randint(0, 256, (batch, 3, crop, crop), dtype=torch.uint8)
    model = UNetClassifier(width, crop).eval()
    plain = Predictor(model, device, fast=False)
    fast = Predictor(model, device, precision=precision)

    def plain_single() -> int:
        for one in crops.split(1):
            plain.unet(one)
        return batch

    def gated(predictor: Predictor, share: float) -> Callable[[], int]:
        def run() -> int:
            handle = drive_gate(predictor.model, share, batch)
            try:
                predictor.crops(crops)
            finally:
                handle.remove()
            return batch
        return run

    variants = {"plain_fp32": lambda: len(plain.unet(crops)), "plain_fp32_single": plain_single,
                "fast": lambda: len(fast.unet(crops))}
    variants.update({f"gated_{round(100 * share)}": gated(fast, share) for share in GATED_SHARES})
    if fast.int8_head:
        full = Predictor(model, device, precision=precision, head="full")
        variants.update({f"gated_{round(100 * share)}_full_head": gated(full, share) for share in (0.0, 1.0)})
    if onnx:
        engine = Predictor(model, device, engine="onnxruntime")
        variants["onnxruntime"] = lambda: len(engine.unet(crops))
        variants.update({f"onnxruntime_gated_{round(100 * share)}": onnx_gated(engine, crops, share)
                         for share in (0.0, 1.0)})
    speeds = interleaved(variants, rounds, device)
    report = {"fast_path": {"dtype": str(fast.dtype or torch.float32), "channels_last": True,
                            "batchnorm_folded": True, "int8_head": fast.int8_head,
                            "crops_per_forward": fast.chunk or batch},
              "crops_per_s": speeds,
              "fast_over_plain": speeds["fast"] / speeds["plain_fp32"],
              "fast_over_plain_single": speeds["fast"] / speeds["plain_fp32_single"],
              "gated_over_fast": {f"{round(100 * s)}": speeds[f"gated_{round(100 * s)}"] / speeds["fast"]
                                  for s in GATED_SHARES}}
    if fast.int8_head:
        report["full_head_gated_over_fast"] = {s: speeds[f"gated_{s}_full_head"] / speeds["fast"] for s in ("0", "100")}
    if onnx:
        report["onnxruntime_over_fast"] = speeds["onnxruntime"] / speeds["fast"]
        report["onnxruntime_over_plain"] = speeds["onnxruntime"] / speeds["plain_fp32"]
        report["onnxruntime_gated_over_onnxruntime"] = {s: speeds[f"onnxruntime_gated_{s}"] / speeds["onnxruntime"]
                                                        for s in ("0", "100")}
    return report


def onnx_gated(predictor: Predictor, crops: torch.Tensor, share: float) -> Callable[[], int]:
    """The onnxruntime engine's gated path with its decisions forced as `drive_gate` forces torch's: of the batch,
    the crops at positions below round(share * len(crops)) are decoded (the gate graph runs on all)."""
    cracked = round(share * len(crops))

    def run() -> int:
        start = 0
        for chunk in predictor._chunks(crops):
            logits, features = predictor.model.encode(predictor._input(chunk))
            rows = np.arange(len(chunk))[start + np.arange(len(chunk)) < cracked]
            if len(rows) == len(chunk):
                predictor.model.decode(features)
            elif len(rows):
                predictor.model.decode(features, rows)
            start += len(chunk)
        return len(crops)
    return run


def training(width: int, crop: int, batch_images: int, steps: int, rounds: int, device: torch.device,
             precision: str = "auto", data_root: Optional[Path] = None) -> Dict[str, Any]:
    """Stage-1 training crops per second with the data loader included (plain fp32 eager against the fast
    path, as `--amp` trains: autocast and channels-last where the hardware has reduced precision), and the
    loader's own crops per second."""
    with tempfile.TemporaryDirectory() as temporary:
        if data_root is None:
            data_root = generate(Path(temporary), seed=0, image_size=2 * crop,
                                 counts={"train": batch_images * steps, "valid": 1})
        dataset = CracksDataset(data_root, "train", train_transform(crop))
        loader = DataLoader(dataset, batch_size=batch_images, shuffle=True, collate_fn=collate_crops,
                            drop_last=True, pin_memory=device.type == "cuda")
        for _ in loader:  # decode every image once (the dataset keeps them), as in every epoch after the first
            pass
        dtype = reduced_precision(device, precision)
        criterion = BCEDiceLoss(bce_weight=0.9)

        def trainer(dtype: Optional[torch.dtype]) -> Callable[[], int]:
            torch.manual_seed(0)
            model = training_layout(UNet(width, skip_dropout=0.5).to(device).train(), reduced=dtype is not None)
            optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)

            def run() -> int:
                crops = 0
                for step, batch in enumerate(loader):
                    if step == steps:
                        break
                    images = batch["images"].to(device, non_blocking=True)
                    masks = batch["masks"].to(device, non_blocking=True)
                    with autocast(device, dtype):
                        loss, _ = criterion(model(images), masks)
                    optimizer.zero_grad(set_to_none=True)
                    loss.backward()
                    optimizer.step()
                    crops += len(images)
                return crops
            return run

        def load_only() -> int:
            return sum(len(batch["images"]) for batch in loader)

        speeds = interleaved({"plain_fp32": trainer(None), "fast": trainer(dtype), "loader_only": load_only},
                             rounds, device)
    return {"fast_path": {"dtype": str(dtype or torch.float32), "channels_last": dtype is not None},
            "crops_per_s": speeds,
            "fast_over_plain": speeds["fast"] / speeds["plain_fp32"],
            "loader_over_training": speeds["loader_only"] / max(speeds["plain_fp32"], speeds["fast"])}


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
    default, the fp32 fast path with an int8 head (where supported), and with `onnx` the onnxruntime engine."""
    plain = Predictor(model, device, fast=False)
    variants = {"fast": Predictor(model, device, precision=precision)}
    if int8_head_supported(device):
        variants["fp32_int8_head"] = Predictor(model, device, precision="fp32", head="int8")
    if onnx:
        variants["onnxruntime"] = Predictor(model, device, engine="onnxruntime")
    counts = {name: torch.zeros(5) for name in variants}  # both, ours, plain's crack pixels; tiles alike, tiles
    for results in zip(plain.tiled(images()), *(variant.tiled(images()) for variant in variants.values())):
        reference = results[0]
        b = reference.probs >= plain.mask_threshold
        for name, result in zip(variants, results[1:]):
            a = result.probs >= variants[name].mask_threshold
            counts[name] += torch.tensor([float((a & b).sum()), float(a.sum()), float(b.sum()),
                                          float((result.decoded == reference.decoded).sum()), len(reference.grid)])
    report: Dict[str, Any] = {"crack_pixels_fp32": float(counts["fast"][2])}
    for name, (both, ours, theirs, alike, tiles) in counts.items():
        report[name] = {"mask_dice_vs_fp32": float(2 * both / (ours + theirs)) if ours + theirs else 1.0,
                        "tiles_gated_alike": float(alike / tiles), "tiles": int(tiles)}
    return report
