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

from crackseg.acceleration import autocast, cpu_has_native_bf16, reduced_precision, training_layout
from crackseg.data import CracksDataset, collate_crops
from crackseg.inference import Predictor
from crackseg.losses import BCEDiceLoss
from crackseg.models import UNet, UNetClassifier
from crackseg.synthetic import generate
from crackseg.transforms import train_transform

GATED_SHARES = (0.0, 0.1, 0.5, 1.0)


def machine() -> Dict[str, Any]:
    cpu = platform.processor() or platform.machine()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        names = [line.split(":", 1)[1].strip() for line in cpuinfo.read_text().splitlines()
                 if line.startswith("model name")]
        cpu = names[0] if names else cpu
    return {"cpu": cpu, "threads": torch.get_num_threads(), "cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "native_bf16": cpu_has_native_bf16(),
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
              precision: str = "auto") -> Dict[str, Any]:
    """Crops per second: the plain eager fp32 U-Net (on the whole batch, and one crop at a time, its best on
    CPUs), the fast path always decoding, and the gated model on the fast path at several crack shares."""
    torch.manual_seed(0)
    crops = torch.randint(0, 256, (batch, 3, crop, crop), dtype=torch.uint8)
    model = UNetClassifier(width, crop)
    plain = Predictor(model, device, fast=False)
    fast = Predictor(model, device, precision=precision)

    def plain_single() -> int:
        for one in crops.split(1):
            plain.unet(one)
        return batch

    def gated(share: float) -> Callable[[], int]:
        def run() -> int:
            handle = drive_gate(fast.model, share, batch)
            try:
                fast.crops(crops)
            finally:
                handle.remove()
            return batch
        return run

    variants = {"plain_fp32": lambda: len(plain.unet(crops)), "plain_fp32_single": plain_single,
                "fast": lambda: len(fast.unet(crops))}
    variants.update({f"gated_{round(100 * share)}": gated(share) for share in GATED_SHARES})
    speeds = interleaved(variants, rounds, device)
    return {"fast_path": {"dtype": str(fast.dtype or torch.float32), "channels_last": True,
                          "batchnorm_folded": True, "crops_per_forward": fast.chunk or batch},
            "crops_per_s": speeds,
            "fast_over_plain": speeds["fast"] / speeds["plain_fp32"],
            "fast_over_plain_single": speeds["fast"] / speeds["plain_fp32_single"],
            "gated_over_fast": {f"{round(100 * s)}": speeds[f"gated_{round(100 * s)}"] / speeds["fast"]
                                for s in GATED_SHARES}}


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
    from crackseg.video import read_frames

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


def agreement(predictor_fast: Predictor, predictor_plain: Predictor, images: Any) -> Dict[str, float]:
    """Dice between the binarised gated masks of the fast path and of plain fp32, over all pixels of `images`."""
    counts = torch.zeros(3)
    for fast, plain in zip(predictor_fast.tiled(images()), predictor_plain.tiled(images())):
        a = fast.probs >= predictor_fast.mask_threshold
        b = plain.probs >= predictor_plain.mask_threshold
        counts += torch.tensor([float((a & b).sum()), float(a.sum()), float(b.sum())])
    both, first, second = counts.tolist()
    return {"mask_dice_fast_vs_fp32": 2 * both / (first + second) if first + second else 1.0,
            "crack_pixels_fp32": second}
