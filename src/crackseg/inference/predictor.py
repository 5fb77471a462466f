"""Trained models over whole images of any size: the full-image U-Net path and tiled, gated inference.

Images are uint8 (3, H, W) tensors on the CPU; probability maps come back as float32 (H, W) on the CPU.
"""
from collections import deque
from dataclasses import dataclass
from functools import cached_property
from typing import Any, Deque, Iterable, Iterator, List, Optional, Tuple, TypeVar

import torch

from crackseg.analysis.measure import JOIN_GAP_PX, MIN_AREA, has_crack
from crackseg.errors import ConfigError
from crackseg.files.checkpoints import PathLike
from crackseg.inference.acceleration import chunk_size, inference_copy, inference_precision, use_int8_head
from crackseg.inference.quantization import GATES, int8_gated
from crackseg.inference.tiling import Stitcher, TileGrid, pad_to, pad_to_multiple
from crackseg.models import UNetClassifier

ENGINES = ("torch", "onnxruntime")
# Tiles overlap by an eighth of their side (16 px of 128): 1.32x faster than a quarter on 1920x1080 photos, within
# 0.01 gated Dice of it on every valid split (docs/PERFORMANCE.md, "The tiles' overlap")
DEFAULT_OVERLAP = 1 / 8
DEFAULT_MIN_LENGTH = 20.0  # px of centreline: see TiledResult.cracked and docs/MODEL.md, "The image-level call"
T = TypeVar("T")
R = TypeVar("R")


@dataclass
class TiledResult:
    """The gated prediction of one image: crack probabilities (H, W), and per tile its crack probability and
    whether the decoder ran on it; the mask threshold and the smallest crack (area, centreline length in px) that
    make the image cracked."""

    key: Any
    probs: torch.Tensor
    grid: TileGrid
    tile_probs: torch.Tensor
    decoded: torch.Tensor
    mask_threshold: float = 0.5
    min_area: int = MIN_AREA
    min_length: float = 0.0
    join_gap: float = JOIN_GAP_PX

    @property
    def gated(self) -> bool:
        """The head's call: it gated at least one tile as cracked (the decoder ran)."""
        return bool(self.decoded.any())

    @cached_property
    def binary(self) -> torch.Tensor:
        """The mask (H, W) of booleans: crack where the probability reaches the mask threshold."""
        return self.probs >= self.mask_threshold

    @cached_property
    def cracked(self) -> bool:
        """The image is called cracked when the head gated a tile AND the decoded mask holds evidence: a crack of
        at least `min_area` px whose centreline is at least `min_length` px long (`measure.has_crack`). The head
        alone passes texture, joints and blur whose mask then holds nothing, or only specks and blobs."""
        return self.gated and has_crack(self.binary.numpy(), self.min_area, self.min_length, self.join_gap)


@dataclass
class _Pending:
    key: Any
    image: torch.Tensor  # uint8 (3, H, W), padded to at least one tile
    stitcher: Stitcher
    tile_probs: torch.Tensor
    done: int = 0


