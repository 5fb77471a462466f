"""PNG figures: precision-recall and F1 curves, prediction grids, training curves, prediction overlays."""
import csv
from pathlib import Path
from typing import Dict, List, Sequence, Tuple

import matplotlib

matplotlib.use("Agg")  # files only, no screen needed
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

# Overlay colours (RGB): correct crack pixels, false alarms, missed cracks.
TP_COLOUR, FP_COLOUR, FN_COLOUR = (0, 200, 0), (255, 0, 0), (0, 120, 255)


def _save(figure: plt.Figure, path: Path) -> Path:
    figure.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(figure)
    return path


def plot_precision_recall(curves: Dict[str, Dict[str, List[float]]], summary: Dict[str, Dict[str, float]],
                          path: Path) -> Path:
    """Precision against recall over the threshold sweep, one line per source, ODS points marked."""
    figure, axis = plt.subplots(figsize=(5, 5))
    for name, curve in curves.items():
        line, = axis.plot(curve["recall"], curve["precision"], label=f"{name} (ODS {summary[name]['ods']:.3f})")
        best = int(np.argmax(curve["f1"]))
        axis.plot(curve["recall"][best], curve["precision"][best], "o", color=line.get_color())
    axis.set(xlabel="recall", ylabel="precision", xlim=(0, 1), ylim=(0, 1.02), title="Precision-recall (pixels)")
    axis.grid(alpha=0.3)
    axis.legend(loc="lower left")
    return _save(figure, path)


def plot_f1_threshold(curves: Dict[str, Dict[str, List[float]]], mask_threshold: float, path: Path) -> Path:
    """F1 of the split against the mask threshold, one line per source, the threshold in use dashed."""
    figure, axis = plt.subplots(figsize=(6, 4))
    for name, curve in curves.items():
        axis.plot(curve["threshold"], curve["f1"], label=name)
    axis.axvline(mask_threshold, color="grey", linestyle="--", label=f"mask threshold {mask_threshold:.2f}")
    axis.set(xlabel="threshold", ylabel="F1 (split)", xlim=(0, 1), ylim=(0, 1), title="F1 against threshold")
    axis.grid(alpha=0.3)
    axis.legend()
    return _save(figure, path)


def error_overlay(image: torch.Tensor, predicted: torch.Tensor, target: torch.Tensor) -> np.ndarray:
    """(3, H, W) uint8 image dimmed, with correct crack pixels green, false alarms red, misses blue."""
    rgb = image.permute(1, 2, 0).numpy().astype(np.float32) * 0.6
    predicted, target = predicted.bool().numpy(), target.bool().numpy()
    for selection, colour in ((predicted & target, TP_COLOUR), (predicted & ~target, FP_COLOUR),
                              (~predicted & target, FN_COLOUR)):
        rgb[selection] = colour
    return rgb.astype(np.uint8)


def crack_overlay(image: torch.Tensor, predicted: torch.Tensor) -> np.ndarray:
    """(3, H, W) uint8 image with predicted crack pixels painted red at 70%: (H, W, 3) uint8."""
    rgb = image.permute(1, 2, 0).numpy().copy()  # uint8: a float copy of a 200 MP photo would take 2.4 GB
    selection = predicted.bool().numpy()
    rgb[selection] = (rgb[selection] * 0.3 + np.array(FP_COLOUR, dtype=np.float32) * 0.7).astype(np.uint8)
    return rgb


def plot_prediction_grid(examples: Sequence[Tuple[str, torch.Tensor, torch.Tensor, torch.Tensor]], path: Path,
                         title: str = "") -> Path:
    """Rows of (label, image (3, H, W) uint8, truth (H, W), predicted (H, W) bool): image | ground truth |
    prediction | overlay with errors coloured."""
    columns = ("image", "ground truth", "prediction", "overlay: TP green, FP red, FN blue")
    height, width = examples[0][1].shape[1:]
    figure, axes = plt.subplots(len(examples), 4, figsize=(4 * 3.2, len(examples) * 3.2 * height / width + 0.6),
                                squeeze=False)
    for row, (label, image, truth, predicted) in enumerate(examples):
        panels = (image.permute(1, 2, 0).numpy(), truth.numpy(), predicted.numpy(),
                  error_overlay(image, predicted, truth))
        for column, panel in enumerate(panels):
            axis = axes[row, column]
            axis.imshow(panel, cmap="gray" if panel.ndim == 2 else None, vmin=0, vmax=1 if panel.ndim == 2 else None)
            axis.set_xticks([])
            axis.set_yticks([])
            if row == 0:
                axis.set_title(columns[column], fontsize=9)
        axes[row, 0].set_ylabel(label, fontsize=9)
    if title:
        figure.suptitle(title, fontsize=10)
    figure.tight_layout()
    return _save(figure, path)


def read_log(path: Path) -> Dict[str, List[float]]:
    """A Catalyst CSVLogger file (step, metric...) as columns of floats."""
    with open(path, newline="") as handle:
        rows = list(csv.DictReader(handle))
    return {key: [float(row[key]) for row in rows] for key in (rows[0] if rows else {})}


def plot_training_curves(log_dir: Path, path: Path = None) -> Path:
    """Per-epoch train and valid curves, one panel per metric, from `log_dir/csv/{train,valid}.csv`."""
    log_dir = Path(log_dir)
    logs = {split: read_log(log_dir / "csv" / f"{split}.csv") for split in ("train", "valid")
            if (log_dir / "csv" / f"{split}.csv").is_file()}
    if not any(logs.values()):
        raise FileNotFoundError(f"{log_dir / 'csv'}: no train.csv or valid.csv with any epoch (not a training log "
                                "folder?)")
    names = sorted({name for log in logs.values() for name in log} - {"step", "momentum"})
    columns = min(4, len(names))
    rows = -(-len(names) // columns)
    figure, axes = plt.subplots(rows, columns, figsize=(3.4 * columns, 2.6 * rows), squeeze=False)
    for axis, name in zip(axes.flat, names):
        for split, log in logs.items():
            if name in log:
                axis.plot(log["step"], log[name], marker=".", label=split)
        axis.set_title(name, fontsize=9)
        axis.set_xlabel("epoch", fontsize=8)
        axis.grid(alpha=0.3)
        if name == "lr":
            axis.set_yscale("log")
    for axis in list(axes.flat)[len(names):]:
        axis.axis("off")
    axes.flat[0].legend(fontsize=8)
    figure.suptitle(str(log_dir), fontsize=10)
    figure.tight_layout()
    return _save(figure, Path(path) if path else log_dir / "curves.png")
