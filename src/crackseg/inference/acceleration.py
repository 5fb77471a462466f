"""The inference fast path: BatchNorm folded into the layers before it, weights cast once to reduced precision
where the hardware has it, channels-last memory format, and on CPUs ReLUs fused into the convolutions, max-pools
as strided maxima (`fuse_for_cpu`) and batches cut into cache-sized chunks.

Reduced precision is fp16 on CUDA and bfloat16 on CPUs with native bfloat16 arithmetic (AVX512-BF16 or AMX);
elsewhere (e.g. AVX2-only CPUs, where bfloat16 is emulated and slower than fp32) the fast path stays in fp32.
Native bfloat16 is not always the faster one: the model's inference runs in whichever of fp32 and bf16 ran a
chunk of its tiles faster on this CPU (`inference_precision`), measured once per model shape and process in
interleaved rounds (`interleaved`, which `crackseg bench` times with too).
Training uses autocast instead (`--amp`), which keeps fp32 master weights.
"""
import copy
import statistics
import time
import warnings
from contextlib import nullcontext
from functools import lru_cache
from pathlib import Path
from typing import Callable, ContextManager, Dict, FrozenSet, List, Optional, Tuple

import torch
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval, fuse_linear_bn_eval

from crackseg.errors import ConfigError

NATIVE_BF16_FLAGS = ("avx512_bf16", "amx_bf16")
PRECISIONS = ("auto", "fp32", "bf16", "fp16")


@lru_cache(maxsize=1)
def cpu_flags() -> Optional[FrozenSet[str]]:
    """The CPU's feature flags as Linux reports them in /proc/cpuinfo (read once), or None elsewhere."""
    cpuinfo = Path("/proc/cpuinfo")
    return frozenset(cpuinfo.read_text().split()) if cpuinfo.is_file() else None


def cpu_has_native_bf16() -> bool:
    """True when oneDNN can run bfloat16 and the CPU does bfloat16 arithmetic in hardware."""
    if not torch.ops.mkldnn._is_mkldnn_bf16_supported():
        return False
    flags = cpu_flags()
    if flags is None:  # not Linux: trust oneDNN's own check
        return True
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


TIMED = {"fp32": None, "bf16": torch.bfloat16}  # what `auto` chooses between on CPUs with native bf16
# (width, crop, threads, head) -> the faster of fp32 (None) and bf16 for that model shape and head setting on
# this CPU, in this process
_MEASURED: Dict[Tuple[int, int, int, str], Optional[torch.dtype]] = {}


def inference_precision(model: nn.Module, device: torch.device, precision: str = "auto",
                        head: str = "auto") -> Optional[torch.dtype]:
    """The fast path's dtype for `model` (a `UNetClassifier`): `reduced_precision`, except that `auto` on a CPU
    with native bf16 takes whichever of fp32 (with the head `use_int8_head` gives it for `head`) and bf16 ran the
    model faster here. Native bf16 does not make bf16 faster everywhere: on an AMD EPYC with AVX512-BF16 the fast
    path ran twice as fast in bf16 as in fp32, on an Intel Xeon with AVX512-BF16 and no AMX 1.36-1.5x as fast in
    fp32 (docs/PERFORMANCE.md, "CPU kinds"). Measured once per model shape and head setting in a process, in about
    2 s for the shipped model; `head="int8"` runs in fp32 only, so it is not timed."""
    if not precision_is_timed(device, precision):
        return reduced_precision(device, precision)
    if head == "int8":  # the int8 head runs in fp32 only (`use_int8_head`): nothing to choose between
        return None
    key = (model.width, model.crop_size, torch.get_num_threads(), head)
    if key not in _MEASURED:
        rates = _rates(model, device, head)
        _MEASURED[key] = TIMED[max(rates, key=rates.get)]
    return _MEASURED[key]


def precision_is_timed(device: torch.device, precision: str) -> bool:
    """Whether `inference_precision` times fp32 against bf16: `auto` on a CPU with native bf16."""
    return precision == "auto" and device.type == "cpu" and cpu_has_native_bf16()


def _rates(model: nn.Module, device: torch.device, head: str = "auto") -> Dict[str, float]:
    """Tiles a second of the fast path in fp32 (with the head `use_int8_head` gives it for `head`) and in bf16, each
    running a chunk of random tiles through the encoder, the head and the decoder, in interleaved rounds."""
    def chunk(dtype: Optional[torch.dtype]) -> Callable[[], int]:
        fast = inference_copy(model, device, dtype, use_int8_head(device, dtype, head))
        count = chunk_size(device, model.width, model.crop_size, dtype) or 1
        tiles = torch.rand(count, 3, model.crop_size, model.crop_size, generator=torch.Generator().manual_seed(0))
        tiles = tiles.to(device, dtype or torch.float32).contiguous(memory_format=torch.channels_last)

        @torch.inference_mode()
        def run() -> int:
            bottleneck, skips = fast.encoder(tiles)
            fast.head(bottleneck)
            fast.decoder(bottleneck, skips)
            return count
        return run
    return interleaved({name: chunk(dtype) for name, dtype in TIMED.items()}, rounds=2, device=device)


