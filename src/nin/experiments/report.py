"""`nin report`: the results page, our measured errors beside the paper's tables, from results/."""
from __future__ import annotations

import dataclasses
import json
import os
import statistics
from pathlib import Path
from typing import Any

from nin.experiments.check import Difference, args_as_run
from nin.experiments.paper import EXPERIMENTS
from nin.train import Recipe, load_recipe
from nin.train.metrics import read_metrics
from nin.utils.atomic import atomic_write_text

# Recipe fields that describe or house a run rather than its procedure: a change to them is not a change of
# method (a seed is a draw of the same procedure; a time limit that bites shows as "stopped early").
_NOT_PROCEDURE = ("name", "description", "paper_ref", "paper_error", "peer_error", "peer_ref", "device", "seed",
                  "eval_batch_size", "max_minutes", "save_every")


def load_records(results_dir: Path) -> dict[str, list[tuple[str, dict[str, Any]]]]:
    """Recipe name -> [(run folder, summary)] for every training run's ``results/*/summary.json``.

    Other records (the localization check, benchmarks) have their own pages and no recipe."""
    records: dict[str, list[tuple[str, dict[str, Any]]]] = {}
    for path in sorted(results_dir.glob("*/summary.json")):
        summary = json.loads(path.read_text())
        if "recipe" not in summary:
            continue
        records.setdefault(summary["recipe"], []).append((path.parent.name, summary))
    return records


def load_unfinished(results_dir: Path) -> dict[str, list[tuple[str, Recipe]]]:
    """Recipe name -> [(run folder, its recipe)] for folders with curves but no summary: runs stopped before their
    end (by hand, a health check or a lost machine) or still going; no test split was scored, so they stay out of
    the tables."""
    unfinished: dict[str, list[tuple[str, Recipe]]] = {}
    for path in sorted(results_dir.glob("*/metrics.jsonl")):
        if not (path.parent / "summary.json").exists() and (path.parent / "recipe.toml").exists():
            recorded = load_recipe(str(path.parent / "recipe.toml"))
            unfinished.setdefault(recorded.name, []).append((path.parent.name, recorded))
    return unfinished


_STOPPED_HEADER = ("| run | recipe | epochs run | training error (%) | last held-out error (%) | lowest held-out "
                   "error (%) | what it is | curves |\n|---|---|---|---|---|---|---|---|")


def _unfinished_line(results_dir: Path, run: str, recorded: Recipe, page_dir: Path) -> str:
    """How far a stopped run got, its held-out error then and at its lowest, and what it is: its README's title
    (written by hand for a stopped run), else when its last epoch ended (`nin reproduce`'s sittings.json)."""
    rows = read_metrics(results_dir / run / "metrics.jsonl")  # written after an epoch: never empty
    held = [row for row in rows if row.get("valid_error") is not None]
    last, lowest = "-", "-"
    if held:
        best = min(held, key=lambda row: row["valid_error"])
        last = f"{held[-1]['valid_error']:.2f} ({recorded.eval_split})"
        lowest = f"{best['valid_error']:.2f} ({recorded.eval_split}, epoch {best['epoch']})"
    readme, sittings = results_dir / run / "README.md", results_dir / run / "sittings.json"
    if readme.exists():
        about = readme.read_text().splitlines()[0].lstrip("# ").strip().replace("|", "\\|")  # a table cell
    elif sittings.exists():
        about = f"last epoch ended {json.loads(sittings.read_text())['sittings'][-1]['updated']} (sittings.json)"
    else:
        about = "-"
    curves = os.path.relpath(results_dir / run / "curves.png", page_dir)
    return (f"| `{run}` | `{recorded.name}` | {rows[-1]['epoch']} of {recorded.epochs} | {rows[-1]['train_error']:.2f} "
            f"| {last} | {lowest} | {about} | [curves]({curves}) |")


def procedure(recorded: Recipe, date: str = "") -> dict[str, Any]:
    """The fields of a run's recorded recipe that make its procedure. A model argument the record does not name
    had the default of the record's ``date`` (see ``nin.experiments.check``)."""
    ran = dataclasses.asdict(dataclasses.replace(recorded, model_args=args_as_run(recorded, date)))
    return {k: v for k, v in ran.items() if k not in _NOT_PROCEDURE}


def changed_fields(recorded: Recipe, recipe: str, date: str = "") -> dict[str, Any]:
    """Procedure fields in which a run's recorded recipe differs from the recipe as shipped: a shortened or
    modified run must not pass for the paper's procedure on the results page."""
    shipped = dataclasses.asdict(load_recipe(recipe))
    return {k: v for k, v in procedure(recorded, date).items() if v != shipped[k]}


