"""`nin check`: re-run the first epochs of a recorded run and compare them with its record.

A record under ``results/`` holds the recipe exactly as it ran (``recipe.toml``), its per-epoch metrics and its
summary. Training is deterministic for a given seed, hardware, thread count and torch build, so re-running the
recipe reproduces the record bit for bit there; elsewhere the numbers may drift apart, and the check says by how much.
"""
from __future__ import annotations

import dataclasses
import json
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nin.data import run_root
from nin.errors import NinError
from nin.train import Recipe, Trainer, load_recipe
from nin.train.engine import resolve_device
from nin.train.metrics import read_metrics
from nin.train.run_folder import recorded_run
from nin.utils.hardware import describe_hardware

EPOCH_FIELDS = ("lr", "lr_drops", "train_loss", "train_error", "valid_loss", "valid_error")
EXACT_FIELDS = ("lr", "lr_drops", "epochs")
"""The schedule (and how long it ran): any difference here means another procedure ran, whatever the tolerance."""
LOSS_FIELDS = ("train_loss", "valid_loss", "test_loss")
"""Reported, not judged: a loss moves with the errors. The other fields are errors in % points, judged by
``tolerance``."""


def _always(model_args: dict[str, Any]) -> bool:
    return True


def _last_layer_rates_scaled(model_args: dict[str, Any]) -> bool:
    """Whether the last layer's multipliers differ from every other layer's: else it matters not which layer gets
    them."""
    bias = model_args.get("bias_lr_mult", 1.0)
    return model_args.get("last_layer_lr_mult", 1.0) != 1.0 or model_args.get("last_layer_bias_lr_mult", bias) != bias


CHANGED_MODEL_DEFAULTS = (  # (model, argument, the default before, the first day or minute (UTC) of the new one,
    # whether the default mattered for these model arguments)
    ("nin_mnist", "init_std", "he", "2026-11-30", _always),  # now the authors' initW=0.05
    ("nin_svhn", "init_std", "he", "2026-11-30", _always),
    # now cccp6 keeps its rates under a fully connected head
    ("nin_cifar10_fc", "head_takes_last_layer_rates", True, "2026-12-04 19:39", _last_layer_rates_scaled),
    ("nin_cifar10_fc_dropout", "head_takes_last_layer_rates", True, "2026-12-04 19:39", _last_layer_rates_scaled),
)
"""A record that does not name such an argument, was written before then, and whose arguments made the default
matter ran with the old default."""


class CheckError(NinError, ValueError):
    """A record that cannot be checked (missing or unreadable files, too few epochs)."""


@dataclass
class Difference:
    where: str  # "epoch 3" or "test split 'test'"
    field: str
    recorded: Any
    rerun: Any

    @property
    def size(self) -> float | None:
        numeric = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (self.recorded, self.rerun))
        return abs(self.rerun - self.recorded) if numeric else None


@dataclass
class CheckResult:
    record: str
    epochs: int
    tolerance: float
    recorded_hardware: str | None
    rerun_hardware: str
    recorded_commit: str | None
    rerun_commit: str | None
    recorded_processes: int
    rerun_processes: int
    compared: int = 0
    differences: list[Difference] = field(default_factory=list)
    recorded_source: str | None = None  # nin.utils.provenance.source_digest(); records before it have none
    rerun_source: str | None = None

    @property
    def verdict(self) -> str:
        """``identical``, ``within tolerance`` (errors within it, schedule equal) or ``differs``."""
        if not self.differences:
            return "identical"
        for d in self.differences:
            if d.field in EXACT_FIELDS or (d.field not in LOSS_FIELDS and (d.size is None or d.size > self.tolerance)):
                return "differs"
        return "within tolerance"

    def to_dict(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "verdict": self.verdict}


def _read_record(record: Path) -> tuple[Path, list[dict[str, Any]], dict[str, Any]]:
    files = {name: record / name for name in ("recipe.toml", "metrics.jsonl", "summary.json")}
    missing = [str(p) for p in files.values() if not p.is_file()]
    if missing:
        raise CheckError(f"{record} is not a complete run record: {', '.join(missing)} missing (a record holds "
                         "recipe.toml, metrics.jsonl and summary.json, as `nin train` and `nin reproduce` write them)")
    try:
        metrics = read_metrics(files["metrics.jsonl"])
        summary = json.loads(files["summary.json"].read_text())
    except json.JSONDecodeError as err:
        raise CheckError(f"{record}: a record file is not valid JSON ({err}); restore it from version "
                         "control") from None
    return files["recipe.toml"], metrics, summary


