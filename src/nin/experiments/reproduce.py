"""`nin reproduce`: run the recipes of one paper experiment and keep their records under results/."""
from __future__ import annotations

import json
import multiprocessing
import os
import sys
import traceback
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from datetime import datetime, timezone
from functools import partial
from pathlib import Path
from typing import Any

import torch

from nin.errors import NinError
from nin.experiments.paper import EXPERIMENTS, Experiment
from nin.train import Recipe, Trainer, apply_overrides, load_recipe
from nin.utils.atomic import atomic_write_bytes, atomic_write_text
from nin.utils.hardware import describe_hardware

PARTIAL_RECORD_FILES = ("metrics.jsonl", "curves.png", "recipe.toml")  # written after each epoch
RECORD_FILES = ("summary.json", *PARTIAL_RECORD_FILES)
SITTINGS = "sittings.json"


class ExperimentError(NinError, ValueError):
    """An experiment name or recipe selection that does not exist."""


def experiment(name: str) -> Experiment:
    try:
        return EXPERIMENTS[name]
    except KeyError:
        raise ExperimentError(f"unknown experiment {name!r}; experiments: {', '.join(EXPERIMENTS)}") from None


def run_name(recipe: str, tag: str | None) -> str:
    return f"{recipe}-{tag}" if tag else recipe


def reproduce(experiments: str | Sequence[str], *, runs_dir: Path, results_dir: Path, data_root: str | None = None,
              overrides: Sequence[str | tuple[str, str]] = (), only: list[str] | None = None, tag: str | None = None,
              command: str | None = None, jobs: int = 1) -> list[dict[str, Any]]:
    """Train (or resume) each recipe of the experiments, keeping its small records in ``results_dir``.

    The records are kept after every epoch (``summary.json`` comes at the end), with ``sittings.json`` naming the
    processes that trained the run: a run stopped before its end still leaves its curves there.
    Checkpoints stay in ``runs_dir`` (they are large); a killed reproduction resumes where it stopped.
    ``tag`` names a variant (e.g. a shortened schedule) so it never overwrites the full run's records.
    ``jobs`` > 1 trains that many recipes at once, each in a process of its own with its output in
    ``runs_dir/RUN.log``: on a GPU that small runs leave mostly idle, the arms of the paper's tables share it.
    """
    names = [experiments] if isinstance(experiments, str) else list(experiments)
    recipes = list(dict.fromkeys(r for name in names for r in experiment(name).recipes))
    if only:
        unknown = [r for r in only if r not in recipes]
        if unknown:
            raise ExperimentError(f"{', '.join(unknown)} not in {', '.join(names)}; the recipes there: "
                                  f"{', '.join(recipes)}")
        recipes = [r for r in recipes if r in only]
    if jobs < 1:
        raise ExperimentError(f"--jobs must be at least 1, got {jobs}")
    runs = [(apply_overrides(load_recipe(name), overrides), run_name(name, tag)) for name in recipes]
    if jobs == 1:
        summaries = []
        for recipe, run in runs:
            summaries.append(Trainer(recipe, runs_dir / run, data_root=data_root, resume=True, command=command,
                                     after_epoch=partial(keep_partial_record, results_dir / run)).fit())
            _keep_records(runs_dir / run, results_dir / run, data_root, summaries[-1])
        return [summary for summary in summaries if summary is not None]
    return _train_at_once(runs, jobs, runs_dir, results_dir, data_root, command)


def _keep_records(run_dir: Path, record: Path, data_root: str | None, summary: dict[str, Any] | None) -> None:
    """Copy a finished run's small records (the main process of a run has its summary; others have none)."""
    if summary is None:
        return
    for file in RECORD_FILES:
        content = (run_dir / file).read_bytes()
        atomic_write_bytes(record / file, portable_summary(content, data_root) if file == "summary.json" else content)


