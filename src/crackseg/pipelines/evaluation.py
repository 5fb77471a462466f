"""Honest evaluation on whole labelled images: pixel counts summed over the split, threshold sweeps (ODS/OIS),
and the gate's decisions at tile and image level."""
import statistics
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple

import torch

from crackseg.analysis.metrics import binary_counts, classification_scores, segmentation_scores
from crackseg.background import prefetch
from crackseg.data.datasets import crack_labels, read_pair
from crackseg.inference.predictor import Predictor, TiledResult
from crackseg.inference.tiling import extract_tiles
from crackseg.outputs.tables import write_csv

THRESHOLDS = torch.arange(1, 100, dtype=torch.float32) / 100  # 0.01 .. 0.99
ProbabilitySource = Callable[[torch.Tensor], torch.Tensor]


def threshold_counts(probs: torch.Tensor, target: torch.Tensor, thresholds: torch.Tensor = THRESHOLDS) -> torch.Tensor:
    """(K, 3) int64 [tp, fp, fn] of `probs >= t` against the boolean `target`, for every threshold t."""
    target = target.bool().flatten()
    bins = torch.bucketize(probs.flatten().float(), thresholds, right=True)  # number of thresholds <= p
    size = len(thresholds) + 1
    at_least = lambda values: values.bincount(minlength=size).flip(0).cumsum(0).flip(0)[1:]  # noqa: E731
    predicted, tp = at_least(bins), at_least(bins[target])
    return torch.stack([tp, predicted - tp, target.sum() - tp], dim=1).long()


def f1_from_counts(counts: torch.Tensor) -> torch.Tensor:
    """F1 (= Dice) of [..., 3] counts [tp, fp, fn]; 1 where there is nothing to find and nothing was found."""
    tp, fp, fn = counts.double().unbind(-1)
    denominator = 2 * tp + fp + fn
    return torch.where(denominator > 0, 2 * tp / denominator.clamp(min=1), torch.ones_like(tp))


def ods(counts_per_image: Sequence[torch.Tensor], thresholds: torch.Tensor = THRESHOLDS) -> Tuple[float, float]:
    """Optimal dataset scale: the best F1 of the split's summed counts over one shared threshold, and it."""
    f1 = f1_from_counts(torch.stack(list(counts_per_image)).sum(0))
    best = int(f1.argmax())
    return float(f1[best]), float(thresholds[best])


def ois(counts_per_image: Sequence[torch.Tensor]) -> float:
    """Optimal image scale: the mean over images of each image's best F1 over the thresholds."""
    return float(f1_from_counts(torch.stack(list(counts_per_image))).max(dim=1).values.mean())


class SourceScores:
    """Scores of one source of crack-probability maps over a split: per-image rows, split totals, curves."""

    def __init__(self, mask_threshold: float):
        self.mask_threshold = mask_threshold
        self.sweeps: List[torch.Tensor] = []
        self.counts = torch.zeros(4, dtype=torch.long)

    def add(self, probs: torch.Tensor, target: torch.Tensor) -> Dict[str, float]:
        """Score one image; returns its row (Dice, IoU, precision, recall at the mask threshold; OIS F1)."""
        counts = binary_counts(probs >= self.mask_threshold, target)
        self.counts += counts
        sweep = threshold_counts(probs, target)
        self.sweeps.append(sweep)
        f1 = f1_from_counts(sweep)
        best = int(f1.argmax())
        return {**segmentation_scores(counts), "ois_f1": float(f1[best]), "ois_threshold": float(THRESHOLDS[best])}

    def summary(self) -> Dict[str, float]:
        """Dice, IoU, precision and recall at the mask threshold, ODS and OIS over the thresholds."""
        scores = segmentation_scores(self.counts)
        best_f1, best_threshold = ods(self.sweeps)
        return {**scores, "f1": scores["dice"], "ods": best_f1, "ods_threshold": best_threshold,
                "ois": ois(self.sweeps), "mask_threshold": self.mask_threshold}

    def curves(self) -> Dict[str, List[float]]:
        """Precision, recall and F1 of the split at every threshold of the sweep."""
        tp, fp, fn = torch.stack(self.sweeps).sum(0).double().unbind(-1)
        precision = torch.where(tp + fp > 0, tp / (tp + fp).clamp(min=1), torch.ones_like(tp))
        recall = torch.where(tp + fn > 0, tp / (tp + fn).clamp(min=1), torch.ones_like(tp))
        return {"threshold": THRESHOLDS.tolist(), "precision": precision.tolist(), "recall": recall.tolist(),
                "f1": f1_from_counts(torch.stack([tp, fp, fn], dim=1)).tolist()}


def floor_probs(image: torch.Tensor) -> torch.Tensor:
    """SPEC's no-training floor: crack probability = 1 - grey level (cracks are dark)."""
    weights = torch.tensor([0.299, 0.587, 0.114]).view(3, 1, 1)
    return 1 - (image.float() * weights).sum(0) / 255


def confusion(counts: torch.Tensor) -> List[List[int]]:
    """[[tn, fp], [fn, tp]] from [tp, fp, fn, tn]: rows are the truth (no crack, crack), columns the decision."""
    tp, fp, fn, tn = (int(c) for c in counts)
    return [[tn, fp], [fn, tp]]


