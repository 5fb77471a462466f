"""The int8 gate: the encoder's convolutions in int8 on CPUs, for the gate's decision on every tile.

The gate runs the whole encoder on every tile, so on footage that is mostly crack-free the encoder is most of the
work. `QuantizedEncoder` is the BatchNorm-folded encoder with int8 weights (one scale per output channel) and
unsigned activations (one scale per layer, zero point 0: every activation follows a ReLU), run by torch's
quantised CPU kernels (fbgemm / oneDNN). The activation ranges come from the model's own BatchNorm statistics
(`activation_ranges`): no calibration data, the same quantisation on every run. Activations have 8 bits where the
CPU has VNNI or AMX, 7 elsewhere (`activation_levels`).

`Int8Gated` decides with the int8 encoder and the model's own head, then decodes the tiles it gates from the int8
encoder's skips, dequantised into the fast path's dtype. On a 2-core AMD EPYC with AVX512-BF16 and VNNI (Zen 4)
gated predict ran 1.27-1.31x as fast with the int8 gate as with the float one (bf16), and its masks of the 80
nha12d valid photos reached Dice 0.993 against plain fp32's (docs/PERFORMANCE.md, "The int8 gate").
`--gate-precision auto` takes it on CPUs with VNNI or AMX where it ran faster.
"""
import copy
import warnings
from contextlib import contextmanager
from typing import Dict, Iterator, List, Optional, Tuple

import torch
from torch import nn

from crackseg.errors import ConfigError
from crackseg.inference.acceleration import chunk_size, cpu_flags, fold_batchnorm, interleaved
from crackseg.models import UNetClassifier

VNNI_FLAGS = ("avx512_vnni", "avx_vnni", "amx_int8")  # int8 dot products summed in 32 bits
ACTIVATION_SPREAD = 6.0  # an activation's range: its BatchNorm's mean + this many of its standard deviations
WEIGHT_LEVELS = 127  # symmetric int8 weights
GATES = ("auto", "int8", "float")
# (width, crop, threads, dtype, head's type) -> whether the int8 gate ran faster than the float one, in this process
_MEASURED: Dict[Tuple[int, int, int, str, str], bool] = {}


def int8_gate_supported(device: torch.device) -> bool:
    """True on CPUs where torch's quantised engine is an x86 one (fbgemm, oneDNN), whose int8 convolutions the
    int8 gate runs on."""
    return (device.type == "cpu" and torch.backends.quantized.engine in ("x86", "fbgemm", "onednn")
            and hasattr(torch.ao.nn.intrinsic, "quantized"))  # gone once torch drops its quantised tensors