def keep_partial_record(record: Path, trainer: Trainer) -> None:
    """After each epoch: the run's records so far, and this sitting (epochs, code, hardware, command) in
    ``sittings.json``. Each earlier sitting trained up to where the next one began, from its checkpoint: a stop
    between an epoch's checkpoint and its listing here leaves that epoch to the sitting that trained it, and a
    sitting that starts over from an earlier epoch (its checkpoint lost) supersedes what earlier sittings trained
    from there on, as its metrics.jsonl replaces theirs."""
    (record / "summary.json").unlink(missing_ok=True)  # a run that trains has not ended (it may have restarted)
    for file in PARTIAL_RECORD_FILES:
        if (trainer.out_dir / file).exists():
            atomic_write_bytes(record / file, (trainer.out_dir / file).read_bytes())
    first = trainer.start_epoch + 1
    try:
        earlier = json.loads((record / SITTINGS).read_text())["sittings"]
    except (OSError, ValueError, KeyError):  # none yet, or not ours: this sitting starts the list
        earlier = []
    earlier = [sitting for sitting in earlier if sitting["epochs"][0] < first]
    next_starts = [sitting["epochs"][0] for sitting in earlier[1:]] + [first]
    kept = [dict(sitting, epochs=[sitting["epochs"][0], next_start - 1])
            for sitting, next_start in zip(earlier, next_starts)]
    kept.append({"epochs": [first, trainer.start_epoch_done],
                 "started": trainer.started.strftime("%Y-%m-%d %H:%M UTC"),
                 "updated": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
                 "commit": trainer.commit, "hardware": describe_hardware(trainer.device),
                 "command": portable_command(trainer.command)})
    atomic_write_text(record / SITTINGS, json.dumps({"recipe_epochs": trainer.recipe.epochs, "sittings": kept},
                                                    indent=2) + "\n")


def _train_at_once(runs: list[tuple[Recipe, str]], jobs: int, runs_dir: Path, results_dir: Path,
                   data_root: str | None, command: str | None) -> list[dict[str, Any]]:
    """Train the runs ``jobs`` at a time in fresh processes; a run that fails leaves the others going and keeping
    their records, and the error at the end names each failed run and its log."""
    threads = max(1, torch.get_num_threads() // jobs)  # on a CPU, the cores shared out rather than oversubscribed
    runs_dir.mkdir(parents=True, exist_ok=True)
    logs = [runs_dir / f"{run}.log" for _, run in runs]
    outcomes: dict[str, dict[str, Any]] = {}
    with ProcessPoolExecutor(max_workers=jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
        futures = {pool.submit(_train_in_child, recipe, runs_dir / run, results_dir / run, data_root, command, log,
                               threads): run
                   for (recipe, run), log in zip(runs, logs)}
        for (_, run), log in zip(runs, logs):
            print(f"{run}: training in a process of its own, output in {log}", file=sys.stderr)
        for future in as_completed(futures):  # records kept as each run ends: a later kill leaves them
            run = futures[future]
            outcomes[run] = future.result()
            if "summary" in outcomes[run]:
                _keep_records(runs_dir / run, results_dir / run, data_root, outcomes[run]["summary"])
    failed = [f"{run} ({outcomes[run]['error'].rstrip('.')}; see {log})" for (_, run), log in zip(runs, logs)
              if "error" in outcomes[run]]
    if failed:
        raise ExperimentError(f"{len(failed)} of {len(runs)} runs failed: {'; '.join(failed)}. The others kept their "
                              "records; fix the cause and run the same command again (finished runs are not redone)")
    return [outcomes[run]["summary"] for _, run in runs]


def _train_in_child(recipe: Recipe, run_dir: Path, record: Path, data_root: str | None, command: str | None,
                    log: Path, threads: int) -> dict[str, Any]:
    """One run in a spawned process, its output in ``log``: {"summary": ...} or {"error": the one-line message}."""
    with open(log, "a") as out:
        os.dup2(out.fileno(), 1)
        os.dup2(out.fileno(), 2)
    torch.set_num_threads(threads)
    try:
        return {"summary": Trainer(recipe, run_dir, data_root=data_root, resume=True, command=command,
                                   after_epoch=partial(keep_partial_record, record)).fit()}
    except NinError as err:
        print(f"error: {err.cli}", file=sys.stderr, flush=True)
        return {"error": err.cli}
    except Exception as err:  # the traceback goes to the log; the parent names the run and the log
        traceback.print_exc()
        sys.stderr.flush()
        return {"error": f"{type(err).__name__}: {err}"}


def portable_summary(content: bytes, data_root: str | None) -> bytes:
    """A run's summary.json for the shared records: the data root as the command gave it (or none), not the
    absolute path of this machine, which the run folder keeps so that `nin eval RUN` finds its data; and the
    home folder in the command (a shell's expansion of ~) written back as ~."""
    summary = json.loads(content)
    if isinstance(summary.get("command"), str):
        summary["command"] = portable_command(summary["command"])
    data = summary.get("data")
    if isinstance(data, dict) and "root" in data:
        if data_root is None:
            del data["root"]
        else:
            data["root"] = str(data_root)
    return (json.dumps(summary, indent=2) + "\n").encode()


def portable_command(command: str) -> str:
    """The command as the shared records show it: the home folder (a shell's expansion of ~) written back as ~."""
    return command.replace(str(Path.home()), "~")
