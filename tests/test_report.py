"""`nin reproduce` keeps the records of a real (tiny) run; `nin report` sets them beside the paper's table."""
from __future__ import annotations

import dataclasses
import json
import os
import shutil
from pathlib import Path

import pytest
from _idx import write_mnist

from nin.cli import main
from nin.experiments import reproduce as reproduce_module
from nin.experiments.check import args_as_run
from nin.experiments.paper import EXPERIMENTS
from nin.experiments.report import recipe_differences, render
from nin.experiments.reproduce import ExperimentError, portable_summary, reproduce
from nin.train import Recipe, Trainer, list_recipes, load_recipe
from nin.train.recipe import recipe_to_toml

TINY = ["subset=128", "batch_size=64", "epochs=1", "eval_split=none", "test_splits=[\"valid\"]"]


def test_every_experiment_names_shipped_recipes() -> None:
    assert {"table1", "table2", "table3", "table4", "table5", "fig3", "fashion-mnist"} <= set(EXPERIMENTS)
    for exp in EXPERIMENTS.values():
        assert set(exp.recipes) <= set(list_recipes()), exp.name


def test_reproduce_then_report(shared_data: Path, tmp_path: Path) -> None:
    results = tmp_path / "results"
    relative_root = os.path.relpath(shared_data)  # as a user types it: --data-dir ../shared/data
    (summary,) = reproduce("table4", runs_dir=tmp_path / "runs", results_dir=results, data_root=relative_root,
                           overrides=TINY, only=["mnist"], tag="tiny")
    assert sorted(p.name for p in (results / "mnist-tiny").iterdir()) == \
        ["curves.png", "metrics.jsonl", "recipe.toml", "sittings.json", "summary.json"]
    assert not list(results.rglob("*.pt"))  # checkpoints stay in the runs folder
    # the run folder remembers where its data is; the shared record holds no path of this machine
    assert json.loads((tmp_path / "runs" / "mnist-tiny" / "summary.json").read_text())["data"]["root"] == \
        str(shared_data.resolve())
    assert json.loads((results / "mnist-tiny" / "summary.json").read_text())["data"]["root"] == relative_root
    page = tmp_path / "docs" / "results.md"
    assert main(["report", "--results-dir", str(results), "--out", str(page)]) == 0
    text = page.read_text()
    error = json.loads((results / "mnist-tiny" / "summary.json").read_text())["tests"]["valid"]["error"]
    assert f"| NIN + Dropout | 0.47 | `mnist` | `mnist-tiny` (changed) | {error:.2f} (valid) |" in text
    assert '| eval_split=none, test_splits=["valid"], subset=128, epochs=1, batch_size=64 |' in text
    assert "| NIN + Dropout | 0.47 | `mnist` |" in text and "| Conv. maxout + Dropout | 0.45 |" in text
    assert "](../results/mnist-tiny/curves.png)" in text
    assert "| mlpconv + Fully Connected | 11.59 | `cifar10-fc` | not run yet | - |" in text
    assert "| Fast modern recipe for the MNIST NIN | - | `mnist-fast` | not run yet | - |" in text  # our own recipe's row
    assert "| Stochastic Pooling | 0.47 |  |  |  |" in text  # a paper row we have no recipe for


