"""Class confidence maps (the paper's Section 4.7, Figure 4): compute them, find their peaks, draw them.

With global average pooling the last layer's K maps are averaged into the K logits, so map k shows
where in the image the network finds evidence for class k. ``explain_figure`` draws each image beside
its maps, upsampled bilinearly to the image size with ONE colour scale for every map of the figure
(so brightness is comparable across classes and images), marks the true and the predicted class,
and lays the predicted class's map over the image.
"""
from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from matplotlib.colors import Normalize
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from nin.data.images import read_image
from nin.inference.pretrained import open_trained
from nin.inference.trained import TrainedModel
from nin.utils.atomic import atomic_write

MAX_MAPS = 12  # more classes than this (CIFAR-100): a row shows only the highest-scoring maps
PREDICTED, TRUE = "#d62728", "#2ca02c"  # frame colours: red = predicted class, green = true class


@torch.no_grad()
def class_maps_for(trained: TrainedModel, images: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
    """(N, K, h, w) float32 class maps of uint8 images (N, C, H, W), preprocessed as in training."""
    model = trained.preprocessed()
    device = next(trained.model.parameters()).device
    outs = [model.class_maps(chunk.to(device)).float().cpu() for chunk in images.split(batch_size)]
    if not outs:
        raise ValueError("no images to explain")
    return torch.cat(outs)


def upsample(maps: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Maps (N, K, h, w) resized bilinearly to ``size`` = (H, W); cell centres keep their positions."""
    return F.interpolate(maps.float(), size=size, mode="bilinear", align_corners=False)


def map_peaks(maps: torch.Tensor, image_size: tuple[int, int]) -> torch.Tensor:
    """(N, 2) x, y image coordinates of the peak of each map (N, h, w).

    The peak is the first maximal cell in row-major order; cell (i, j) of an h × w map is taken to
    cover image pixels [j·W/w, (j+1)·W/w) × [i·H/h, (i+1)·H/h), and its centre
    ((j + 0.5)·W/w, (i + 0.5)·H/h) is returned, in a frame where pixel column x spans [x, x + 1).
    """
    n, h, w = maps.shape
    flat = maps.reshape(n, -1).argmax(dim=1)
    rows, cols = flat // w, flat % w
    height, width = image_size
    return torch.stack([(cols + 0.5) * width / w, (rows + 0.5) * height / h], dim=1).float()


def _shown_classes(logits: torch.Tensor, label: int | None) -> list[int]:
    """All classes when they fit a row; otherwise the top-scoring ones, always including the true one."""
    k = len(logits)
    if k <= MAX_MAPS:
        return list(range(k))
    top = logits.topk(MAX_MAPS).indices.tolist()
    if label is not None and label not in top:
        top[-1] = label
    return top


def _show_image(ax, image: torch.Tensor) -> None:
    if image.shape[0] == 1:
        ax.imshow(image[0].numpy(), cmap="gray", vmin=0, vmax=255)
    else:
        ax.imshow(image.permute(1, 2, 0).numpy())


def _mark(ax, box: Sequence[float] | None, peak: Sequence[float] | None) -> None:
    """Draw a box (x0, y0, x1, y1, half-open pixel indices) and a peak (continuous coordinates)."""
    if box is not None:
        x0, y0, x1, y1 = box
        ax.add_patch(Rectangle((x0 - 0.5, y0 - 0.5), x1 - x0, y1 - y0, fill=False, edgecolor="cyan", linewidth=1.5))
    if peak is not None:
        ax.plot(peak[0] - 0.5, peak[1] - 0.5, marker="+", color="white", markersize=12, markeredgewidth=2)


def explain_figure(images: torch.Tensor, maps: torch.Tensor, classes: Sequence[str],
                   labels: Sequence[int | None] | None = None, names: Sequence[str] | None = None,
                   boxes: Sequence[Sequence[float] | None] | None = None, cmap: str = "viridis") -> Figure:
    """One row per image: the image, the predicted class's map over it, then the class maps.

    ``images`` are uint8 (N, C, H, W) as the network saw them (before preprocessing), ``maps`` their
    (N, K, h, w) class maps. ``labels`` (true classes, None where unknown), ``names`` (row titles) and
    ``boxes`` (an object box per image, drawn in cyan) are optional. The white cross marks the
    peak of the predicted class's map (see :func:`map_peaks`; none if the map is constant). All
    maps share one colour scale.
    """
    n, k = maps.shape[:2]
    if len(images) != n or len(classes) != k:
        raise ValueError(f"{len(images)} images, {n} sets of maps and {len(classes)} class names do not match "
                         f"maps of shape {tuple(maps.shape)}")
    labels = list(labels) if labels is not None else [None] * n
    size = tuple(images.shape[-2:])
    big = upsample(maps, size)
    logits = maps.mean(dim=(2, 3))
    probs = logits.softmax(dim=1)
    predicted = logits.argmax(dim=1)
    chosen = maps[torch.arange(n), predicted]
    peaks = map_peaks(chosen, size)
    flat = chosen.amax(dim=(1, 2)) == chosen.amin(dim=(1, 2))  # a constant map has no peak to mark
    shown = [_shown_classes(logits[i], labels[i]) for i in range(n)]
    values = torch.cat([big[i, shown[i]].flatten() for i in range(n)])
    norm = Normalize(vmin=float(values.min()), vmax=max(float(values.max()), float(values.min()) + 1e-12))

    columns = 2 + max(len(s) for s in shown)
    fig = Figure(figsize=(1.3 * columns + 0.8, 1.45 * n + 0.6), layout="constrained")
    axes = fig.subplots(n, columns, squeeze=False)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_frame_on(False)
    for i in range(n):
        label, pred = labels[i], int(predicted[i])
        row = axes[i]
        box = boxes[i] if boxes is not None else None
        _show_image(row[0], images[i])
        _mark(row[0], box, None)
        title = names[i] if names is not None else f"image {i}"
        row[0].set_title(title if label is None else f"{title}\ntrue: {classes[label]}", fontsize=8)
        _show_image(row[1], images[i])
        row[1].imshow(big[i, pred].numpy(), cmap=cmap, norm=norm, alpha=0.6)
        _mark(row[1], box, None if flat[i] else peaks[i].tolist())
        row[1].set_title(f"pred: {classes[pred]}\n{100 * float(probs[i, pred]):.1f}%", fontsize=8,
                         color=PREDICTED if label is not None and label != pred else "black")
        for ax, c in zip(row[2:], shown[i]):
            image = ax.imshow(big[i, c].numpy(), cmap=cmap, norm=norm)
            marks = [m for m, on in (("true", c == label), ("pred", c == pred)) if on]
            ax.set_title(classes[c] + (f" ({', '.join(marks)})" if marks else ""), fontsize=8,
                         fontweight="bold" if marks else "normal")
            if marks:
                ax.set_frame_on(True)
                for spine in ax.spines.values():
                    spine.set_edgecolor(TRUE if c == label else PREDICTED)
                    spine.set_linewidth(2.5)
    fig.colorbar(image, ax=axes[:, 2:].ravel().tolist(), shrink=0.8, label="class map value (shared scale)")
    if any(len(s) < k for s in shown):
        fig.suptitle(f"the {MAX_MAPS} highest-scoring of {k} class maps per image", fontsize=9)
    return fig


def save_figure(fig: Figure, path: str | os.PathLike, dpi: int = 110) -> None:
    """Write ``fig`` as PNG atomically: readers never see half a file."""
    atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=dpi))


def explain_command(checkpoint: str | os.PathLike, images: Sequence[str] = (), split: str = "test", n: int = 8,
                    out: str | os.PathLike | None = None, data_dir: str | os.PathLike | None = None) -> list[str]:
    """``nin explain``: figures for image files, or for the first ``n`` images of the checkpoint's dataset split.

    They go to ``out``, else to ``explain/`` in the checkpoint's (run's) folder, else (shipped weights named
    by their model) to ``explain/`` in the current folder. The split is read from ``data_dir``, else from the
    data root the run recorded (:meth:`TrainedModel.load_split`)."""
    trained = open_trained(checkpoint, data_dir=data_dir)
    if out is None:
        out = Path(checkpoint).parent / "explain" if Path(checkpoint).is_file() else Path("explain")
    if images:
        batch = torch.stack([read_image(path, trained.input_size) for path in images])
        return explain_to_files(trained, batch, out, names=[os.path.basename(p) for p in images])
    data = trained.load_split(split, data_dir)
    return explain_to_files(trained, data.images[:n], out, labels=data.labels[:n].tolist(),
                            names=[f"{split} #{i}" for i in range(min(n, len(data)))])


def explain_to_files(trained: TrainedModel, images: torch.Tensor, out_dir: str | os.PathLike,
                     labels: Sequence[int | None] | None = None, names: Sequence[str] | None = None,
                     per_figure: int = 8) -> list[str]:
    """Write ``explain-000.png``, ``explain-001.png``, … into ``out_dir``, ``per_figure`` images each."""
    maps = class_maps_for(trained, images)
    paths = []
    for f in range(math.ceil(len(images) / per_figure)):
        part = slice(f * per_figure, (f + 1) * per_figure)
        fig = explain_figure(images[part], maps[part], trained.classes,
                             labels=None if labels is None else list(labels)[part],
                             names=None if names is None else list(names)[part])
        path = os.path.join(out_dir, f"explain-{f:03d}.png")
        save_figure(fig, path)
        paths.append(path)
    return paths