def check_record(record: str | Path, *, epochs: int = 1, tolerance: float = 0.0, data_root: str | Path | None = None,
                 device: str | None = None, out_dir: str | Path | None = None) -> CheckResult:
    """Re-train the record's recipe for its first ``epochs`` epochs (same schedule, seed and data) and compare.

    The test splits are evaluated and compared only when ``epochs`` covers the whole record, since the record
    holds them for its last epoch only. The rerun's files go to ``out_dir``, or to a temporary folder. The data
    comes from ``data_root``, else from the root the record names while it exists, else ``$NIN_DATA``.
    """
    record = Path(record)
    recipe_path, recorded_rows, summary = _read_record(record)
    if not 1 <= epochs <= len(recorded_rows):
        raise CheckError(f"--epochs {epochs}: {record} records epochs 1 to {len(recorded_rows)}; ask for one of those")
    if out_dir is not None and recorded_run(out_dir):
        raise CheckError(f"--out {out_dir} already holds a run ({', '.join(recorded_run(out_dir))}); give a new or "
                         "empty folder")
    recipe = load_recipe(str(recipe_path))
    whole = epochs == len(recorded_rows)
    overrides: dict[str, Any] = {"max_minutes": None}
    if not whole:
        overrides["test_splits"] = []
    if device is not None:
        overrides["device"] = device
    if recipe.cuda_graphs and resolve_device(device or recipe.device).type != "cuda":
        overrides["cuda_graphs"] = False  # how a GPU runs the same step, not part of the procedure
    recipe = dataclasses.replace(recipe, **overrides, model_args=args_as_run(recipe, summary.get("date", "")))
    data_root = run_root(data_root, summary.get("data", {}).get("root"))

    with tempfile.TemporaryDirectory(prefix="nin-check-") as scratch:
        trainer = Trainer(recipe, out_dir or scratch, data_root=data_root, stop_after=epochs,
                          command=f"nin check {record} --epochs {epochs}")
        rerun_summary = trainer.fit()
    result = CheckResult(record=str(record), epochs=epochs, tolerance=tolerance,
                         recorded_hardware=summary.get("hardware"),
                         rerun_hardware=describe_hardware(trainer.device),
                         recorded_commit=summary.get("commit"), rerun_commit=trainer.commit,
                         recorded_processes=summary.get("processes", 1), rerun_processes=trainer.world.world_size,
                         recorded_source=summary.get("source"), rerun_source=trainer.source)
    _compare(result, "the rerun", {"epochs": epochs}, {"epochs": len(trainer.history)}, ("epochs",))
    for recorded, rerun in zip(recorded_rows, trainer.history):
        _compare(result, f"epoch {recorded['epoch']}", recorded, rerun, EPOCH_FIELDS)
    if whole and rerun_summary is not None:
        for split, recorded in summary.get("tests", {}).items():
            rerun = rerun_summary["tests"].get(split, {})
            _compare(result, f"test split {split!r}", _test_values(recorded), _test_values(rerun),
                     ("test_error", "test_loss"))
    return result


def args_as_run(recipe: Recipe, date: str) -> dict[str, Any]:
    """The recipe's model arguments with the defaults of the day (or minute) the record was written."""
    args = dict(recipe.model_args)
    for model, name, old_default, changed, mattered in CHANGED_MODEL_DEFAULTS:
        if recipe.model == model and name not in args and date[:len(changed)] < changed and mattered(args):
            args[name] = old_default
    return args


def _test_values(test: dict[str, Any]) -> dict[str, Any]:
    return {f"test_{key}": test[key] for key in ("error", "loss") if key in test}


def _compare(result: CheckResult, where: str, recorded: dict[str, Any], rerun: dict[str, Any],
             fields: tuple[str, ...]) -> None:
    for name in fields:
        if name in recorded:
            result.compared += 1
            if rerun.get(name) != recorded[name]:
                result.differences.append(Difference(where, name, recorded[name], rerun.get(name)))


def format_result(result: CheckResult) -> str:
    """The verdict, what may explain a difference, and each differing value."""
    lines = [f"{result.record}, epochs 1-{result.epochs}: {result.verdict} "
             f"({result.compared} values compared, {len(result.differences)} differ)"]
    if result.recorded_hardware != result.rerun_hardware:
        lines.append(f"  recorded on {result.recorded_hardware}; rerun on {result.rerun_hardware}: bit-identical "
                     "numbers are expected only on the same hardware, thread count and torch build")
    if result.recorded_processes != result.rerun_processes:
        lines.append(f"  recorded with {result.recorded_processes} processes, rerun with {result.rerun_processes}: "
                     "each process draws its own dropout masks")
    if result.recorded_commit != result.rerun_commit:
        lines.append(f"  recorded with commit {result.recorded_commit}; rerun with {result.rerun_commit}")
    if result.recorded_source is not None and result.recorded_source != result.rerun_source:
        lines.append(f"  the package's source files differ from the recorded run's (source digest "
                     f"{result.recorded_source} there, {result.rerun_source} here)")
    for d in result.differences:
        size = f" (difference {d.size:.6g})" if d.size is not None else ""
        lines.append(f"  {d.where}, {d.field}: recorded {d.recorded}, rerun {d.rerun}{size}")
    return "\n".join(lines)
