"""The machine's ISA flags, FLOP counts, the GEMM peak, and a gate driven to an exact share (timing in
interleaved rounds is `acceleration.interleaved`, which the fast path's precision choice uses too)."""

import platform
import time
from pathlib import Path
from typing import Any, Dict

import torch
from torch.utils.flop_counter import FlopCounterMode

from crackseg.inference.acceleration import cpu_has_native_bf16
from crackseg.models import UNetClassifier

GATED_SHARES = (0.0, 0.1, 0.5, 1.0)
# Instruction-set extensions that decide which kernels run: AVX2/FMA (fp32 everywhere), AVX-512, VNNI (int8 dot
# products), AVX512-BF16 and AMX (native bfloat16 / int8 matrix units).
ISA_FLAGS = ("avx2", "fma", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_tile", "amx_bf16", "amx_int8")


def machine() -> Dict[str, Any]:
    """The CPU's name, its ISA flags that decide which kernels run, torch's threads and version, the GPU if any."""
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
    """FLOPs per crop of the always-decoding U-Net, of the gate alone (encoder + head) and of the decoder alone,
    and the first two's ratio: the ideal speedup of gating when no crop is cracked."""
    x = torch.zeros(1, 3, crop, crop)
    counts = {}
    with torch.no_grad():
        for name, run in {"unet": lambda: model.decoder(*model.encoder(x)),
                          "gate": lambda: model.head(model.encoder(x)[0]), "encoder": lambda: model.encoder(x)}.items():
            counter = FlopCounterMode(display=False)
            with counter:
                run()
            counts[name] = counter.get_total_flops()
    return {"unet_gflop_per_crop": counts["unet"] / 1e9, "gate_gflop_per_crop": counts["gate"] / 1e9,
            "decoder_gflop_per_crop": (counts["unet"] - counts["encoder"]) / 1e9,
            "ideal_gated_speedup_at_0": counts["unet"] / counts["gate"]}


def gemm_peak(dtype: torch.dtype = torch.float32, size: int = 1024, seconds: float = 1.0) -> float:
    """GFLOP/s of a square matrix product in `dtype` on the CPU's threads (2 size^3 FLOPs each), run for about
    `seconds`: the machine's measured peak, which no convolution of the same type outruns."""
    a, b = torch.randn(size, size).to(dtype), torch.randn(size, size).to(dtype)
    torch.matmul(a, b)  # warm-up: kernel selection, page faults
    count, start = 0, time.perf_counter()
    while count < 3 or time.perf_counter() - start < seconds:
        torch.matmul(a, b)
        count += 1
    return 2 * size ** 3 * count / (time.perf_counter() - start) / 1e9


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
