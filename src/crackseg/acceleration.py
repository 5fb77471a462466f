"""The inference fast path: channels-last memory format and reduced precision where the hardware has it.

Reduced precision is fp16 on CUDA and bfloat16 on CPUs with native bfloat16 arithmetic (AVX512-BF16 or AMX);
elsewhere (e.g. AVX2-only CPUs, where bfloat16 is emulated and slower than fp32) the fast path stays in fp32.
"""
from contextlib import nullcontext
from pathlib import Path
from typing import ContextManager, Optional

import torch
from torch import nn

NATIVE_BF16_FLAGS = ("avx512_bf16", "amx_bf16")
PRECISIONS = ("auto", "fp32", "bf16", "fp16")


def cpu_has_native_bf16() -> bool:
    """True when oneDNN can run bfloat16 and the CPU does bfloat16 arithmetic in hardware."""
    if not torch.ops.mkldnn._is_mkldnn_bf16_supported():
        return False
    cpuinfo = Path("/proc/cpuinfo")
    if not cpuinfo.is_file():  # not Linux: trust oneDNN's own check
        return True
    flags = set(cpuinfo.read_text().split())
    return any(flag in flags for flag in NATIVE_BF16_FLAGS)


def reduced_precision(device: torch.device, precision: str = "auto") -> Optional[torch.dtype]:
    """The autocast dtype for `precision` on `device`, or None for fp32.

    auto: fp16 on CUDA, bf16 on CPUs with native bf16, else fp32. An explicit choice is honoured as given.
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    if precision == "auto":
        if device.type == "cuda":
            return torch.float16
        return torch.bfloat16 if device.type == "cpu" and cpu_has_native_bf16() else None
    return {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]


def autocast(device: torch.device, dtype: Optional[torch.dtype]) -> ContextManager:
    """torch.autocast for `dtype`, or nothing for fp32."""
    return torch.autocast(device.type, dtype=dtype) if dtype is not None else nullcontext()


def to_channels_last(model: nn.Module) -> nn.Module:
    """Convolution weights in NHWC order: oneDNN and cuDNN then skip layout conversions between layers."""
    return model.to(memory_format=torch.channels_last)
