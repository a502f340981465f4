"""`nin reproduce`: run the recipes of one paper experiment and keep their records under results/."""
from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from nin.errors import NinError
from nin.experiments.paper import EXPERIMENTS, Experiment
from nin.train import Trainer, apply_overrides, load_recipe
from nin.utils.atomic import atomic_write_bytes

RECORD_FILES = ("summary.json", "metrics.jsonl", "curves.png", "recipe.toml")


class ExperimentError(NinError, ValueError):
    """An experiment name or recipe selection that does not exist."""


def experiment(name: str) -> Experiment:
    try:
        return EXPERIMENTS[name]
    except KeyError:
        raise ExperimentError(f"unknown experiment {name!r}; experiments: {', '.join(EXPERIMENTS)}") from None


def run_name(recipe: str, tag: str | None) -> str:
    return f"{recipe}-{tag}" if tag else recipe


def reproduce(name: str, *, runs_dir: Path, results_dir: Path, data_root: str | None = None,
              overrides: Sequence[str | tuple[str, str]] = (), only: list[str] | None = None, tag: str | None = None,
              command: str | None = None) -> list[dict[str, Any]]:
    """Train (or resume) each recipe of the experiment, then copy its small records into ``results_dir``.

    Checkpoints stay in ``runs_dir`` (they are large); a killed reproduction resumes where it stopped.
    ``tag`` names a variant (e.g. a shortened schedule) so it never overwrites the full run's records.
    """
    recipes = experiment(name).recipes
    if only:
        unknown = [r for r in only if r not in recipes]
        if unknown:
            raise ExperimentError(f"{', '.join(unknown)} not in {name}; its recipes: {', '.join(recipes)}")
        recipes = [r for r in recipes if r in only]
    summaries = []
    for recipe_name in dict.fromkeys(recipes):
        recipe = apply_overrides(load_recipe(recipe_name), overrides)
        run = run_name(recipe_name, tag)
        summary = Trainer(recipe, runs_dir / run, data_root=data_root, resume=True, command=command).fit()
        if summary is not None:
            record = results_dir / run
            for file in RECORD_FILES:
                content = (runs_dir / run / file).read_bytes()
                atomic_write_bytes(record / file, portable_summary(content, data_root) if file == "summary.json"
                                   else content)
            summaries.append(summary)
    return summaries


def portable_summary(content: bytes, data_root: str | None) -> bytes:
    """A run's summary.json for the shared records: the data root as the command gave it (or none), not the
    absolute path of this machine, which the run folder keeps so that `nin eval RUN` finds its data; and the
    home folder in the command (a shell's expansion of ~) written back as ~."""
    summary = json.loads(content)
    if isinstance(summary.get("command"), str):
        summary["command"] = summary["command"].replace(str(Path.home()), "~")
    data = summary.get("data")
    if isinstance(data, dict) and "root" in data:
        if data_root is None:
            del data["root"]
        else:
            data["root"] = str(data_root)
    return (json.dumps(summary, indent=2) + "\n").encode()