def synchronize(device: torch.device) -> None:
    """Wait for a GPU's queued work, so that a timer measures it (nothing to wait for on CPUs)."""
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
            synchronize(device)
            start = time.perf_counter()
            items = run()
            synchronize(device)
            rates[name].append(items / (time.perf_counter() - start))
    return {name: statistics.median(values) for name, values in rates.items()}


def autocast(device: torch.device, dtype: Optional[torch.dtype]) -> ContextManager:
    """torch.autocast for `dtype`, or nothing for fp32."""
    return torch.autocast(device.type, dtype=dtype) if dtype is not None else nullcontext()


# Batches whose feature maps outgrow the CPU's caches run fewer crops a second; chunks of about this many bytes of
# activations kept the fast path at its best (docs/PERFORMANCE.md, "What made the difference", 5).
CPU_CHUNK_BYTES = 32 * 2**20


def fold_batchnorm(module: nn.Module) -> nn.Module:
    """In place: every BatchNorm that follows a Conv2d or Linear inside an `nn.Sequential` is folded into that
    layer's weight and bias and replaced by `nn.Identity`. The result computes the same function in eval mode
    with one pass less over every feature map; it must not be trained further."""
    for child in module.children():
        fold_batchnorm(child)
    if isinstance(module, nn.Sequential):
        for index in range(len(module) - 1):
            layer, norm = module[index], module[index + 1]
            if isinstance(layer, nn.Conv2d) and isinstance(norm, nn.BatchNorm2d):
                module[index], module[index + 1] = fuse_conv_bn_eval(layer, norm), nn.Identity()
            elif isinstance(layer, nn.Linear) and isinstance(norm, nn.BatchNorm1d):
                module[index], module[index + 1] = fuse_linear_bn_eval(layer, norm), nn.Identity()
    return module


def pointwise_convolution_available() -> bool:
    """True where torch has oneDNN's convolution with a fused activation (`mkldnn::_convolution_pointwise`, the
    kernel torch.compile's CPU backend fuses into)."""
    return torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_convolution_pointwise")


class ConvReLU(nn.Module):
    """A Conv2d (zero padding) and the ReLU after it in one oneDNN call, ReLU applied as the convolution writes its
    output: the same values as the two layers, without a second pass over the feature map, except that a NaN comes
    out as 0 (nn.ReLU keeps it). For inference only: the call records no gradients and ignores autocast, so the
    input must already be in the weights' dtype. Inputs of other dtypes than fp32 and bf16, and bf16 on CPUs where
    oneDNN has no bf16 kernels (no AVX512BW/VL/DQ or AVX-NE-CONVERT; the call would abort there), run the two
    layers."""

    def __init__(self, conv: nn.Conv2d):
        super().__init__()
        self.conv = conv

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        conv = self.conv
        native = x.dtype is torch.float32 or (x.dtype is torch.bfloat16
                                              and torch.ops.mkldnn._is_mkldnn_bf16_supported())
        if not native:
            return torch.relu_(conv(x))
        return torch.ops.mkldnn._convolution_pointwise(x, conv.weight, conv.bias, list(conv.padding),
                                                       list(conv.stride), list(conv.dilation), conv.groups, "relu",
                                                       [], "")