class Predictor:
    """Runs a gated model on a device: `segment` decodes a whole image at once (no gate), `tiled` cuts images
    into overlapping crops of the training size, gates each, decodes the cracked ones and stitches the masks
    back. Tiles of consecutive images share batches.

    The fast path (the default) runs a copy of the model with BatchNorm folded, weights channels-last and in
    reduced precision where the hardware has it (`precision="auto"`, see `acceleration`), the gate's head with
    int8 weights where the CPU runs in fp32 (`head="auto"`), on CPUs with ReLUs fused into the convolutions and
    in cache-sized chunks. `fast=False` runs
    the model as given: the plain eager fp32 model. `engine="onnxruntime"` runs the model exported to ONNX
    (`runtime.OnnxGatedModel`; pass one to use an exported folder) with the same tiling, gate and stitching.

    Args:
        model: a `UNetClassifier` (e.g. `UNetClassifier.pretrained()`), or an `OnnxGatedModel`.
        device: "cpu", "cuda", "cuda:N" or a torch.device.
        batch_size: tiles per batch, across images.
        overlap: tile overlap in px [an eighth of the tile, `DEFAULT_OVERLAP`].
        mask_threshold: crack probability at which a pixel counts as crack in the tools that binarise [the
            model's own, stored with it by `crackseg evaluate --save-threshold`].
        fast: the fast path (torch engine only).
        precision: "auto", "fp32", "bf16" or "fp16" (torch engine).
        head: "auto", "int8" or "full": the gate's head weights on fp32 CPUs (torch engine).
        gate: "auto", "int8" or "float": the encoder's arithmetic for the gate on CPUs (torch engine's fast path;
            `quantization.int8_gated`): int8 decides on every tile with the int8 encoder and decodes the gated
            tiles from its skips; auto takes int8 where it ran faster here.
        engine: "torch" or "onnxruntime".
        fuse: on CPUs, ReLUs fused into the convolutions and the max-pools replaced (`acceleration.fuse_for_cpu`;
            the same values). False gives the fast path as crackseg-v2 shipped with, for benchmarks.

    Example:
        >>> predictor = Predictor(UNetClassifier.pretrained())
        >>> result = next(predictor.tiled([("photo", load_image("photo.jpg"))]))
        >>> result.cracked, result.probs.shape
    """

    def __init__(self, model: Any, device: Any = "cpu", batch_size: int = 32, overlap: Optional[int] = None,
                 mask_threshold: Optional[float] = None, fast: bool = True, precision: str = "auto", head: str = "auto",
                 engine: str = "torch", min_length: float = DEFAULT_MIN_LENGTH, min_area: int = MIN_AREA,
                 join_gap: float = JOIN_GAP_PX, fuse: bool = True, gate: str = "auto"):
        if engine not in ENGINES:
            raise ValueError(f"engine must be one of {ENGINES}, got {engine!r}")
        self.device = torch.device(device)
        self.engine = engine
        self.fast = fast and engine == "torch"
        self.dtype = inference_precision(model, self.device, precision, head) if self.fast else None
        self.int8_head = self.fast and use_int8_head(self.device, self.dtype, head)
        self.int8_gate = False
        if gate not in GATES:
            raise ValueError(f"gate must be one of {GATES}, got {gate!r}")
        if gate == "int8" and not self.fast:
            raise ConfigError("--gate-precision int8 runs on the torch engine's fast path only")
        if engine == "onnxruntime":
            from crackseg.inference.onnx import OnnxGatedModel

            self.model = model if isinstance(model, OnnxGatedModel) else OnnxGatedModel.exported(model,
                                                                                              device=self.device)
        elif self.fast:
            fast_copy = inference_copy(model, self.device, self.dtype, self.int8_head, fuse)
            gated = int8_gated(model, fast_copy, self.device, self.dtype, gate)
            self.int8_gate = gated is not None
            self.model = gated or fast_copy
        else:
            self.model = model.eval().to(self.device)
        # onnxruntime runs whole batches: it ran them faster than cache-sized chunks (docs/PERFORMANCE.md)
        self.chunk = chunk_size(self.device, model.width, model.crop_size, self.dtype) if self.fast else None
        self.batch_size = batch_size
        self.tile = model.crop_size
        self.overlap = round(model.crop_size * DEFAULT_OVERLAP) if overlap is None else overlap
        self.mask_threshold = model.mask_threshold if mask_threshold is None else mask_threshold
        self.min_length = min_length
        self.min_area = min_area
        self.join_gap = join_gap

    @classmethod
    def from_checkpoints(cls, segmentation: PathLike, classification: PathLike, gate_threshold: float = 0.5,
                         **kwargs: Any) -> "Predictor":
        return cls(UNetClassifier.from_checkpoints(segmentation, classification, threshold=gate_threshold), **kwargs)

    @property
    def whole_images(self) -> bool:
        """Whether `segment` can run: the ONNX graphs take tiles of the training size only."""
        return self.engine == "torch"

    def _input(self, images: torch.Tensor) -> torch.Tensor:
        if self.engine != "torch":
            return images.float().div_(255)
        if self.device.type == "cuda":
            images = images.pin_memory()
        images = images.to(self.device, non_blocking=True).float().div_(255)
        if not self.fast:
            return images
        return images.to(self.dtype or torch.float32).contiguous(memory_format=torch.channels_last)

    def _chunks(self, crops: torch.Tensor) -> Tuple[torch.Tensor, ...]:
        return crops.split(self.chunk) if self.chunk else (crops,)

    @torch.inference_mode()
    def segment(self, image: torch.Tensor) -> torch.Tensor:
        """Ungated U-Net on the whole image (padded to a multiple of 16, cropped back): (3, H, W) -> (H, W)."""
        if not self.whole_images:
            raise ValueError("the onnxruntime engine runs tiles of the training size only; segment whole images "
                             "with the torch engine")
        height, width = image.shape[-2:]
        padded = pad_to_multiple(image, self.model.size_multiple)[None]
        logits = self.model.decoder(*self.model.encoder(self._input(padded)))
        return torch.sigmoid(logits.float())[0, 0, :height, :width].cpu()

    @torch.inference_mode()
    def unet(self, crops: torch.Tensor) -> torch.Tensor:
        """Ungated U-Net on a batch of uint8 crops (N, 3, s, s): crack probabilities (N, 1, s, s) on the CPU."""
        if self.engine != "torch":
            return torch.cat([self.model.unet(self._input(chunk)) for chunk in self._chunks(crops)])
        return torch.cat([torch.sigmoid(self.model.decoder(*self.model.encoder(self._input(chunk))).float()).cpu()
                          for chunk in self._chunks(crops)])

    @torch.inference_mode()
    def crops(self, crops: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """The gated model on a batch of uint8 crops of the training size: (masks (N, 1, s, s), crack probs (N,))
        on the CPU; masks are zero where the gate did not decode."""
        outputs = [self.model(self._input(chunk)) for chunk in self._chunks(crops)]
        return (torch.cat([masks for masks, _ in outputs]).float().cpu(),
                torch.cat([probs[:, 0] for _, probs in outputs]).float().cpu())

    def _run(self, batch: List[Tuple[_Pending, int]]) -> None:
        s = self.tile
        tiles = torch.stack([pending.image[:, y:y + s, x:x + s]
                             for pending, index in batch for y, x in [pending.stitcher.grid.box(index)]])
        masks, crack_probs = self.crops(tiles)
        decoded = self.model.gate(crack_probs[:, None])
        for row, (pending, index) in enumerate(batch):
            pending.tile_probs[index] = crack_probs[row]
            if decoded[row]:
                pending.stitcher.add(index, masks[row])
            pending.done += 1

    def tiled(self, items: Iterable[Tuple[Any, torch.Tensor]]) -> Iterator[TiledResult]:
        """Gated inference over (key, image) pairs; yields one `TiledResult` per image, in input order.

        Tiles are cut from the image batch by batch and their masks stitched as they come, so memory holds the
        image and its probability map, not all its tiles: photos of hundreds of megapixels work.
        """
        queue: Deque[_Pending] = deque()
        waiting: List[Tuple[_Pending, int]] = []
        for key, image in items:
            grid = TileGrid.of(image.shape[-2], image.shape[-1], self.tile, self.overlap)
            pending = _Pending(key, pad_to(image, *grid.padded_size), Stitcher(grid), torch.zeros(len(grid)))
            queue.append(pending)
            waiting.extend((pending, index) for index in range(len(grid)))
            while len(waiting) >= self.batch_size:
                self._run(waiting[:self.batch_size])
                del waiting[:self.batch_size]
                yield from self._finished(queue)
        if waiting:
            self._run(waiting)
        yield from self._finished(queue)

    def _finished(self, queue: Deque[_Pending]) -> Iterator[TiledResult]:
        while queue and queue[0].done == len(queue[0].stitcher.grid):
            pending = queue.popleft()
            stitcher = pending.stitcher
            yield TiledResult(pending.key, stitcher.result[0], stitcher.grid, pending.tile_probs, stitcher.run,
                              self.mask_threshold, self.min_area, self.min_length, self.join_gap)
