"""Runs remember their data: eval, explain and check find the root a run recorded; data errors speak the CLI."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from _checkpoints import checkpoint_state, synthetic_digits
from _idx import write_mnist

from nin.checkpoint import save_checkpoint
from nin.cli import main
from nin.experiments import check
from nin.inference.trained import load_trained
from nin.train import load_recipe
from nin.train.recipe import recipe_to_toml


@pytest.fixture
def tiny_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A data root with a 64-image MNIST test set; $NIN_DATA points at an empty folder, so only a record finds it."""
    root = tmp_path / "data"
    write_mnist(root / "mnist", n_train=16, n_test=64, gz=True, size=28)
    monkeypatch.setenv("NIN_DATA", str(tmp_path / "empty"))
    monkeypatch.chdir(tmp_path)
    return root


def _checkpoint(path: Path, root: Path | None) -> Path:
    state = checkpoint_state(synthetic_digits(1024)[0])
    if root is not None:
        state["data"] = {"dataset": "mnist", "root": str(root), "train_split": "train", "eval_split": "valid",
                         "test_splits": ["test"]}
    save_checkpoint(path, state)
    return path


def test_eval_reads_the_recorded_root_while_it_exists(tiny_root: Path, tmp_path: Path,
                                                      capsys: pytest.CaptureFixture) -> None:
    checkpoint = _checkpoint(tmp_path / "run.pt", tiny_root)
    assert main(["eval", str(checkpoint), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["images"] == 64
    moved = tiny_root.rename(tmp_path / "moved")
    assert main(["eval", str(checkpoint)]) == 2
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and f"under {tiny_root}, which no longer exists" in err
    assert f"run `nin data download mnist --data-dir {tmp_path / 'empty'}`" in err and "--data-dir, else $NIN_DATA" in err
    assert "download=True" not in err and "root=" not in err
    assert main(["eval", str(checkpoint), "--data-dir", str(moved), "--json"]) == 0  # --data-dir comes first
    assert json.loads(capsys.readouterr().out)["images"] == 64


def test_checkpoints_written_before_the_data_record_still_load_and_evaluate(tiny_root: Path, tmp_path: Path,
                                                                            capsys: pytest.CaptureFixture) -> None:
    old = _checkpoint(tmp_path / "old.pt", None)
    assert load_trained(old).data is None
    assert main(["eval", str(old)]) == 2  # nothing recorded: $NIN_DATA, which is empty
    assert f"(here: {tmp_path / 'empty'})" in capsys.readouterr().err
    assert main(["eval", str(old), "--data-dir", str(tiny_root), "--json"]) == 0


def test_explain_reads_the_recorded_root_and_writes_into_the_runs_folder(tiny_root: Path, tmp_path: Path,
                                                                          capsys: pytest.CaptureFixture) -> None:
    checkpoint = _checkpoint(tmp_path / "run" / "last.pt", tiny_root)
    assert main(["explain", str(checkpoint), "--n", "2"]) == 0
    assert capsys.readouterr().out.split() == [str(tmp_path / "run" / "explain" / "explain-000.png")]
    assert main(["explain", str(checkpoint), "--n", "2", "--out", "figs"]) == 0
    assert capsys.readouterr().out.split() == [str(Path("figs") / "explain-000.png")]


class _Stop(Exception):
    pass


@pytest.mark.parametrize("recorded_exists", [True, False])
def test_check_trains_on_the_records_root_while_it_exists(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                          recorded_exists: bool) -> None:
    record, root = tmp_path / "record", tmp_path / "data"
    record.mkdir()
    if recorded_exists:
        root.mkdir()
    (record / "recipe.toml").write_text(recipe_to_toml(load_recipe("mnist-fast")))
    (record / "metrics.jsonl").write_text(json.dumps({"epoch": 1}) + "\n")
    (record / "summary.json").write_text(json.dumps({"data": {"root": str(root)}, "date": "2026-12-01"}))
    roots = []

    def trainer(recipe, out, data_root=None, **kwargs):
        roots.append(data_root)
        raise _Stop

    monkeypatch.setattr(check, "Trainer", trainer)
    for given in (None, tmp_path / "given"):
        with pytest.raises(_Stop):
            check.check_record(record, data_root=given)
    assert roots == [str(root) if recorded_exists else None, tmp_path / "given"]