def _changes(changed: dict[str, Any]) -> str:
    return ", ".join(f"{k}={'none' if v is None else json.dumps(v)}" for k, v in changed.items()) or "none"


def _error_values(summary: dict[str, Any], eval_split: str | None) -> dict[str, float]:
    """Every held-out error of a run, by the label of what it was measured on.

    The last epoch's held-out error is measured on the recipe's ``eval_split`` (``valid`` in the paper's
    recipes, ``test`` in the d2l.ai peer's); it is left out when the same split is also a test split."""
    values = {}
    final = summary.get("final") or {}
    if final.get("valid_error") is not None and "error" not in summary["tests"].get(eval_split, {}):
        values[str(eval_split)] = final["valid_error"]
    for split, test in summary["tests"].items():
        if "error" in test:
            values[f"{split}, LOSSY" if test.get("lossy") else split] = test["error"]
    return values


def _errors(values: dict[str, float]) -> str:
    return "; ".join(f"{error:.2f} ({label})" for label, error in values.items()) or "-"


@dataclasses.dataclass
class SeedGroup:
    """Runs of one procedure with different seeds, shown under ``recipe``'s row as mean ± std."""
    runs: list[str]
    recipe: str  # the recipe whose procedure they ran, if one of theirs is that as shipped, else the first one's
    changed: bool
    errors: str


def seed_groups(records: dict[str, list[tuple[str, dict[str, Any]]]], recorded: dict[str, Recipe],
                values: dict[str, dict[str, float]]) -> list[SeedGroup]:
    """Mean ± sample standard deviation over every set of at least two runs with the same procedure and distinct
    seeds, whichever recipe name each was trained under, over the splits that every run of the set measured. A
    later run of a seed already in the set (a rerun, say on another machine) is left out: it is no new sample."""
    groups: dict[str, list[tuple[str, str, str]]] = {}
    for recipe, runs in records.items():
        for run, summary in runs:
            key = json.dumps(procedure(recorded[run], summary.get("date", "")), sort_keys=True)
            groups.setdefault(key, []).append((run, recipe, summary.get("date", "")))
    found = []
    for members in groups.values():
        first_of_seed: dict[int, str] = {}
        for run, _, _ in sorted(members, key=lambda member: member[2]):
            first_of_seed.setdefault(recorded[run].seed, run)
        members = [member for member in members if member[0] in first_of_seed.values()]
        runs = [run for run, _, _ in members]
        if len(runs) < 2:
            continue
        first, date = runs[0], members[0][2]
        as_shipped = [recipe for _, recipe, _ in members if not changed_fields(recorded[first], recipe, date)]
        recipe = as_shipped[0] if as_shipped else members[0][1]
        labels = [label for label in values[first] if all(label in values[run] for run in runs)]
        cells = [f"{statistics.mean(values[run][label] for run in runs):.2f} ± "
                 f"{statistics.stdev(values[run][label] for run in runs):.2f} ({label})" for label in labels]
        found.append(SeedGroup(runs, recipe, not as_shipped, "; ".join(cells) or "-"))
    return found


def matched_sets(runs: list[tuple[str, str, dict[str, Any]]], recorded: dict[str, Recipe],
                 changes: dict[str, dict[str, Any]]) -> list[list[tuple[str, str]]]:
    """Sets of (run, recipe) from at least two of a table's recipes that ran with the same seed, none stopped early,
    and either made the same changes to their recipes (each followed its row's procedure in the same way) or ran
    the same procedure but for the network (runs that set aside where their recipes differ, such as one arm's
    rate). Either way the rows they fill differ only in what they compare. ``runs`` is [(recipe, run, summary)]."""
    sets: dict[str, list[tuple[str, str]]] = {}
    for recipe, run, summary in runs:
        if not summary.get("stopped_early"):
            ran = {k: v for k, v in procedure(recorded[run], summary.get("date", "")).items() if k != "model"}
            for key in (["same changes", changes[run]], ["same procedure", ran]):
                sets.setdefault(json.dumps(key + [recorded[run].seed], sort_keys=True), []).append((run, recipe))
    found = {frozenset(members): members for members in sets.values() if len({r for _, r in members}) > 1}
    return [members for key, members in found.items() if not any(key < other for other in found)]  # largest only


def recipe_differences(recipes: list[str]) -> dict[str, dict[str, list[str]]]:
    """The procedure fields other than the model in which the recipes of a table's paper rows, as shipped,
    disagree: what those rows compare besides the network (another rate for one arm, the conventional CNN's own
    settings). {field: {value as JSON: [recipes with it]}}."""
    shipped = {recipe: dataclasses.asdict(load_recipe(recipe)) for recipe in recipes}
    differences: dict[str, dict[str, list[str]]] = {}
    for field in shipped[recipes[0]]:
        if field in _NOT_PROCEDURE or field == "model":
            continue
        by_value: dict[str, list[str]] = {}
        for recipe in recipes:
            by_value.setdefault(json.dumps(shipped[recipe][field], sort_keys=True), []).append(recipe)
        if len(by_value) > 1:
            differences[field] = by_value
    return differences


