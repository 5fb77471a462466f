"""Inference and training throughput of the U-Net, the fast path and the gated model, with random weights: speed
does not depend on them, and the gate's decisions are driven so the share of decoded crops is exact."""

import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Dict, Optional

import numpy as np
import torch
from torch.utils.data import DataLoader

from crackseg.bench.timing import GATED_SHARES, drive_gate
from crackseg.data.datasets import CracksDataset, collate_crops
from crackseg.data.synthetic import generate
from crackseg.data.transforms import train_transform
from crackseg.inference.acceleration import (
    autocast,
    interleaved,
    reduced_precision,
    training_layout,
)
from crackseg.inference.predictor import Predictor
from crackseg.models import UNet, UNetClassifier
from crackseg.training.losses import BCEDiceLoss


def inference(width: int, crop: int, batch: int, rounds: int, device: torch.device,
              precision: str = "auto", onnx: bool = True, compile_backend: Optional[str] = None) -> Dict[str, Any]:
    """Crops per second: the plain eager fp32 U-Net (on the whole batch, and one crop at a time, its best on
    CPUs), the fast path always decoding, and the gated model on the fast path at several crack shares; where the
    fast path's head is int8 (fp32 CPUs), also the full-precision head gated at 0 and 100%; with `onnx`, the
    onnxruntime engine always decoding and gated at 0 and 100%; with `compile_backend` (torch.compile's, e.g.
    "inductor"), the fast path with its encoder, decoder and head compiled, always decoding and gated at 0 and
    100%, its compile time and how far its outputs are from the eager fast path's."""
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
    if compile_backend:
        started = time.perf_counter()
        compiled = compiled_predictor(model, device, precision, compile_backend)
        for share in (0.0, 1.0):  # both graphs (gated, always decoding) built before timing
            gated(compiled, share)()
        compiling = time.perf_counter() - started
        variants["compiled"] = lambda: len(compiled.unet(crops))
        variants.update({f"compiled_gated_{round(100 * share)}": gated(compiled, share) for share in (0.0, 1.0)})
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
    if compile_backend:
        with torch.no_grad():
            eager, other = fast.crops(crops), compiled.crops(crops)
        report["compiled"] = {"backend": compile_backend, "compile_s": compiling,
                              "compiled_over_fast": speeds["compiled"] / speeds["fast"],
                              "gated_over_eager_gated": {s: speeds[f"compiled_gated_{s}"] / speeds[f"gated_{s}"]
                                                         for s in ("0", "100")},
                              "max_abs_diff": {"mask_prob": float((eager[0] - other[0]).abs().max()),
                                               "gate_prob": float((eager[1] - other[1]).abs().max())}}
    if onnx:
        report["onnxruntime_over_fast"] = speeds["onnxruntime"] / speeds["fast"]
        report["onnxruntime_over_plain"] = speeds["onnxruntime"] / speeds["plain_fp32"]
        report["onnxruntime_gated_over_onnxruntime"] = {s: speeds[f"onnxruntime_gated_{s}"] / speeds["onnxruntime"]
                                                        for s in ("0", "100")}
    return report


def compiled_predictor(model: UNetClassifier, device: torch.device, precision: str, backend: str) -> Predictor:
    """The fast path with its encoder, decoder and head run through torch.compile (compiled on first use), with the
    float gate (the int8 one would run its own encoder, not the compiled one)."""
    predictor = Predictor(model, device, precision=precision, gate="float")
    for part in ("encoder", "decoder", "head"):
        setattr(predictor.model, part, torch.compile(getattr(predictor.model, part), backend=backend))
    return predictor


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
