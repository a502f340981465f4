"""`nin check`: re-running a record's first epochs reproduces it, and a changed record is caught.

The record is trained on a generated MNIST-format root (256 training images, 200 test images), so that every
rerun takes seconds; real records are checked by the command itself (results/check/).
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from _idx import write_mnist

from nin.checkpoint import load_checkpoint
from nin.cli import main
from nin.data import load_dataset
from nin.experiments.check import CheckError, CheckResult, Difference, check_record, format_result
from nin.models import create_model
from nin.train import Trainer, apply_overrides, load_recipe
from nin.train.metrics import read_metrics, write_metrics

# A cosine schedule over 2 epochs: stopping after epoch 1 of a 1-epoch recipe would change every step's rate,
# so only a rerun that keeps the recorded schedule can match the record.
TINY = ["subset=256", "batch_size=64", "epochs=2", "schedule=\"cosine\"", "warmup_epochs=0", "eval_split=\"none\"",
        "test_splits=[\"test\"]", "device=\"cpu\""]


@pytest.fixture(scope="module")
def data_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("data")
    write_mnist(root / "mnist", n_train=10_256, n_test=200, gz=False, size=28)  # valid takes the last 10,000
    return root


@pytest.fixture(scope="module")
def record(data_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("record")
    Trainer(apply_overrides(load_recipe("mnist"), TINY), out, data_root=data_root, progress=False).fit()
    (out / "last.pt").rename(out.with_name("record-last.pt"))  # a record under results/ holds no checkpoint
    return out


# the cosine schedule's rate at the start of epochs 1 and 2 of 2, from the recipe's 0.1, worked out by hand
HAND_LR = [0.1, 0.1 * 0.5 * (1 + math.cos(math.pi / 2))]


def test_the_record_holds_the_numbers_of_its_recipe(record: Path, data_root: Path) -> None:
    """The reruns below are compared with a record the same code wrote, so first the record itself against values
    found without the Trainer: the rates by hand, the test loss and error by evaluating its final weights here
    (pixels / 255, eval mode, float64 cross-entropy). Catches a record, and so a check, that agrees with itself
    on wrong numbers."""
    rows = read_metrics(record / "metrics.jsonl")
    assert [r["lr"] for r in rows] == pytest.approx(HAND_LR, rel=1e-12)
    tested = json.loads((record / "summary.json").read_text())["tests"]["test"]
    model = create_model("nin_mnist", num_classes=10)
    model.load_state_dict(load_checkpoint(record.with_name("record-last.pt"))["model"])
    test = load_dataset("mnist", "test", root=data_root)
    with torch.no_grad():
        logits = model.eval()(test.images.float() / 255).double()
    assert tested["images"] == 200
    assert tested["loss"] == pytest.approx(F.cross_entropy(logits, test.labels).item(), rel=1e-5)
    assert tested["error"] == pytest.approx(100 * int((logits.argmax(1) != test.labels).sum()) / 200, abs=1e-9)


def _copy(record: Path, to: Path) -> Path:
    to.mkdir()
    for file in ("recipe.toml", "metrics.jsonl", "summary.json"):
        (to / file).write_bytes((record / file).read_bytes())
    return to


def test_first_epoch_rerun_is_identical_to_the_record(record: Path, data_root: Path, tmp_path: Path) -> None:
    result = check_record(record, epochs=1, data_root=data_root, out_dir=tmp_path)
    assert result.verdict == "identical", result.differences
    assert result.compared == 1 + 4  # epochs run; lr, lr_drops, train loss and error
    # the rerun ran epoch 1 only, at the rate worked out by hand
    rerun = read_metrics(tmp_path / "metrics.jsonl")
    assert [r["epoch"] for r in rerun] == [1] and rerun[0]["lr"] == pytest.approx(HAND_LR[0], rel=1e-12)


def test_a_record_trained_with_cuda_graphs_is_checked_on_a_cpu(record: Path, data_root: Path,
                                                                tmp_path: Path) -> None:
    """A graph is how a GPU runs the step, not the procedure: the CPU rerun runs it eagerly, to the same numbers."""
    graphed = _copy(record, tmp_path / "graphed")
    toml = graphed / "recipe.toml"
    toml.write_text(toml.read_text().replace("cuda_graphs = false", "cuda_graphs = true"))
    assert "cuda_graphs = true" in toml.read_text()
    result = check_record(graphed, epochs=1, data_root=data_root, device="cpu", out_dir=tmp_path / "rerun")
    assert result.verdict == "identical", result.differences


def test_whole_rerun_also_compares_the_test_errors(record: Path, data_root: Path) -> None:
    result = check_record(record, epochs=2, data_root=data_root)
    assert result.verdict == "identical", result.differences
    assert result.compared == 1 + 2 * 4 + 2  # and the test loss and error


def test_a_changed_error_is_found_and_judged_by_the_tolerance(record: Path, data_root: Path, tmp_path: Path,
                                                              capsys: pytest.CaptureFixture) -> None:
    changed = _copy(record, tmp_path / "changed")
    rows = read_metrics(changed / "metrics.jsonl")
    rows[0]["train_error"] += 0.25
    write_metrics(changed / "metrics.jsonl", rows)
    out = tmp_path / "check.json"

    assert main(["check", str(changed), "--data-dir", str(data_root), "--json", str(out)]) == 1
    assert "epoch 1, train_error: recorded" in capsys.readouterr().out
    written = json.loads(out.read_text())
    assert written["verdict"] == "differs"
    assert [(d["where"], d["field"]) for d in written["differences"]] == [("epoch 1", "train_error")]
    assert written["differences"][0]["rerun"] == pytest.approx(rows[0]["train_error"] - 0.25)

    assert main(["check", str(changed), "--data-dir", str(data_root), "--tolerance", "0.3"]) == 0
    assert "within tolerance" in capsys.readouterr().out


def test_a_changed_schedule_differs_whatever_the_tolerance(record: Path, data_root: Path, tmp_path: Path) -> None:
    changed = _copy(record, tmp_path / "changed")
    rows = read_metrics(changed / "metrics.jsonl")
    rows[0]["lr"] *= 2
    write_metrics(changed / "metrics.jsonl", rows)
    result = check_record(changed, epochs=1, tolerance=100.0, data_root=data_root)
    assert result.verdict == "differs"
    assert [d.field for d in result.differences] == ["lr"]


def test_an_incomplete_record_or_too_many_epochs_is_a_clear_error(record: Path, tmp_path: Path,
                                                                  capsys: pytest.CaptureFixture) -> None:
    partial = _copy(record, tmp_path / "partial")
    (partial / "summary.json").unlink()
    with pytest.raises(CheckError, match=r"summary\.json missing"):
        check_record(partial)
    assert main(["check", str(record), "--epochs", "3"]) == 2
    err = capsys.readouterr().err
    assert "--epochs 3" in err and "records epochs 1 to 2" in err and "Traceback" not in err


def test_a_rerun_that_ends_early_differs(record: Path, data_root: Path, tmp_path: Path) -> None:
    changed = _copy(record, tmp_path / "changed")
    recipe = changed / "recipe.toml"
    recipe.write_text(recipe.read_text().replace("epochs = 2", "epochs = 1"))
    result = check_record(changed, epochs=2, tolerance=100.0, data_root=data_root)
    assert result.verdict == "differs"
    assert ("the rerun", "epochs", 2, 1) in [(d.where, d.field, d.recorded, d.rerun) for d in result.differences]


def test_the_report_names_what_can_explain_a_difference() -> None:
    result = CheckResult(record="results/x", epochs=1, tolerance=0.5, recorded_hardware="cpu, 2 threads",
                         rerun_hardware="cpu, 1 threads", recorded_commit="abc", rerun_commit="abc",
                         recorded_processes=2, rerun_processes=1, compared=4,
                         differences=[Difference("epoch 1", "train_error", 10.0, 10.25),
                                      Difference("epoch 1", "train_loss", 0.5, 0.7)])
    text = format_result(result)
    assert text.startswith("results/x, epochs 1-1: within tolerance (4 values compared, 2 differ)")
    assert "recorded on cpu, 2 threads; rerun on cpu, 1 threads" in text
    assert "recorded with 2 processes, rerun with 1" in text and "commit" not in text and "source" not in text
    assert "epoch 1, train_error: recorded 10.0, rerun 10.25 (difference 0.25)" in text


def test_the_report_says_when_the_source_files_differ_even_under_the_same_commit() -> None:
    same = dict(record="results/x", epochs=1, tolerance=0.0, recorded_hardware="cpu", rerun_hardware="cpu",
                recorded_commit="abc1234", rerun_commit="abc1234", recorded_processes=1, rerun_processes=1)
    text = format_result(CheckResult(**same, recorded_source="00aa", rerun_source="11bb"))
    assert "source digest 00aa there, 11bb here" in text and "commit" not in text
    assert "source" not in format_result(CheckResult(**same, recorded_source="00aa", rerun_source="00aa"))