def _difference_line(differences: dict[str, dict[str, list[str]]]) -> list[str]:
    if not differences:
        return ["Besides the network, the paper rows' recipes are the same.", ""]
    def holders(recipes: list[str]) -> str:
        return ", ".join(f"`{recipe}`" for recipe in recipes)
    fields = [f"`{field}`: " + ", ".join(f"{value} ({holders(recipes)})" for value, recipes in by_value.items())
              for field, by_value in differences.items()]
    return ["Besides the network, the paper rows' recipes as shipped differ in " + "; ".join(fields) + ".", ""]


def _matched_lines(sets: list[list[tuple[str, str]]]) -> list[str]:
    if not sets:
        return [("Matched comparisons: none yet. The runs of these rows differ in more than what the rows compare "
                 "(their changes in the Runs table), so compare across rows with care."), ""]
    intro = ("Matched comparisons: each line's runs used the same seed, none stopped early, and they made the same "
             "changes to their rows' recipes or ran the same procedure but for the network, so they differ only in "
             "what their rows compare. Any other pair of runs differs in more (their changes in the Runs table).")
    return [intro, ""] + ["- " + ", ".join(f"`{run}` (`{recipe}`)" for run, recipe in members)
                          for members in sets] + [""]


def _first_clause(description: str) -> str:
    """A recipe's description up to its first colon: short enough for a table's method column."""
    return description.split(":")[0].strip().rstrip(".")


def _experiment_rows(method: str, published: str, recipe: str | None, runs: list[str],
                     values: dict[str, dict[str, float]], changes: dict[str, dict[str, Any]],
                     groups: list[SeedGroup]) -> list[str]:
    """One table row per run of the row's recipe (the method and published number repeated), then one per group
    of seeds (mean ± std), or one row saying that the recipe has not run; a paper row without a recipe of ours
    gets empty cells."""
    cells = f"| {method} | {published} | {f'`{recipe}`' if recipe else ''} |"
    if not runs:
        return [f"{cells} {'not run yet' if recipe else ''} | {'-' if recipe else ''} |"]
    rows = [f"{cells} `{run}`{' (changed)' if changes[run] else ''} | {_errors(values[run])} |" for run in runs]
    for group in (group for group in groups if group.recipe == recipe):
        names = ", ".join(f"`{run}`" for run in group.runs)
        rows.append(f"{cells} mean ± std of {len(group.runs)} seeds: {names}{' (changed)' if group.changed else ''} "
                    f"| {group.errors} |")
    return rows


def _duration(seconds: float) -> str:
    return f"{seconds / 3600:.2f} h" if seconds >= 3600 else f"{seconds / 60:.1f} min"


def _run_line(run: str, summary: dict[str, Any], errors: str, changed: dict[str, Any], page_dir: Path,
              results_dir: Path) -> str:
    curves = os.path.relpath(results_dir / run / "curves.png", page_dir)
    drops = summary.get("lr_drops_after_epochs") or []
    stopped = " (stopped early: time limit)" if summary.get("stopped_early") else ""
    return (f"| `{run}` | {errors} | {summary['epochs_run']}{stopped}"
            f"{' (rate /10 after ' + ', '.join(map(str, drops)) + ')' if drops else ''} | "
            f"{_duration(summary['wall_time_s'])} | "
            f"{summary['precision']}{', channels_last' if summary.get('channels_last') else ''} | "
            f"{summary['hardware']} | {summary.get('commit') or '-'} | {summary['date']} | {_changes(changed)} | "
            f"[curves]({curves}) |")