def test_a_stopped_reproduction_leaves_its_record_so_far(shared_data: Path, tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """Stopped in epoch 2 of 3, a run already has its first epoch under results/ (no summary: it has not ended);
    resumed, sittings.json names both sittings; started over without its checkpoint, only the new one, and the
    old run's summary is gone."""
    results, runs = tmp_path / "results", tmp_path / "runs"
    record = results / "mnist-tiny"
    run = {"runs_dir": runs, "results_dir": results, "data_root": str(shared_data), "only": ["mnist"],
           "tag": "tiny", "overrides": [*TINY, "epochs=3"],
           "command": f"nin reproduce table4 --runs-dir {Path.home() / 'nin-runs'}"}
    train_epoch = Trainer._train_epoch

    def stop_in_epoch_2(self: Trainer, epoch: int) -> tuple[float, float, float]:
        if epoch == 1:
            raise KeyboardInterrupt
        return train_epoch(self, epoch)

    monkeypatch.setattr(Trainer, "_train_epoch", stop_in_epoch_2)
    with pytest.raises(KeyboardInterrupt):
        reproduce("table4", **run)
    assert sorted(p.name for p in record.iterdir()) == ["curves.png", "metrics.jsonl", "recipe.toml", "sittings.json"]
    assert [json.loads(line)["epoch"] for line in (record / "metrics.jsonl").read_text().splitlines()] == [1]
    (stopped,) = json.loads((record / "sittings.json").read_text())["sittings"]
    assert stopped["epochs"] == [1, 1] and stopped["command"] == "nin reproduce table4 --runs-dir ~/nin-runs"

    monkeypatch.setattr(Trainer, "_train_epoch", train_epoch)
    reproduce("table4", **run)
    sittings = json.loads((record / "sittings.json").read_text())
    assert sittings["recipe_epochs"] == 3
    assert [s["epochs"] for s in sittings["sittings"]] == [[1, 1], [2, 3]]
    assert (record / "metrics.jsonl").read_bytes() == (runs / "mnist-tiny" / "metrics.jsonl").read_bytes()
    assert (record / "summary.json").exists()

    shutil.rmtree(runs)  # a machine handed back bare: the run starts over
    monkeypatch.setattr(Trainer, "_train_epoch", stop_in_epoch_2)
    with pytest.raises(KeyboardInterrupt):
        reproduce("table4", **run)
    assert [s["epochs"] for s in json.loads((record / "sittings.json").read_text())["sittings"]] == [[1, 1]]
    assert not (record / "summary.json").exists()  # it summarized the run this one replaces


def test_a_stop_between_checkpoint_and_listing_leaves_the_epoch_to_its_sitting(shared_data: Path, tmp_path: Path,
                                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """A SIGTERM after epoch 2's checkpoint but before sittings.json lists it: the resumed run starts at epoch 3,
    and epoch 2 stays with the sitting that trained it rather than falling out of both."""
    results = tmp_path / "results"
    run = {"runs_dir": tmp_path / "runs", "results_dir": results, "data_root": str(shared_data), "only": ["mnist"],
           "tag": "tiny", "overrides": [*TINY, "epochs=3"], "command": "nin reproduce table4"}
    keep = reproduce_module.keep_partial_record

    def stop_before_listing_epoch_2(record: Path, trainer: Trainer) -> None:
        if trainer.start_epoch_done == 2:
            raise KeyboardInterrupt
        keep(record, trainer)

    monkeypatch.setattr(reproduce_module, "keep_partial_record", stop_before_listing_epoch_2)
    with pytest.raises(KeyboardInterrupt):
        reproduce("table4", **run)
    monkeypatch.setattr(reproduce_module, "keep_partial_record", keep)
    reproduce("table4", **{**run, "command": "nin reproduce table4 --again"})
    first, second = json.loads((results / "mnist-tiny" / "sittings.json").read_text())["sittings"]
    assert (first["epochs"], first["command"]) == ([1, 2], "nin reproduce table4")
    assert (second["epochs"], second["command"]) == ([3, 3], "nin reproduce table4 --again")


def test_shared_records_hold_no_path_of_this_machine() -> None:
    run = {"command": f"nin train --out {Path.home() / 'runs' / 'a'} --data-dir ../data", "data": {"root": "/abs/data"}}
    shared = json.loads(portable_summary(json.dumps(run).encode(), "../data"))
    assert shared == {"command": "nin train --out ~/runs/a --data-dir ../data", "data": {"root": "../data"}}
    assert "root" not in json.loads(portable_summary(json.dumps(run).encode(), None))["data"]


def _write_record(results: Path, run: str, recipe: Recipe, last_epoch_error: float, tests: dict) -> None:
    """A hand-made record: the report reads only these fields."""
    (results / run).mkdir(parents=True)
    (results / run / "recipe.toml").write_text(recipe_to_toml(recipe))
    summary = {"recipe": recipe.name, "final": {"valid_error": last_epoch_error}, "tests": tests,
               "epochs_run": recipe.epochs, "wall_time_s": 60.0, "precision": "bf16", "channels_last": True,
               "hardware": "cpu", "commit": "abc", "date": "today", "command": "nin ..."}
    (results / run / "summary.json").write_text(json.dumps(summary))


def test_report_tells_runs_of_the_shipped_recipe_from_changed_ones(tmp_path: Path) -> None:
    results = tmp_path / "results"
    shipped = load_recipe("mnist-fast")
    for run, recipe in [("as-shipped", dataclasses.replace(shipped, seed=3, device="cpu")),
                        ("shortened", dataclasses.replace(shipped, epochs=2, lr=0.5))]:
        _write_record(results, run, recipe, 1.0, {"test": {"error": 0.9}})
    text = render(results, tmp_path / "docs" / "results.md")
    method = "| Fast modern recipe for the MNIST NIN | - | `mnist-fast` |"  # one row per run, each in full
    assert f"{method} `as-shipped` | 1.00 (valid); 0.90 (test) |" in text  # a seed or device is no change of procedure
    assert f"{method} `shortened` (changed) | 1.00 (valid); 0.90 (test) |" in text
    assert "| today | epochs=2, lr=0.5 | [curves]" in text and "| today | none | [curves]" in text


def test_report_gives_mean_and_std_over_the_seeds_of_one_procedure(tmp_path: Path) -> None:
    """Runs of one procedure with distinct seeds get a mean ± sample-std row under the recipe they ran as shipped,
    whichever recipe name a run was trained under; only the splits every run measured count."""
    results = tmp_path / "results"
    fast = load_recipe("mnist-fast")
    for run, recipe, valid, tests in [
            ("a-seed0", dataclasses.replace(fast, seed=0), 1.0, {"test": {"error": 0.5}, "extra": {"error": 3.0}}),
            ("b-seed1", dataclasses.replace(fast, seed=1), 2.0, {"test": {"error": 0.7}}),
            ("c-seed2", dataclasses.replace(fast, name="mnist", seed=2), 4.0, {"test": {"error": 0.9}})]:
        _write_record(results, run, recipe, valid, tests)
    text = render(results, tmp_path / "docs" / "results.md")
    # by hand: mean(1, 2, 4) = 2.33, sample std 1.53; mean(0.5, 0.7, 0.9) = 0.70, std 0.20
    assert ("| Fast modern recipe for the MNIST NIN | - | `mnist-fast` | mean ± std of 3 seeds: `a-seed0`, `b-seed1`, "
            "`c-seed2` | 2.33 ± 1.53 (valid); 0.70 ± 0.20 (test) |") in text
    assert "| NIN + Dropout | 0.47 | `mnist` | `c-seed2` (changed) |" in text
    assert text.count("| mean ± std of") == 1

    _write_record(results, "d-seed0-again", dataclasses.replace(fast, seed=0), 1.5, {})
    text = render(results, tmp_path / "docs" / "results.md")
    assert "`a-seed0`, `b-seed1`, `c-seed2` | 2.33 ± 1.53 (valid); 0.70 ± 0.20 (test) |" in text  # a rerun: no sample

    summary = json.loads((results / "d-seed0-again" / "summary.json").read_text())
    (results / "d-seed0-again" / "summary.json").write_text(json.dumps(summary | {"date": "2026-12-07 01:17 UTC"}))
    text = render(results, tmp_path / "docs" / "results.md")  # d now ran first: a-seed0 is the rerun
    # by hand: mean(2, 4, 1.5) = 2.50, sample std sqrt((0.25 + 2.25 + 1) / 2) = 1.32; d measured no test split
    assert "mean ± std of 3 seeds: `b-seed1`, `d-seed0-again`, `c-seed2` | 2.50 ± 1.32 (valid) |" in text


def test_report_compares_a_record_with_the_model_defaults_of_its_day(tmp_path: Path) -> None:
    """mnist-fast names init_std="he" since the default became the authors' 0.05; older records ran He by default."""
    results = tmp_path / "results"
    shipped = load_recipe("mnist-fast")
    assert shipped.model_args["init_std"] == "he"
    old = dataclasses.replace(shipped, model_args={"batch_norm": True})
    for run, date in [("before", "2026-11-27 07:32 UTC"), ("after", "2026-12-01 07:32 UTC")]:
        _write_record(results, run, old, 1.0, {})
        summary = json.loads((results / run / "summary.json").read_text())
        (results / run / "summary.json").write_text(json.dumps({**summary, "date": date}))
    text = render(results, tmp_path / "docs" / "results.md")
    assert "| `before` | 1.00 (valid) |" in text and "| `after` (changed) | 1.00 (valid) |" in text
    assert '| model_args={"batch_norm": true} | [curves](../results/after/' in text


def test_report_compares_the_fully_connected_arms_with_the_rates_they_ran(tmp_path: Path) -> None:
    """Until 2026-12-04 19:39 UTC a fully connected head took cccp6's rates: the same recipe ran another procedure,
    so such a record is changed and not matched with a GAP run, while one written after it is as shipped."""
    results = tmp_path / "results"
    for run, recipe, date in [("fc-before", "cifar10-fc", "2026-12-04 17:06 UTC"),
                              ("fc-after", "cifar10-fc", "2026-12-04 19:40 UTC"),
                              ("gap-before", "cifar10", "2026-12-04 17:06 UTC")]:
        _write_record(results, run, load_recipe(recipe), 50.0, {})
        summary = json.loads((results / run / "summary.json").read_text())
        (results / run / "summary.json").write_text(json.dumps({**summary, "date": date}))
    text = render(results, tmp_path / "docs" / "results.md")
    assert "| `fc-before` (changed) | 50.00 (valid) |" in text and "| `fc-after` | 50.00 (valid) |" in text
    assert '"head_takes_last_layer_rates": true' in text
    assert "- `fc-after` (`cifar10-fc`), `gap-before` (`cifar10`)" in text
    assert "`fc-before` (`cifar10-fc`), `gap-before`" not in text
    # where every layer had the same multipliers (the BatchNorm fast recipes), which layer took them did not matter
    same_rates = dataclasses.replace(load_recipe("cifar10-fc"), model_args={"batch_norm": True, "bias_lr_mult": 2.0})
    assert args_as_run(same_rates, "2026-11-27 10:28 UTC") == same_rates.model_args
    bias_only = dataclasses.replace(same_rates, model_args={"last_layer_bias_lr_mult": 0.5})
    assert args_as_run(bias_only, "2026-11-27 10:28 UTC")["head_takes_last_layer_rates"] is True


def test_report_names_the_last_epochs_error_by_the_split_it_was_measured_on(tmp_path: Path) -> None:
    """The d2l.ai peer evaluates on `test` after each epoch: that is not a `valid` error, and not a second one."""
    results = tmp_path / "results"
    d2l = load_recipe("fashion-mnist-d2l")
    assert d2l.eval_split == "test"
    _write_record(results, "d2l-tested", d2l, 12.5, {"test": {"error": 12.5}})
    _write_record(results, "d2l-untested", d2l, 13.0, {})
    text = render(results, tmp_path / "docs" / "results.md")
    assert "| `fashion-mnist-d2l` | `d2l-tested` | 12.50 (test) |\n" in text
    assert "| `fashion-mnist-d2l` | `d2l-untested` | 13.00 (test) |\n" in text
    assert "| `d2l-tested` | 12.50 (test) |" in text
    assert "(valid)" not in text


def test_report_lists_runs_stopped_before_their_end_apart_from_the_tables(tmp_path: Path) -> None:
    """A record with curves but no summary has no test error: it gets no table row, but its table says how far it
    got, its held-out error then and at its lowest, and what it is (its README's title, or its last sitting)."""
    results = tmp_path / "results"
    recipe = load_recipe("cifar10-fc-dropout")
    _write_record(results, "finished", recipe, 12.0, {"test-lossless-1000": {"error": 11.5}})
    for run, about in [("stopped-by-hand", "# Stopped to give the CPU back | epoch 3"), ("still-going", None)]:
        (results / run).mkdir()
        (results / run / "recipe.toml").write_text(recipe_to_toml(recipe))
        rows = [{"epoch": e, "train_error": t, "valid_error": v} for e, t, v in [(1, 60.0, 50.0), (2, 45.0, 40.0),
                                                                                  (3, 41.25, 45.0)]]
        (results / run / "metrics.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
        if about:
            (results / run / "README.md").write_text(about + "\n\nWhy it stopped.\n")
        else:
            sitting = {"epochs": [1, 3], "updated": "2026-12-05 15:00 UTC"}
            (results / run / "sittings.json").write_text(json.dumps({"recipe_epochs": 260, "sittings": [sitting]}))
    table5 = render(results, tmp_path / "docs" / "results.md").split("## Table 5")[1].split("\n## ")[0]
    assert "| `finished` | 12.00 (valid); 11.50 (test-lossless-1000) |" in table5
    assert "| `stopped-by-hand` | `cifar10-fc-dropout` | 3 of 260 | 41.25 | 45.00 (valid) | 40.00 (valid, epoch 2) " \
           "| Stopped to give the CPU back \\| epoch 3 | [curves](../results/stopped-by-hand/curves.png) |" in table5
    assert "| `still-going` | `cifar10-fc-dropout` | 3 of 260 | 41.25 | 45.00 (valid) | 40.00 (valid, epoch 2) " \
           "| last epoch ended 2026-12-05 15:00 UTC (sittings.json) |" in table5
    assert "| `finished` | `cifar10-fc-dropout` |" not in table5  # a finished run is not listed as stopped
    assert "`stopped-by-hand` (changed)" not in table5 and "`stopped-by-hand` |" not in table5.split("Runs:")[0]


def test_unknown_experiment_and_recipe(tmp_path: Path) -> None:
    with pytest.raises(ExperimentError, match="unknown experiment 'table9'"):
        reproduce("table9", runs_dir=tmp_path, results_dir=tmp_path)
    with pytest.raises(ExperimentError, match="cifar10 not in table4"):
        reproduce("table4", runs_dir=tmp_path, results_dir=tmp_path, only=["cifar10"])


def test_each_experiment_lists_each_recipe_once() -> None:
    for exp in EXPERIMENTS.values():
        assert len(exp.recipes) == len(set(exp.recipes)), exp.name
    assert EXPERIMENTS["fashion-mnist"].recipes == ["fashion-mnist-fast", "fashion-mnist", "fashion-mnist-d2l"]


def test_report_lists_the_rerun_checks(tmp_path: Path) -> None:
    results = tmp_path / "results"
    (results / "check").mkdir(parents=True)
    check = {"record": "results/mnist-fast", "epochs": 2, "verdict": "within tolerance", "compared": 12,
             "differences": [{"where": "epoch 2", "field": "valid_error", "recorded": 0.5, "rerun": 0.75},
                             {"where": "epoch 2", "field": "valid_loss", "recorded": 0.02, "rerun": 0.03}],
             "recorded_hardware": "cpu A", "rerun_hardware": "cpu B", "command": "nin check results/mnist-fast"}
    (results / "check" / "mnist-fast.json").write_text(json.dumps(check))
    text = render(results, tmp_path / "docs" / "results.md")
    assert ("| `results/mnist-fast` | 1-2 | within tolerance | 12 | 2 | 0.25 | cpu A | cpu B | "
            "`nin check results/mnist-fast` |") in text
    assert "No run recorded yet." in text  # the checks folder holds no training run


@pytest.mark.parametrize("test_splits", ["[\"test\"]", "[]"])
def test_train_prints_the_last_epochs_error_under_its_split_once(tmp_path: Path, capsys: pytest.CaptureFixture,
                                                               test_splits: str) -> None:
    write_mnist(tmp_path / "data" / "mnist", n_train=10_128, n_test=64, gz=False, size=28)
    argv = ["train", "--recipe", "mnist", "--data-dir", str(tmp_path / "data"), "--out", str(tmp_path / "run")]
    for override in ["subset=128", "batch_size=64", "epochs=1", "eval_split=\"test\"", f"test_splits={test_splits}"]:
        argv += ["--set", override]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "valid error" not in printed
    [line] = [line for line in printed.splitlines() if "test error" in line]
    assert (" on mnist 'test'" in line) == (test_splits != "[]")  # the test split's line, else the last epoch's


def test_report_names_the_matched_comparisons_of_a_table(tmp_path: Path) -> None:
    """Runs fill a table's rows as a matched comparison only when they share the seed and the changes to their
    recipes and none stopped early; a run that is the only one of its recipe in its set matches nothing."""
    results = tmp_path / "results"
    for run, recipe, seed, epochs, stopped in [("gap-a", "cifar10", 0, 2, None), ("fc-a", "cifar10-fc", 0, 2, None),
                                               ("fc-drop-seed1", "cifar10-fc-dropout", 1, 2, None),
                                               ("cnn-gap-cut", "cnn-gap", 0, 2, "time limit"),
                                               ("cnn-fc-longer", "cnn-fc", 0, 3, None)]:
        _write_record(results, run, dataclasses.replace(load_recipe(recipe), seed=seed, epochs=epochs), 1.0, {})
        if stopped:
            summary = json.loads((results / run / "summary.json").read_text())
            (results / run / "summary.json").write_text(json.dumps({**summary, "stopped_early": stopped}))
    text = render(results, tmp_path / "docs" / "results.md")
    table5 = text.split("## Table 5")[1].split("\n## ")[0]
    matched = [line for line in table5.splitlines() if line.startswith("- ")]
    assert matched == ["- `fc-a` (`cifar10-fc`), `gap-a` (`cifar10`)"]
    # matched runs follow their recipes, so the table says where those differ beyond the network: the fully
    # connected arm's half rate, the conventional CNN's own settings; not the model, names or descriptions
    [differ] = [line for line in table5.splitlines() if line.startswith("Besides the network")]
    assert "`lr`: 0.05 (`cifar10-fc`, `cifar10-fc-dropout`), 0.1 (`cifar10`), 0.001 (`cnn-fc`, `cnn-fc-dropout`, " \
           "`cnn-gap`)" in differ
    assert '`preprocess`: ["gcn", "zca"] (`cifar10-fc`, `cifar10-fc-dropout`, `cifar10`), ["mean_image"]' in differ
    assert not {"`model`", "`name`", "`description`", "`epochs`", "`seed`"} & set(differ.replace(":", " ").split())
    fig3 = text.split("## Figure 3")[1].split("\n## ")[0]  # only the cifar10 row has a run: nothing to compare
    assert "Matched comparisons" not in fig3

    _write_record(results, "nodrop-longer", dataclasses.replace(load_recipe("cifar10-nodropout"), epochs=3), 1.0, {})
    fig3 = render(results, tmp_path / "docs" / "results.md").split("## Figure 3")[1].split("\n## ")[0]
    assert "Matched comparisons: none yet." in fig3
    # the arm without dropout ships half the GAP arm's rate (its one change from the authors' file)
    assert "Besides the network, the paper rows' recipes as shipped differ in `lr`: 0.05 (`cifar10-nodropout`), " \
           "0.1 (`cifar10`)." in fig3
    assert recipe_differences(["cnn-fc", "cnn-fc-dropout", "cnn-gap"]) == {}  # Section 4.6's arms: the network only


def test_runs_that_ran_the_same_procedure_but_for_the_network_are_matched(tmp_path: Path) -> None:
    """Fully connected runs set back to the GAP arm's rate (a change to their recipes that it did not make) still
    differ from it in the network alone; the runs that also made the same changes as each other are listed once,
    inside that larger set, not as a line of their own."""
    results = tmp_path / "results"
    gap_lr = load_recipe("cifar10").lr
    assert load_recipe("cifar10-fc").lr != gap_lr and load_recipe("cifar10-fc-dropout").lr != gap_lr
    for run, recipe, lr in [("fc-at-gap-rate", "cifar10-fc", gap_lr),
                            ("fc-drop-at-gap-rate", "cifar10-fc-dropout", gap_lr), ("gap", "cifar10", None),
                            ("fc-other-rate", "cifar10-fc", 0.01)]:
        shipped = load_recipe(recipe)
        _write_record(results, run, dataclasses.replace(shipped, epochs=2, lr=lr or shipped.lr), 1.0, {})
    table5 = render(results, tmp_path / "docs" / "results.md").split("## Table 5")[1].split("\n## ")[0]
    matched = [line for line in table5.splitlines() if line.startswith("- ")]
    assert matched == [("- `fc-at-gap-rate` (`cifar10-fc`), `fc-drop-at-gap-rate` (`cifar10-fc-dropout`), `gap` "
                        "(`cifar10`)")]