class GateScores:
    """The gate's decisions against the truth: per tile the head's (label rule of training), per image predict's
    call (`TiledResult.cracked`: a tile gated and a crack in the mask)."""

    def __init__(self, min_crack_fraction: float):
        self.min_crack_fraction = min_crack_fraction
        self.tiles = torch.zeros(4, dtype=torch.long)
        self.images = torch.zeros(4, dtype=torch.long)
        self.decoded = 0
        self.total = 0

    def add(self, result: TiledResult, mask: torch.Tensor) -> Dict[str, Any]:
        """Count the gate's decisions on one image's tiles and on the image against its mask (1, H, W)."""
        _, labels = crack_labels(extract_tiles(mask, result.grid), self.min_crack_fraction)
        truth = labels[:, 0] > 0
        self.tiles += binary_counts(result.decoded, truth)
        self.images += binary_counts(torch.tensor([result.cracked]), truth.any()[None])
        self.decoded += int(result.decoded.sum())
        self.total += len(result.grid)
        return {"tiles": len(result.grid), "tiles_decoded": int(result.decoded.sum()),
                "tiles_cracked": int(truth.sum()), "max_tile_prob": float(result.tile_probs.max()),
                "image_cracked": int(truth.any()), "image_gated": int(result.gated),
                "image_called_cracked": int(result.cracked)}

    def summary(self) -> Dict[str, Any]:
        """The gate's scores and confusion matrices per tile and per image, and the share of tiles decoded."""
        return {"crop": {**classification_scores(self.tiles), "confusion": confusion(self.tiles)},
                "image": {**classification_scores(self.images), "confusion": confusion(self.images)},
                "tiles_decoded": self.decoded, "tiles_total": self.total,
                "decoded_share": self.decoded / max(self.total, 1)}


def _rows_in_order(pairs: Sequence[Tuple[Path, Path]]) -> Iterator[Tuple[int, Any]]:
    """(index, (image, mask)) for every pair, decoded ahead in a thread; unreadable pairs raise."""
    for index, decoded in prefetch(lambda i: read_pair(*pairs[i]), range(len(pairs))):
        if isinstance(decoded, Exception):
            raise decoded
        yield index, decoded


def evaluate_split(pairs: Sequence[Tuple[Path, Path]], predictor: Optional[Predictor], mask_threshold: float,
                   min_crack_fraction: float, progress: Callable[[Iterator], Iterator] = iter) -> Dict[str, Any]:
    """Score every image at full resolution.

    With a predictor the sources are `segmentation` (the U-Net on the whole padded image, no gate; not with the
    onnxruntime engine, whose graphs take tiles) and `gated` (tiles, gate, stitched masks); without one, only
    SPEC's `floor` (1 - grey level).
    Returns {"summary": metrics, "rows": per-image rows, "curves": per source}.
    """
    sources: Dict[str, SourceScores] = {}
    full: Dict[str, ProbabilitySource] = {"floor": floor_probs} if predictor is None else (
        {"segmentation": predictor.segment} if predictor.whole_images else {})
    for name in list(full) + (["gated"] if predictor else []):
        sources[name] = SourceScores(mask_threshold)
    gate = GateScores(min_crack_fraction)
    rows: Dict[int, Dict[str, Any]] = {}
    masks: Dict[int, torch.Tensor] = {}

    def score_full() -> Iterator[Tuple[int, torch.Tensor]]:
        for index, (image, mask) in progress(_rows_in_order(pairs)):
            target = mask[0].bool()
            rows[index] = {"image": pairs[index][0].name, "width": image.shape[2], "height": image.shape[1],
                           "crack_pixels": int(target.sum())}
            for name, source in full.items():
                rows[index].update(_prefixed(name, sources[name].add(source(image), target)))
            masks[index] = mask
            yield index, image

    if predictor is None:
        for _ in score_full():
            pass
    else:
        for result in predictor.tiled(score_full()):
            mask = masks.pop(result.key)
            rows[result.key].update(_prefixed("gated", sources["gated"].add(result.probs, mask[0].bool())))
            rows[result.key].update(gate.add(result, mask))
    summary: Dict[str, Any] = {"images": len(pairs), "crack_pixels": sum(r["crack_pixels"] for r in rows.values())}
    summary.update({name: scores.summary() for name, scores in sources.items()})
    if predictor is not None:
        summary["gate"] = gate.summary()
    return {"summary": summary, "rows": [rows[i] for i in sorted(rows)],
            "curves": {name: scores.curves() for name, scores in sources.items()}}


def _prefixed(prefix: str, values: Dict[str, float]) -> Dict[str, float]:
    return {f"{prefix}_{key}": value for key, value in values.items()}


def pick_examples(rows: Sequence[Dict[str, Any]], source: str) -> Dict[str, int]:
    """Indices of the best, a typical (median) and the worst image by Dice, among images with cracks if any."""
    key = f"{source}_dice"
    candidates = [i for i, row in enumerate(rows) if row["crack_pixels"]] or list(range(len(rows)))
    ranked = sorted(candidates, key=lambda i: rows[i][key])
    median = statistics.median_low([rows[i][key] for i in ranked])
    typical = next(i for i in ranked if rows[i][key] == median)
    return {"best": ranked[-1], "typical": typical, "worst": ranked[0]}


def write_rows(path: Path, rows: Sequence[Dict[str, Any]]) -> None:
    """Per-image CSV, one column per key of the first row, floats to 6 decimals."""
    write_csv(path, list(rows[0]), [{k: f"{v:.6f}" if isinstance(v, float) else v for k, v in row.items()}
                                    for row in rows])


