"""`nin reproduce --jobs N`: several recipes trained at once, each in a process of its own."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from _idx import write_mnist

from nin.cli import main
from nin.experiments.reproduce import ExperimentError, reproduce
from nin.train.metrics import read_metrics

TINY = ["subset=128", "batch_size=64", "epochs=2", "eval_split=none", "test_splits=[]", "device=\"cpu\""]


@pytest.fixture(scope="module")
def mnist_only_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A data root with MNIST (128 training images of 28 x 28 before the 10,000 held out) and no Fashion-MNIST."""
    root = tmp_path_factory.mktemp("data")
    write_mnist(root / "mnist", n_train=10_000 + 128, n_test=10, gz=False, size=28)
    return root


def test_runs_at_once_train_as_they_do_one_after_another(mnist_only_root: Path, tmp_path: Path,
                                                         capsys: pytest.CaptureFixture) -> None:
    argv = ["reproduce", "table4", "--only", "mnist", "mnist-fast", "--data-dir", str(mnist_only_root),
            *[item for override in TINY for item in ("--set", override)]]
    assert main([*argv, "--runs-dir", str(tmp_path / "one"), "--results-dir", str(tmp_path / "r-one")]) == 0
    capsys.readouterr()
    assert main([*argv, "--jobs", "2", "--runs-dir", str(tmp_path / "two"), "--results-dir",
                 str(tmp_path / "r-two")]) == 0
    out, err = capsys.readouterr()
    assert "2 runs at once:" in out and "training images/s per run" in out
    for run in ("mnist", "mnist-fast"):
        assert f"{run}: training in a process of its own, output in {tmp_path / 'two' / run}.log" in err
        assert "epoch 2: lr" in (tmp_path / "two" / f"{run}.log").read_text()  # its own output went to its log
        one, two = (read_metrics(tmp_path / r / run / "metrics.jsonl") for r in ("r-one", "r-two"))
        assert [row["epoch"] for row in two] == [1, 2]
        for a, b in zip(one, two):  # one thread against two: the same arithmetic up to float rounding
            assert b["train_loss"] == pytest.approx(a["train_loss"], rel=1e-4)
        assert json.loads((tmp_path / "r-two" / run / "summary.json").read_text())["recipe"] == run
        (sitting,) = json.loads((tmp_path / "r-two" / run / "sittings.json").read_text())["sittings"]
        assert sitting["epochs"] == [1, 2]  # kept after each epoch by the run's own process


def test_a_failed_run_is_named_with_its_log_and_the_others_keep_their_records(mnist_only_root: Path,
                                                                               tmp_path: Path) -> None:
    with pytest.raises(ExperimentError) as caught:
        reproduce(["table4", "fashion-mnist"], only=["mnist", "fashion-mnist"], jobs=2, runs_dir=tmp_path / "runs",
                  results_dir=tmp_path / "results", data_root=str(mnist_only_root), overrides=TINY)
    message = str(caught.value)
    assert message.startswith("1 of 2 runs failed: fashion-mnist (")
    assert f"see {tmp_path / 'runs' / 'fashion-mnist.log'})" in message and "\n" not in message
    assert "fashion-mnist" in (tmp_path / "runs" / "fashion-mnist.log").read_text()
    assert (tmp_path / "results" / "mnist" / "summary.json").exists()
    assert not (tmp_path / "results" / "fashion-mnist").exists()


def test_jobs_below_one_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ExperimentError, match="--jobs must be at least 1, got 0"):
        reproduce("table4", runs_dir=tmp_path, results_dir=tmp_path, jobs=0)
