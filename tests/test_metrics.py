"""The run's curves: the error on a log axis, whole-epoch ticks, the rate drops and the published number."""
from __future__ import annotations

from matplotlib.lines import Line2D

from nin.train.metrics import curves_figure

HISTORY = [{"epoch": e, "train_loss": 2.0 / e, "train_error": 60.0 / e, "valid_loss": 1.5 / e,
            "valid_error": 0.45 + 30.0 / e ** 3, "lr_drops": [2, 4] if e >= 5 else [2]} for e in range(1, 7)]


def _lines(ax) -> dict[str, Line2D]:
    handles, labels = ax.get_legend_handles_labels()
    return dict(zip(labels, handles))


def test_the_error_axis_is_logarithmic_with_whole_epoch_ticks() -> None:
    fig = curves_figure(HISTORY, "run", paper_error=0.47)
    fig.canvas.draw()
    ax_loss, ax_err = fig.axes[:2]
    assert ax_err.get_yscale() == "log" and ax_loss.get_yscale() == "linear"
    for ax in (ax_loss, ax_err):
        ticks = [t for t in ax.get_xticks() if 1 <= t <= 6]
        assert ticks and all(float(t).is_integer() for t in ticks)
    labels = [t.get_text() for t in ax_err.get_yticklabels() if t.get_text()]
    assert "1" in labels and "10" in labels and not any("10^" in t or "times" in t for t in labels)


def test_rate_drops_have_one_legend_entry_and_the_published_number_a_line() -> None:
    ax_err = curves_figure(HISTORY, "run", paper_error=0.47).axes[1]
    lines = _lines(ax_err)
    assert list(lines) == ["train (running, in training mode)", "held-out", "paper 0.47%", "rate ÷10"]
    drops = [line for line in ax_err.get_lines() if line.get_color() == "red"]
    assert [line.get_xdata()[0] for line in drops] == [3, 5]  # after epochs 3 and 5 (drops are 0-based epochs)
    assert lines["paper 0.47%"].get_ydata()[0] == 0.47
    peer = _lines(curves_figure(HISTORY, "run", peer_error=8.4).axes[1])
    assert "peer 8.4%" in peer and not any(label.startswith("paper") for label in peer)
    assert "rate ÷10" not in _lines(curves_figure([{**HISTORY[0], "lr_drops": []}], "run").axes[1])