def render(results_dir: Path, page: Path) -> str:
    records = load_records(results_dir)
    unfinished = load_unfinished(results_dir)
    recorded = {run: load_recipe(str(results_dir / run / "recipe.toml"))
                for runs in records.values() for run, _ in runs}
    changes = {run: changed_fields(recorded[run], s["recipe"], s.get("date", "")) for runs in records.values()
               for run, s in runs}
    values = {run: _error_values(s, recorded[run].eval_split) for runs in records.values() for run, s in runs}
    groups = seed_groups(records, recorded, values)
    lines = ["# Results", "",
             "Generated by `nin report` from the records in `results/`; every number below was measured by the "
             "command stored in that run's `summary.json`. Errors are test errors in %, each labelled with the "
             "split it was measured on: `valid` is the paper's own held-out split (the last 10,000 training "
             "images), `test-lossless-1000` the first 1,000 official CIFAR-10 test images, `test-jpeg75` a "
             "LOSSY JPEG-75 copy of the CIFAR-10 test set (not the official test set). Why our numbers differ "
             "from the paper's: [differences.md](differences.md). `published` is the paper's number, or, where the "
             "paper has none (Fashion-MNIST), a peer's. A run marked `changed` did not follow its recipe as shipped: "
             "the Runs tables list the fields it changed (fewer epochs, another schedule, ...). A `mean ± std of N "
             "seeds` row summarizes runs of one procedure that differ only in their seed (sample standard "
             "deviation; of two runs with one seed, the earlier), under the recipe they ran as shipped. Under a "
             "table with runs of two or more recipes, `Matched comparisons` names the runs that differ only in what "
             "their rows compare. Runs stopped before their end have no test split scored and no row in the "
             "tables: each table's `Stopped before the end` list shows how far they got.", ""]
    shown: set[str] = set()
    header = ("| run | our error (%) | epochs | training time | precision | hardware | commit | date | changed from the "
              "recipe | curves |\n|---|---|---|---|---|---|---|---|---|---|")
    for exp in EXPERIMENTS.values():
        lines += [f"## {exp.title}", "", "| method | published | our recipe | our run | our error (%) |",
                  "|---|---|---|---|---|"]
        rows = [(row.method, f"{row.error:.2f}", row.recipe) for row in exp.rows]
        rows += [(_first_clause(load_recipe(recipe).description), "-", recipe) for recipe in exp.extra_recipes
                 if recipe not in {row.recipe for row in exp.rows}]
        for method, published, recipe in rows:
            runs = [run for run, _ in records.get(recipe, [])] if recipe else []
            lines += _experiment_rows(method, published, recipe, runs, values, changes, groups)
        lines.append("")
        runs = [(recipe, run, s) for recipe in exp.recipes for run, s in records.get(recipe, [])]
        if runs:
            lines += ["Runs:", "", header] + [_run_line(run, s, _errors(values[run]), changes[run], page.parent,
                                                        results_dir) for _, run, s in runs] + [""]
            if len({recipe for recipe, _, _ in runs}) > 1:
                paper_recipes = list(dict.fromkeys(row.recipe for row in exp.rows if row.recipe))
                lines += _difference_line(recipe_differences(paper_recipes)) if len(paper_recipes) > 1 else []
                lines += _matched_lines(matched_sets(runs, recorded, changes))
            shown.update(run for _, run, _ in runs)
        else:
            lines += ["No run recorded yet.", ""]
        stopped = [record for recipe in exp.recipes for record in unfinished.get(recipe, [])]
        if stopped:
            lines += ["Stopped before the end:", "", _STOPPED_HEADER]
            lines += [_unfinished_line(results_dir, run, recorded, page.parent) for run, recorded in stopped] + [""]
    commands = [(run, s["command"]) for recipe in records for run, s in records[recipe] if run in shown]
    if commands:
        lines += ["## Commands", ""] + [f"- `{run}`: `{cmd}`" for run, cmd in commands] + [""]
    return "\n".join(lines + _check_section(results_dir))


def _check_section(results_dir: Path) -> list[str]:
    """The `nin check` records (``results/check/*.json``): which records a re-run reproduced, and how closely."""
    checks = [json.loads(path.read_text()) for path in sorted((results_dir / "check").glob("*.json"))]
    if not checks:
        return []
    lines = ["## Re-run checks", "",
             "`nin check RECORD --epochs N` re-trained the record's `recipe.toml` from scratch for its first N "
             "epochs and compared every recorded value (rate, losses, errors; the test errors too when N covers "
             "the whole record). Bit-identical results are expected only on the record's hardware, thread count "
             "and torch build ([training.md](training.md#checking-a-record)).", "",
             "| record | epochs re-run | verdict | values compared | differing | largest error difference (points) "
             "| recorded on | re-run on | command |", "|---|---|---|---|---|---|---|---|---|"]
    for check in checks:
        sizes = [size for d in check["differences"]
                 if d["field"].endswith("_error") and (size := Difference(**d).size) is not None]
        largest = f"{max(sizes):.4g}" if sizes else "-"
        lines.append(f"| `{check['record']}` | 1-{check['epochs']} | {check['verdict']} | {check['compared']} | "
                     f"{len(check['differences'])} | {largest} | {check['recorded_hardware']} | "
                     f"{check['rerun_hardware']} | `{check['command']}` |")
    return lines + [""]


def write_report(results_dir: str | os.PathLike = "results", page: str | os.PathLike = "docs/results.md") -> Path:
    page = Path(page)
    atomic_write_text(page, render(Path(results_dir), page))
    return page