@contextmanager
def quiet() -> Iterator[None]:
    """Silence torch's deprecation of its quantised tensors and eager quantisation (torch 2.14 points to torchao, a
    package this project does not depend on; the kernels are torch's own): users cannot act on it."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.filterwarnings("ignore", message=".*quantized tensor creation functions.*")
        yield


def activation_levels() -> int:
    """Levels of the unsigned activations: 255 (8 bits) where the CPU sums int8 products in 32 bits (VNNI, AMX),
    else 127 (7 bits): AVX2's kernels add pairs of u8 x s8 products in 16 bits, which 8-bit activations can
    saturate."""
    flags = cpu_flags() or frozenset()
    return 255 if any(flag in flags for flag in VNNI_FLAGS) else 127


def activation_ranges(encoder: nn.Module) -> List[float]:
    """Per convolution of a `VGGEncoder` (BatchNorm not folded), the range its ReLU'd outputs are quantised to: the
    largest over its channels of BatchNorm's beta + `ACTIVATION_SPREAD` |gamma|. After BatchNorm each channel has
    mean beta and standard deviation |gamma| on the data the network was trained on, so the statistics stored
    with the model calibrate it: no calibration data (data-free quantisation, as in Nagel et al., ICCV 2019).
    On the shipped model these ranges are within a factor of 0.9-1.8 of the 99.99th percentiles of the
    activations on synthetic crack and hard-negative photos."""
    ranges = []
    for block in (*encoder.blocks, encoder.bottleneck):
        for layer in block:
            if isinstance(layer, nn.BatchNorm2d):
                spread = layer.bias.detach().float() + ACTIVATION_SPREAD * layer.weight.detach().float().abs()
                ranges.append(max(float(spread.max()), 1e-6))
    return ranges


def _quantized_conv_relu(conv: nn.Conv2d, output_range: float, levels: int) -> nn.Module:
    from torch.ao.nn.intrinsic.quantized import ConvReLU2d

    weight = conv.weight.detach().float()
    scales = (weight.abs().amax(dim=(1, 2, 3)) / WEIGHT_LEVELS).clamp_min(1e-12).double()
    zeros = torch.zeros(len(scales), dtype=torch.int64)
    quantized = ConvReLU2d(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding,
                           conv.dilation, conv.groups, bias=True)
    bias = conv.bias.detach().float() if conv.bias is not None else torch.zeros(conv.out_channels)
    quantized.set_weight_bias(torch.quantize_per_channel(weight, scales, zeros, 0, torch.qint8), bias)
    quantized.scale, quantized.zero_point = output_range / levels, 0
    return quantized


class QuantizedEncoder(nn.Module):
    """The VGG encoder in int8: float tiles (N, 3, H, W) in [0, 1] -> (bottleneck, skips) as quantised tensors
    (quint8, channels-last), the values of the float encoder to within its activation scales."""

    def __init__(self, encoder: nn.Module, levels: int):
        """`encoder`: a `VGGEncoder` in eval mode (its BatchNorm calibrates, `activation_ranges`); `levels`: of the
        activations (`activation_levels`)."""
        super().__init__()
        ranges = iter(activation_ranges(encoder))
        folded = fold_batchnorm(copy.deepcopy(encoder).float().eval()).cpu()
        with quiet():
            self.blocks = nn.ModuleList(
                nn.Sequential(*(_quantized_conv_relu(conv, next(ranges), levels) for conv in block
                                if isinstance(conv, nn.Conv2d)))
                for block in (*folded.blocks, folded.bottleneck))
        self.input_scale = 1.0 / levels

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, List[torch.Tensor]]:
        with quiet():
            x = torch.quantize_per_tensor(x.float().contiguous(memory_format=torch.channels_last), self.input_scale,
                                          0, torch.quint8)
        skips = []
        for block in self.blocks[:-1]:
            x = block(x)
            skips.append(x)
            x = torch.nn.functional.max_pool2d(x, 2)
        return self.blocks[-1](x), skips


def quantize_encoder(model: nn.Module, levels: Optional[int] = None) -> QuantizedEncoder:
    """The int8 encoder of a `UNetClassifier` (`QuantizedEncoder`) with `levels` [`activation_levels`]."""
    return QuantizedEncoder(model.encoder, activation_levels() if levels is None else levels)


def dequantized(x: torch.Tensor, dtype: torch.dtype, rows: Optional[List[int]] = None) -> torch.Tensor:
    """A quantised tensor (zero point 0, as `QuantizedEncoder` writes them), or its `rows`, as a float tensor of
    `dtype`, channels-last (the fast path's layout). Rows are taken one slice (a view) at a time: indexing a
    quantised tensor with a list copied through a slow path (9x slower on the skips of 4 of 32 tiles)."""
    values = x.int_repr() if rows is None else torch.cat([x[row:row + 1].int_repr() for row in rows])
    return values.to(dtype).mul_(x.q_scale()).contiguous(memory_format=torch.channels_last)


class Int8Gated(nn.Module):
    """The gated model with the int8 encoder: (tiles (N, 3, s, s)) -> (masks (N, 1, s, s), crack probs (N, 1)), as
    `UNetClassifier.forward`. `fast` is the fast path's copy (`acceleration.inference_copy`), whose head, decoder
    and gate run on the int8 encoder's dequantised outputs, in the copy's dtype; `fast.encoder` still serves
    `Predictor.segment` and `unet`."""

    def __init__(self, fast: nn.Module, encoder: QuantizedEncoder, dtype: Optional[torch.dtype]):
        super().__init__()
        self.fast = fast
        self.quantized = encoder
        self.dtype = dtype or torch.float32

    def __getattr__(self, name: str):
        try:
            return super().__getattr__(name)
        except AttributeError:  # encoder, decoder, head, gate, size_multiple, crop_size, ...: the fast copy's
            return getattr(super().__getattr__("fast"), name)

    def forward(self, images: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        fast, dtype = self.fast, self.dtype
        n, _, height, width = images.shape
        bottleneck, skips = self.quantized(images)
        crack_probs = torch.sigmoid(fast.head(dequantized(bottleneck, dtype)).float())
        masks = torch.zeros(n, 1, height, width, dtype=crack_probs.dtype, device=images.device)
        cracked = fast.gate(crack_probs).nonzero().squeeze(1)
        if cracked.numel():
            rows = None if cracked.numel() == n else cracked.tolist()  # all cracked: no row copies
            logits = fast.decoder(dequantized(bottleneck, dtype, rows), [dequantized(skip, dtype, rows)
                                                                         for skip in skips])
            masks[cracked] = torch.sigmoid(logits.float())
        return masks, crack_probs


def int8_gated(model: nn.Module, fast: nn.Module, device: torch.device, dtype: Optional[torch.dtype],
               gate: str = "auto") -> Optional[Int8Gated]:
    """The fast path's copy `fast` of `model` (a `UNetClassifier`) gated by its int8 encoder (`Int8Gated`), or None
    for the float gate. int8: where `int8_gate_supported` and the model computes as `UNetClassifier` does (an
    error elsewhere); float: never; auto: where int8 can run, its activations get 8 bits (VNNI or AMX: with 7,
    the masks of nha12d fell to Dice 0.986 against fp32's) and it ran faster than the float gate on a chunk of
    tiles here (interleaved rounds, about a second, once per model shape, dtype and head in a process)."""
    if gate not in GATES:
        raise ValueError(f"gate must be one of {GATES}, got {gate!r}")
    if gate == "float":
        return None
    own_forward = type(model).forward is not UNetClassifier.forward  # a subclass computing otherwise
    if not int8_gate_supported(device) or own_forward:
        if gate == "int8":
            raise ConfigError(f"--gate-precision int8 runs on CPUs with torch's x86 quantised engine and for "
                              f"UNetClassifier's own computation, not on {device} (engine "
                              f"{torch.backends.quantized.engine!r}) for {type(model).__name__}")
        return None
    key = (model.width, model.crop_size, torch.get_num_threads(), str(dtype), type(fast.head).__name__)
    if gate == "auto" and (activation_levels() < 255 or _MEASURED.get(key) is False):
        return None
    gated = Int8Gated(fast, quantize_encoder(model), dtype)
    if gate == "auto":
        if key not in _MEASURED:
            _MEASURED[key] = _int8_gate_faster(gated, device)
        if not _MEASURED[key]:
            return None
    return gated


def _int8_gate_faster(gated: Int8Gated, device: torch.device) -> bool:
    """Whether the int8 encoder and the head ran a chunk of random tiles faster than the float encoder and head."""
    fast, dtype = gated.fast, gated.dtype
    count = chunk_size(device, fast.width, fast.crop_size, None if dtype is torch.float32 else dtype) or 1
    tiles = torch.rand(count, 3, fast.crop_size, fast.crop_size, generator=torch.Generator().manual_seed(0))
    tiles = tiles.to(device, dtype).contiguous(memory_format=torch.channels_last)

    @torch.inference_mode()
    def floating() -> int:
        fast.head(fast.encoder(tiles)[0])
        return count

    @torch.inference_mode()
    def int8() -> int:
        fast.head(dequantized(gated.quantized(tiles)[0], dtype))
        return count
    rates = interleaved({"float": floating, "int8": int8}, rounds=2, device=device)
    return rates["int8"] > rates["float"]