class MaxPool2x2(nn.Module):
    """2x2 max-pooling with stride 2 as strided maxima: the values of nn.MaxPool2d(2), 10-18x as fast as torch's
    CPU kernel on 16-channel bf16 maps in channels-last (which skips vectorising them). Rows first: in
    channels-last, a row pair's maximum runs over whole contiguous rows (W x C values), and only the half-size
    result is paired by columns; 1.4-1.6x as fast as four quarter views' three maxima (bf16, 16-128 channels)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        height, width = x.shape[-2] // 2 * 2, x.shape[-1] // 2 * 2  # odd sides: the last row / column is dropped
        x = x[..., :height, :width]
        rows = torch.maximum(x[..., 0::2, :], x[..., 1::2, :])
        return torch.maximum(rows[..., 0::2], rows[..., 1::2])


def fuse_for_cpu(module: nn.Module) -> nn.Module:
    """In place, on a BatchNorm-folded eval copy for the CPU: each Conv2d followed by a ReLU (with the folded
    BatchNorm's Identity between them) inside an `nn.Sequential` becomes a `ConvReLU` (where
    `pointwise_convolution_available`), each 2x2 max-pool a `MaxPool2x2`. For inference only (`ConvReLU`). The same
    function: on a 2-core Xeon with AMX the shipped model's bf16 fast path ran 1.4x as fast on real photos
    (docs/PERFORMANCE.md, "CPU kinds")."""
    fuse = pointwise_convolution_available()
    for name, child in module.named_children():
        if isinstance(child, nn.MaxPool2d) and _is_2x2(child):
            setattr(module, name, MaxPool2x2())
        else:
            fuse_for_cpu(child)
    if fuse and isinstance(module, nn.Sequential):
        for index, layer in enumerate(module):
            after = index + 1
            while after < len(module) and isinstance(module[after], nn.Identity):
                after += 1
            if (isinstance(layer, nn.Conv2d) and layer.padding_mode == "zeros" and not isinstance(layer.padding, str)
                    and after < len(module) and isinstance(module[after], nn.ReLU)):
                module[index], module[after] = ConvReLU(layer), nn.Identity()
    return module


def _is_2x2(pool: nn.MaxPool2d) -> bool:
    return (pool.kernel_size in (2, (2, 2)) and pool.stride in (2, (2, 2)) and pool.padding in (0, (0, 0))
            and pool.dilation in (1, (1, 1)) and not pool.ceil_mode and not pool.return_indices)


def training_layout(model: nn.Module, reduced: bool) -> nn.Module:
    """The memory format for training: channels-last with reduced precision, where it ran faster; the default NCHW
    in fp32, where channels-last was measured slower (docs/PERFORMANCE.md)."""
    return model.to(memory_format=torch.channels_last) if reduced else model


HEADS = ("auto", "int8", "full")


def int8_head_supported(device: torch.device) -> bool:
    """True where torch can run int8 dynamic-quantised Linear layers: CPUs with a quantised engine."""
    engines = set(torch.backends.quantized.supported_engines) - {"none"}
    return device.type == "cpu" and bool(engines) and hasattr(torch.ao.quantization, "quantize_dynamic")


def use_int8_head(device: torch.device, dtype: Optional[torch.dtype], head: str = "auto") -> bool:
    """Whether the fast path runs the gate's head with int8 weights.

    auto and int8: on CPUs that run in fp32 (no native bf16, or `--precision fp32`), where reading the head's fp32
    weights on every chunk costs most of the gate (`int8` is an error elsewhere); bf16 weights are already half
    the bytes and stay as they are. `full` never.
    """
    if head not in HEADS:
        raise ValueError(f"head must be one of {HEADS}, got {head!r}")
    supported = int8_head_supported(device) and dtype is None
    if head == "int8" and not supported:
        raise ConfigError(f"--head int8 runs on CPUs in fp32 only (torch's quantised engines take fp32 inputs), "
                         f"not on {device} in {dtype}: add --precision fp32")
    return supported and head != "full"


def quantize_linears(module: nn.Module) -> nn.Module:
    """A copy of `module` whose Linear layers hold int8 weights (one scale per output row) and quantise their
    inputs on the fly (torch.ao dynamic quantisation, fbgemm/oneDNN kernels): a quarter of the fp32 weight
    bytes. Inputs and outputs stay fp32. torch.ao's eager quantisation is deprecated in favour of torchao, a
    package this project does not depend on; the kernels are still torch's own."""
    from torch.ao.quantization import per_channel_dynamic_qconfig, quantize_dynamic

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.filterwarnings("ignore", message=".*quantize_per_tensor.*")
        return quantize_dynamic(module, {nn.Linear: per_channel_dynamic_qconfig}, dtype=torch.qint8, inplace=False)


def inference_copy(model: nn.Module, device: torch.device, dtype: Optional[torch.dtype],
                   int8_head: bool = False, fuse: bool = True) -> nn.Module:
    """A copy of `model` for the fast path: eval mode, BatchNorm folded, on `device`, channels-last, weights in
    `dtype` (None: fp32), on CPUs with `fuse` ReLUs fused into the convolutions and max-pools replaced
    (`fuse_for_cpu`), and with `int8_head` the gate's head quantised (`quantize_linears`). Casting the weights
    once instead of autocasting on every call matters for the gate: re-casting its 53.5M-weight head cost about
    as much as the head's arithmetic, on every batch."""
    fast = fold_batchnorm(copy.deepcopy(model).eval()).to(device, memory_format=torch.channels_last)
    if fuse and device.type == "cpu":
        fuse_for_cpu(fast)
    fast = fast.to(dtype) if dtype is not None else fast
    if int8_head:
        fast.head = quantize_linears(fast.head)
    return fast


def chunk_size(device: torch.device, width: int, crop: int, dtype: Optional[torch.dtype]) -> Optional[int]:
    """Crops per forward pass on the CPU: as many as keep the widest full-resolution maps (the decoder's last
    concatenation, 2 x width channels) within `CPU_CHUNK_BYTES`; None (the whole batch) on GPUs."""
    if device.type != "cpu":
        return None
    element = torch.finfo(dtype).bits // 8 if dtype is not None else 4
    return max(1, CPU_CHUNK_BYTES // (2 * width * crop * crop * element))
