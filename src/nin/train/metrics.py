"""The run's records: per-epoch metrics as JSON lines and a plot of the curves."""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from matplotlib.figure import Figure
from matplotlib.ticker import LogFormatter, MaxNLocator

from nin.utils.atomic import atomic_write, atomic_write_text


def write_metrics(path: str | os.PathLike, history: list[dict[str, Any]]) -> None:
    """Rewrite the whole file from the history, so a resumed run never duplicates or skips an epoch."""
    atomic_write_text(path, "".join(json.dumps(row) + "\n" for row in history))


def read_metrics(path: str | os.PathLike) -> list[dict[str, Any]]:
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]


class _PlainLog(LogFormatter):
    """Matplotlib's choice of which log ticks to label, written as plain numbers (0.5, 20) instead of 5×10⁻¹."""

    def __call__(self, x: float, pos: int | None = None) -> str:
        return f"{x:g}" if super().__call__(x, pos) else ""


ERROR_FLOOR = 0.01  # % : a log axis has no 0, and a network can fit its training set exactly


def curves_figure(history: list[dict[str, Any]], title: str, paper_error: float | None = None,
                  peer_error: float | None = None) -> Figure:
    """Loss and error per epoch for training and validation, with the paper's (or a peer's) error as a line.

    The error axis is logarithmic, so MNIST's last tenths of a percent stay readable beside the first epoch's
    tens; epochs are whole-numbered ticks, and the rate drops are dotted red lines with a legend entry."""
    epochs = [row["epoch"] for row in history]
    fig = Figure(figsize=(10, 4), layout="constrained")
    ax_loss, ax_err = fig.subplots(1, 2)
    for key, label in (("train", "train (running, in training mode)"), ("valid", "held-out")):
        if any(row.get(f"{key}_loss") is not None for row in history):
            ax_loss.plot(epochs, [row.get(f"{key}_loss") for row in history], label=label)
            errors = [row.get(f"{key}_error") for row in history]
            ax_err.plot(epochs, [None if e is None else max(e, ERROR_FLOOR) for e in errors], label=label)
    for error, who in ((paper_error, "paper"), (peer_error, "peer")):
        if error is not None:
            ax_err.axhline(error, color="grey", linestyle="--" if who == "paper" else ":", label=f"{who} {error}%")
    for i, drop in enumerate(history[-1].get("lr_drops", []) if history else []):
        ax_err.axvline(drop + 1, color="red", alpha=0.4, linestyle=":", label="rate ÷10" if i == 0 else None)
    for ax in (ax_loss, ax_err):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax_loss.set(xlabel="epoch", ylabel="cross-entropy", title="loss")
    ax_err.set(xlabel="epoch", ylabel=f"error (%, log scale; 0 drawn at {ERROR_FLOOR:g})", title="error",
               yscale="log")
    ax_err.yaxis.set_major_formatter(_PlainLog())
    ax_err.yaxis.set_minor_formatter(_PlainLog(labelOnlyBase=False))
    ax_err.legend()
    fig.suptitle(title)
    return fig


def plot_curves(path: str | os.PathLike, history: list[dict[str, Any]], title: str,
                paper_error: float | None = None, peer_error: float | None = None) -> None:
    """Write :func:`curves_figure` as a PNG, atomically."""
    fig = curves_figure(history, title, paper_error, peer_error)
    atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=100))
