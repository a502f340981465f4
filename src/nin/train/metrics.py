"""The run's records: per-epoch metrics as JSON lines and a plot of the curves."""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from nin.utils.atomic import atomic_write, atomic_write_text


def write_metrics(path: str | os.PathLike, history: list[dict[str, Any]]) -> None:
    """Rewrite the whole file from the history, so a resumed run never duplicates or skips an epoch."""
    atomic_write_text(path, "".join(json.dumps(row) + "\n" for row in history))


def read_metrics(path: str | os.PathLike) -> list[dict[str, Any]]:
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]


def plot_curves(path: str | os.PathLike, history: list[dict[str, Any]], title: str,
                paper_error: float | None = None) -> None:
    """Loss and error per epoch for training and validation, with the paper's error as a line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [row["epoch"] for row in history]
    fig, (ax_loss, ax_err) = plt.subplots(1, 2, figsize=(10, 4))
    for key, label in (("train", "train (running, in training mode)"), ("valid", "held-out")):
        if any(row.get(f"{key}_loss") is not None for row in history):
            ax_loss.plot(epochs, [row.get(f"{key}_loss") for row in history], label=label)
            ax_err.plot(epochs, [row.get(f"{key}_error") for row in history], label=label)
    if paper_error is not None:
        ax_err.axhline(paper_error, color="grey", linestyle="--", label=f"paper {paper_error}%")
    for drop in history[-1].get("lr_drops", []) if history else []:
        ax_err.axvline(drop + 1, color="red", alpha=0.3)
    ax_loss.set(xlabel="epoch", ylabel="cross-entropy", title="loss")
    ax_err.set(xlabel="epoch", ylabel="error (%)", title="error", ylim=(0, None))
    ax_err.legend()
    fig.suptitle(title)
    fig.tight_layout()
    atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=100))
    plt.close(fig)
