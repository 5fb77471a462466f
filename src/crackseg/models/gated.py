"""UNetClassifier: encode every image, classify it, and decode a mask only for the images called cracked."""
from typing import Any, Dict, Optional, Tuple

import torch
from torch import nn

from crackseg.errors import CheckpointError
from crackseg.files.checkpoints import PathLike, fingerprint, load_checkpoint, submodule_state
from crackseg.files.pretrained import load_pretrained
from crackseg.models.classifier import ClassifierHead
from crackseg.models.unet import DEPTH, Decoder, VGGEncoder, check_depth


def gate_decisions(crack_probs: Any, threshold: float) -> Any:
    """The gate's rule, for every engine: a crop is decoded when its crack probability is above the threshold.
    (N, 1) probabilities (torch or NumPy) -> (N,) booleans."""
    return crack_probs[:, 0] > threshold


class UNetClassifier(nn.Module):
    """Gated crack segmentation: (N, 3, crop, crop) -> (masks (N, 1, crop, crop), crack_probs (N, 1)).

    Masks hold crack probabilities; images whose crack probability is not above `threshold` get an all-zero
    mask without any decoder work. `mask_threshold` is where tools binarise the masks (chosen on validation
    data by `crackseg evaluate --save-threshold`, else 0.5).

    Args:
        width: base width f of the U-Net (channels f, 2f, 4f, 8f, 16f); 32 in the original, 16 shipped.
        crop_size: side of the square crops, a multiple of 32; the head's input size follows from it.
        threshold: the gate's crack probability above which a crop is decoded.
        mask_threshold: crack probability at which a pixel counts as crack (stored for the tools).

    Example:
        >>> model = UNetClassifier.pretrained()  # or UNetClassifier.from_checkpoints(seg_best, cls_best)
        >>> masks, crack_probs = model(torch.rand(4, 3, model.crop_size, model.crop_size))
        >>> masks.shape, crack_probs.shape
        (torch.Size([4, 1, 128, 128]), torch.Size([4, 1]))

    For photos of any size, `crackseg.inference.predictor.Predictor` tiles, gates and stitches.
    """

    def __init__(self, width: int = 32, crop_size: int = 224, threshold: float = 0.5, mask_threshold: float = 0.5):
        super().__init__()
        self.width = width
        self.crop_size = crop_size
        self.threshold = threshold
        self.mask_threshold = mask_threshold
        self.encoder = VGGEncoder(width)
        self.decoder = Decoder(width)
        self.head = ClassifierHead(self.encoder.out_channels, crop_size)

    @classmethod
    def from_checkpoints(cls, segmentation: PathLike, classification: PathLike, threshold: float = 0.5,
                         map_location: Any = "cpu") -> "UNetClassifier":
        """Build the combined model (in eval mode) from the best checkpoints of stage 1 and stage 2.

        The decoder comes from the segmentation checkpoint, the encoder and the head from the
        classification one (its encoder is stage 1's, frozen), and so does a stored mask threshold.
        """
        return cls.from_payloads(load_checkpoint(segmentation, stage="segmentation", map_location=map_location),
                                 load_checkpoint(classification, stage="classification", map_location=map_location),
                                 segmentation, classification, threshold)

    @classmethod
    def from_payloads(cls, seg: Dict[str, Any], cls_: Dict[str, Any], segmentation: PathLike,
                      classification: PathLike, threshold: float = 0.5) -> "UNetClassifier":
        """`from_checkpoints` on checkpoints already read (`load_checkpoint`); the paths name them in errors."""
        width, crop = cls_["model"]["width"], cls_["model"]["crop_size"]
        check_depth(seg["model"], segmentation)
        check_depth(cls_["model"], classification)
        if seg["model"]["width"] != width:
            raise CheckpointError(
                f"{segmentation}: width {seg['model']['width']} does not match {classification} (width {width})")
        state = {**{f"decoder.{k}": v for k, v in submodule_state(seg["state"], "decoder").items()},
                 **{k: v for k, v in cls_["state"].items() if k.split(".", 1)[0] in ("encoder", "head")}}
        sources = {"decoder": segmentation, "encoder": classification, "head": classification}
        model = cls.from_state(state, width, crop, threshold, cls_.get("mask_threshold", 0.5), sources)
        # The head was trained on one stage-1 encoder; a decoder trained with another one does not fit it.
        trained_on = cls_.get("encoder_fingerprint") or fingerprint(submodule_state(cls_["state"], "encoder"))
        if fingerprint(submodule_state(seg["state"], "encoder")) != trained_on:
            raise CheckpointError(f"{classification}: its head was trained on another stage-1 model than "
                                  f"{segmentation} (encoder fingerprints differ); retrain stage 2 with "
                                  f"--segmentation-checkpoint {segmentation}")
        return model

    @classmethod
    def from_state(cls, state: Dict[str, torch.Tensor], width: int, crop_size: int, threshold: float = 0.5,
                   mask_threshold: float = 0.5, sources: Optional[Dict[str, Any]] = None) -> "UNetClassifier":
        """Build the model (in eval mode) from a state dict of encoder, decoder and head; `sources` names the
        file each part came from, for errors."""
        model = cls(width=width, crop_size=crop_size, threshold=threshold, mask_threshold=mask_threshold)
        for part in ("encoder", "decoder", "head"):
            try:
                getattr(model, part).load_state_dict(submodule_state(state, part))
            except RuntimeError as error:  # missing keys or shapes that disagree with the stored width and crop
                summary = str(error).splitlines()[0]
                raise CheckpointError(f"{(sources or {}).get(part, 'weights')}: its {part} weights do not fit a "
                                      f"width-{width}, crop-{crop_size} model ({summary})") from None
        return model.eval()

    @classmethod
    def pretrained(cls, threshold: Optional[float] = None) -> "UNetClassifier":
        """The ready-made model shipped with crackseg (see docs/MODEL.md), checked against its SHA-256.

        Args:
            threshold: the gate's crack probability above which a crop is decoded [the shipped one].

        Example:
            >>> model = UNetClassifier.pretrained()
            >>> masks, crack_probs = model(torch.rand(2, 3, model.crop_size, model.crop_size))
        """
        payload = load_pretrained()
        settings = payload["model"]
        check_depth(settings, payload["path"])
        return cls.from_state(payload["state"], settings["width"], settings["crop_size"],
                              settings["threshold"] if threshold is None else threshold, settings["mask_threshold"],
                              {part: payload["path"] for part in ("encoder", "decoder", "head")})

    def settings(self) -> Dict[str, Any]:
        """The constructor's arguments (and the fixed depth), as the shipped weights file stores them."""
        return {"width": self.width, "crop_size": self.crop_size, "depth": DEPTH, "threshold": self.threshold,
                "mask_threshold": self.mask_threshold}

    @property
    def size_multiple(self) -> int:
        """Image sides the U-Net takes whole are multiples of this (it pools DEPTH times)."""
        return 2 ** DEPTH

    def gate(self, crack_probs: torch.Tensor) -> torch.Tensor:
        """Which crops (rows of crack probabilities (N, 1)) get decoded: `gate_decisions` at this threshold."""
        return gate_decisions(crack_probs, self.threshold)

    def forward(self, images: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """Crops (N, 3, crop, crop) -> (masks (N, 1, crop, crop) of crack probabilities, zero for crops the gate
        passes over, and crack probabilities (N, 1)); the decoder runs on the gated crops only."""
        n, _, height, width = images.shape
        if height != self.crop_size or width != self.crop_size:
            raise ValueError(f"UNetClassifier takes {self.crop_size}x{self.crop_size} crops "
                             f"(the head's input size follows from the crop), got {height}x{width}")
        bottleneck, skips = self.encoder(images)
        crack_probs = torch.sigmoid(self.head(bottleneck).float())
        masks = torch.zeros(n, 1, height, width, dtype=crack_probs.dtype, device=images.device)
        cracked = self.gate(crack_probs).nonzero().squeeze(1)
        if cracked.numel() == n:  # all cracked: no gathering copies of the skip maps
            masks = torch.sigmoid(self.decoder(bottleneck, skips).float())
        elif cracked.numel():
            logits = self.decoder(bottleneck[cracked], [skip[cracked] for skip in skips])
            masks[cracked] = torch.sigmoid(logits.float())
        return masks, crack_probs
