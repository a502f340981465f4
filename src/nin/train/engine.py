"""The training loop: a recipe in, a trained model, checkpoints and records out."""
from __future__ import annotations

import dataclasses
import json
import os
import sys
import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from nin.checkpoint import load_checkpoint, require_finite, save_checkpoint
from nin.data import DatasetError, run_root
from nin.errors import NinError
from nin.inference.evaluate import EvalResult, autocast, evaluate
from nin.models import create_model
from nin.train.data import load_training_data
from nin.train.graphs import check_graphs_possible, graph_training_forward
from nin.train.health import CUDA_CHECK_EVERY, HealthMonitor, TrainingError
from nin.train.metrics import plot_curves, write_metrics
from nin.train.optimizer import build_optimizer, build_schedule, set_rates
from nin.train.recipe import RECIPE_DEFAULTS, Recipe, RecipeError, recipe_to_toml
from nin.train.run_folder import claim_run_folder, clear_run
from nin.utils.atomic import atomic_write_text
from nin.utils.distributed import World, all_reduce_sum, barrier, init_world, shutdown
from nin.utils.hardware import describe_hardware, slow_bf16_warning
from nin.utils.provenance import git_commit, source_digest
from nin.utils.runlock import FolderLock, describe_holder


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise TrainingError("device cuda was asked for but this machine has no CUDA GPU; use --device cpu")
    return torch.device(name)


def progress_bar_wanted() -> bool:
    """A per-step bar on a terminal only: in a log file each of its updates would be a line, and the epoch's summary
    line says it all. ``NIN_PROGRESS=bar`` forces the bar (for a tool that reads it from a pipe, as
    benchmarks/crash_test.py does), ``NIN_PROGRESS=epoch`` the lines."""
    forced = os.environ.get("NIN_PROGRESS")
    return forced == "bar" if forced in ("bar", "epoch") else sys.stderr.isatty()


def train_step(model: nn.Module, optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler, x: torch.Tensor,
               y: torch.Tensor, *, device: torch.device, precision: str, loss_scale: float,
               label_smoothing: float = 0.0) -> tuple[torch.Tensor, torch.Tensor]:
    """One SGD step on a batch: (summed loss, fp32 logits), detached and left on the device (no sync).

    The gradient is that of ``loss_sum × loss_scale`` (1 / batch size for a single process). Shared by
    the training loop and ``nin bench``, so the benchmark times exactly this step.
    """
    with autocast(device, precision):
        logits = model(x)
    logits = logits.float()
    loss_sum = F.cross_entropy(logits, y, reduction="sum", label_smoothing=label_smoothing)
    optimizer.zero_grad(set_to_none=True)
    scaler.scale(loss_sum * loss_scale).backward()
    scaler.step(optimizer)
    scaler.update()
    return loss_sum.detach(), logits.detach()


def _device_and_world(recipe: Recipe) -> tuple[torch.device, World]:
    """The device this process trains on and the process group it belongs to (torchrun's, or none)."""
    device = resolve_device(recipe.device)
    world = init_world(device)
    if device.type == "cuda" and world.distributed:
        device = torch.device("cuda", world.local_rank)
        torch.cuda.set_device(device)
    if recipe.precision == "fp16" and device.type != "cuda":
        raise TrainingError("precision fp16 needs a CUDA GPU; use --precision bf16 on a CPU")
    check_graphs_possible(recipe, device, world)
    return device, world


def _build_model(recipe: Recipe, num_classes: int, device: torch.device) -> nn.Module:
    try:
        model = create_model(recipe.model, num_classes=num_classes, **recipe.model_args)
    except TypeError as err:
        raise RecipeError(f"model_args {recipe.model_args} do not fit {recipe.model}: {err}") from None
    model = model.to(device)
    return model.to(memory_format=torch.channels_last) if recipe.channels_last else model


class Trainer:
    """Trains one recipe into ``out_dir``: ``last.pt``, ``metrics.jsonl``, ``curves.png``, ``summary.json``.

    The folder is locked (``nin.train.run_folder``) from the construction until ``fit()`` returns or raises, or
    ``close()``. Under torchrun, rank 0 alone locks and writes it; the other ranks only read the checkpoint.
    """

    def __init__(self, recipe: Recipe, out_dir: str | Path, data_root: str | Path | None = None,
                 resume: bool = False, progress: bool = True, command: str | None = None,
                 stop_after: int | None = None, overwrite: bool = False,
                 after_epoch: Callable[[Trainer], None] | None = None) -> None:
        """``stop_after`` ends training after that epoch without changing the schedule (as ``max_minutes`` does):
        the epochs run are those of the full recipe, which is what `nin check` needs to compare with a record.
        ``resume`` continues the run recorded in ``out_dir``, ``overwrite`` replaces it; a folder holding a run
        needs one of them. ``after_epoch`` is called on the main process once each epoch's records are written
        (`nin reproduce` keeps them under results/ as the run goes)."""
        self.recipe = recipe
        self.after_epoch = after_epoch
        self.started = datetime.now(timezone.utc)  # this process's sitting of the run, for the records
        self.stop_after = stop_after
        self.out_dir = Path(out_dir)
        self.overwrite = overwrite
        self.device, self.world = _device_and_world(recipe)
        self.progress = progress and self.world.is_main
        self.command = command or " ".join(sys.argv)
        self.checkpoint_path = self.out_dir / "last.pt"
        self._lock = self._claim_folder(resume, overwrite)
        try:
            self._setup(data_root, resume)
        except BaseException:
            self.close()
            raise
        slow = slow_bf16_warning(self.device, recipe.precision)  # after the errors of bad input, which stand alone
        if slow and self.world.is_main:
            print(f"warning: {slow}", file=sys.stderr)

    def _claim_folder(self, resume: bool, overwrite: bool) -> FolderLock | None:
        """Rank 0 locks and checks the folder; one all-reduce tells every rank whether it could, so the others stop
        with it rather than wait for it forever."""
        lock, error = None, None
        if self.world.is_main:
            try:
                lock = claim_run_folder(self.out_dir, resume=resume, overwrite=overwrite)
            except (NinError, OSError) as err:
                error = err
        failed = torch.tensor([float(error is not None)], device=self.device)
        if all_reduce_sum(failed, self.world).item() > 0:
            if error is not None:
                raise error
            raise TrainingError(f"the main process (rank 0) could not take the run folder {self.out_dir}; "
                                "its error says why")
        if lock is not None and lock.took_over is not None:
            print(f"note: {self.out_dir} was left locked by {describe_holder(lock.took_over)}, which has ended; "
                  "taking it over", file=sys.stderr)
        return lock

    def close(self) -> None:
        """Unlock the run folder (``fit()`` does this itself)."""
        if self._lock is not None:
            self._lock.release()

    def _setup(self, data_root: str | Path | None, resume: bool) -> None:
        recipe = self.recipe
        state = self._resume_state() if resume else None
        if state:  # without --data-dir, the data the checkpoint was trained on, while it is there
            data_root = run_root(data_root, state.get("data", {}).get("root"))

        torch.manual_seed(recipe.seed)
        self.data = load_training_data(recipe, data_root, self.device, self.world,
                                       preprocess_spec=state["preprocess"] if state else None, verbose=self.progress)
        self.classes = self.data.classes
        self.num_classes = len(self.classes)
        self.loader = self.data.loader

        self.model = _build_model(recipe, self.num_classes, self.device)
        self.optimizer = build_optimizer(self.model, recipe)
        self.schedule = build_schedule(recipe, len(self.loader))
        self.scaler = torch.amp.GradScaler("cuda", enabled=recipe.precision == "fp16")
        self.history: list[dict[str, Any]] = []
        self.start_epoch = 0
        self.elapsed = 0.0
        self.health = HealthMonitor(self.classes, recipe.lr,
                                    check_every=CUDA_CHECK_EVERY if self.device.type == "cuda" else 1)
        self.stopped_early: str | None = None  # why fit() ended before the recipe's end, if it did
        self.commit = git_commit()  # the code this process runs, read before the tree can change
        self.source = source_digest()
        if state:
            self._restore(state)
        if recipe.cuda_graphs:
            graph_training_forward(self.model, self.loader.capture_batch(), recipe.precision)
        self.ddp_model: nn.Module = (nn.parallel.DistributedDataParallel(self.model) if self.world.distributed
                                     else self.model)

    # -- checkpoints --------------------------------------------------------------------------
    def _resume_state(self) -> dict[str, Any] | None:
        if not self.checkpoint_path.exists():
            if self.world.is_main:
                print(f"no checkpoint in {self.out_dir}; starting from scratch", file=sys.stderr)
            return None
        state = load_checkpoint(self.checkpoint_path)
        require_finite(state, self.checkpoint_path, ("model", "optimizer", "preprocess"))
        saved = state["recipe"]
        mine = dataclasses.asdict(self.recipe)
        # extended, moved, re-timed, saved more or less often, re-cited
        ignored = {"epochs", "device", "max_minutes", "save_every", "peer_error", "peer_ref", "cuda_graphs"}
        # a field added since the checkpoint was written had its default then
        changed = [k for k in mine if k not in ignored and saved.get(k, RECIPE_DEFAULTS.get(k)) != mine[k]]
        if changed:
            raise TrainingError(
                f"--resume: the checkpoint {self.checkpoint_path} was trained with a different recipe "
                f"({', '.join(f'{k}: {saved.get(k)!r} there, {mine[k]!r} now' for k in changed)}); "
                "resume with the same recipe and overrides, or use another --out folder")
        return state

    def _restore(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        fresh = [dict(group) for group in self.optimizer.param_groups]
        self.optimizer.load_state_dict(state["optimizer"])
        for group, new in zip(self.optimizer.param_groups, fresh):  # keys added since the checkpoint was written
            for key, value in new.items():
                group.setdefault(key, value)
            group["fused"] = new["fused"]  # the implementation this device uses, not the one that wrote the file
        self.schedule.load_state_dict(state["schedule"])
        self.scaler.load_state_dict(state["scaler"])
        torch.set_rng_state(state["rng"]["torch"])
        if self.device.type == "cuda" and "cuda" in state["rng"]:
            torch.cuda.set_rng_state(state["rng"]["cuda"], self.device)
        self.history = list(state["history"])
        self.start_epoch = int(state["epoch"])
        self.elapsed = float(state["elapsed"])
        if self.world.is_main:
            print(f"resumed from {self.checkpoint_path} after epoch {self.start_epoch}", file=sys.stderr)

    def checkpoint_state(self, epoch: int) -> dict[str, Any]:
        rng = {"torch": torch.get_rng_state()}
        if self.device.type == "cuda":
            rng["cuda"] = torch.cuda.get_rng_state(self.device)
        return {
            "model_name": self.recipe.model,
            "model_args": dict(self.recipe.model_args),
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "schedule": self.schedule.state_dict(),
            "scaler": self.scaler.state_dict(),
            "rng": rng,
            "epoch": epoch,
            "elapsed": self.elapsed,
            "history": self.history,
            "preprocess": self.data.preprocess.to_spec(),
            "recipe": dataclasses.asdict(self.recipe),
            "classes": list(self.classes),
            "dataset": self.recipe.dataset,
            "input_size": self.data.input_size,
            "data": self.data.record(),
        }

    # -- the loop -----------------------------------------------------------------------------
    def _set_lr(self, epoch: int, step: int) -> float:
        return set_rates(self.optimizer, self.schedule, self.recipe, epoch, step)

    def _train_epoch(self, epoch: int) -> tuple[float, float, float]:
        recipe, world = self.recipe, self.world
        self.ddp_model.train()
        self.loader.set_epoch(epoch)
        n_total = len(self.data.train.labels)
        # loss sum, correct, count, then for each class the steps where its logit was not zero for some image
        totals = torch.zeros(3 + self.num_classes, dtype=torch.float64, device=self.device)
        bar = tqdm(total=len(self.loader), desc=f"epoch {epoch + 1}/{recipe.epochs}",
                   disable=not (self.progress and progress_bar_wanted()), leave=False, unit="batch")
        last_step = len(self.loader) - 1
        start = time.perf_counter()
        for step, (x, y) in enumerate(self.loader):
            self._set_lr(epoch, step)
            global_n = min(recipe.batch_size, n_total - step * recipe.batch_size)
            # sum / global batch × world size: DDP's gradient average then equals the global batch mean
            loss_sum, logits = train_step(self.ddp_model, self.optimizer, self.scaler, x, y, device=self.device,
                                          precision=recipe.precision, loss_scale=world.world_size / global_n,
                                          label_smoothing=recipe.label_smoothing)
            with torch.no_grad():
                totals[0] += loss_sum
                totals[1] += (logits.argmax(1) == y).sum()
                totals[2] += len(y)
                totals[3:] += (logits != 0).any(0)
            self.health.after_step(epoch, step, last_step, totals[0], logits, self._kept)
            bar.update()
            if not bar.disable and step % (10 * self.health.check_every) == 0:
                bar.set_postfix(loss=f"{totals[0].item() / max(totals[2].item(), 1):.3f}")
        bar.close()
        seconds = time.perf_counter() - start
        loss_sum, correct, count, *live_steps = all_reduce_sum(totals, world).tolist()
        self.health.end_epoch(epoch, live_steps, self._kept, warn=world.is_main)
        return loss_sum / count, 100.0 * (1 - correct / count), count / seconds

    @property
    def _kept(self) -> str:
        """Which checkpoint a stop leaves, for the health checks' messages."""
        if not self.start_epoch_done:
            return "No checkpoint was written."
        return f"The last good checkpoint {self.checkpoint_path} (epoch {self.start_epoch_done}) is kept."

    @property
    def start_epoch_done(self) -> int:
        return self.history[-1]["epoch"] if self.history else 0

    def fit(self) -> dict[str, Any] | None:
        """Train to the end of the recipe (or the paper's schedule), evaluate the test splits; the summary
        is returned by the main process only. The run folder is unlocked at the end, whatever happens."""
        try:
            return self._fit()
        finally:
            self.close()

    def _fit(self) -> dict[str, Any] | None:
        recipe = self.recipe
        if self.world.is_main:
            if self.overwrite:
                clear_run(self.out_dir)
            atomic_write_text(self.out_dir / "recipe.toml", recipe_to_toml(recipe))
            if self.history:  # a kill between last.pt and the records leaves them one epoch behind it
                self._write_records()
        for row in self.history:  # a resumed run still sees a collapse to chance that began before it stopped
            self.health.end_epoch_loss(row["epoch"] - 1, row["train_loss"])
        started = time.perf_counter()
        for epoch in range(self.start_epoch, recipe.epochs):
            if self.schedule.finished:
                break
            lr = self._set_lr(epoch, 0)
            tic = time.perf_counter()
            train_loss, train_error, images_per_s = self._train_epoch(epoch)
            self.elapsed += time.perf_counter() - tic
            warning = self.health.first_epoch_loss_warning(train_loss) if epoch == 0 else None
            if warning and self.world.is_main:
                print(warning, file=sys.stderr)
            self.health.check_parameters(self.model, epoch, self._kept)
            self.health.end_epoch_loss(epoch, train_loss)
            row: dict[str, Any] = {"epoch": epoch + 1, "lr": lr, "train_loss": train_loss, "train_error": train_error}
            if self.data.held_out is not None:
                result = self._evaluate(*self.data.held_out)
                row.update(valid_loss=result.loss, valid_error=result.error)
            self.schedule.end_epoch(epoch, train_error)
            row.update(images_per_s=images_per_s, elapsed_s=self.elapsed, lr_drops=list(self.schedule.drops))
            self.history.append(row)
            if self.world.is_main:
                held = f", {recipe.eval_split} error {row['valid_error']:.2f}%" if "valid_error" in row else ""
                print(f"epoch {epoch + 1}: lr {lr:.4g}, train loss {train_loss:.4f}, train error {train_error:.2f}%"
                      f"{held}, {images_per_s:.0f} images/s", file=sys.stderr, flush=True)
            minutes = (time.perf_counter() - started) / 60
            if recipe.max_minutes is not None and epoch + 1 < recipe.epochs and self._all_agree_time_is_up(minutes):
                self.stopped_early = (f"time limit: stopped after epoch {epoch + 1} of {recipe.epochs} because this "
                                      f"process had run {minutes:.2f} min (max_minutes = {recipe.max_minutes:g})")
            if self.stop_after is not None and epoch + 1 == self.stop_after < recipe.epochs:
                self.stopped_early = f"stopped after epoch {epoch + 1} of {recipe.epochs} as asked"
            last = self.stopped_early is not None or epoch + 1 == recipe.epochs or self.schedule.finished
            if last or (epoch + 1) % recipe.save_every == 0:
                self._save(epoch + 1)
            elif self.world.is_main:  # the metrics stay current; a resume rewrites them from the checkpoint
                write_metrics(self.out_dir / "metrics.jsonl", self.history)
            if self.after_epoch is not None and self.world.is_main:
                self.after_epoch(self)
            if self.stopped_early is not None:
                if self.world.is_main:
                    print(self.stopped_early, file=sys.stderr)
                break
        summary = self._finish()
        shutdown(self.world)
        return summary

    def _all_agree_time_is_up(self, minutes: float) -> bool:
        """True when any process has passed ``max_minutes``: all processes stop after the same epoch."""
        late = torch.tensor([float(minutes >= self.recipe.max_minutes)], device=self.device)
        return bool(all_reduce_sum(late, self.world).item() > 0)

    def _evaluate(self, images: torch.Tensor, labels: torch.Tensor) -> EvalResult:
        return evaluate(self.model, images, labels, self.num_classes, batch_size=self.recipe.eval_batch_size,
                        precision=self.recipe.precision, channels_last=self.recipe.channels_last,
                        flip=self.recipe.test_time_flip, world=self.world)

    def _save(self, epoch: int) -> None:
        if self.world.is_main:
            save_checkpoint(self.checkpoint_path, self.checkpoint_state(epoch))
            self._write_records()
        barrier(self.world)

    def _write_records(self) -> None:
        write_metrics(self.out_dir / "metrics.jsonl", self.history)
        plot_curves(self.out_dir / "curves.png", self.history, f"{self.recipe.name}: {self.recipe.model}",
                    self.recipe.paper_error, self.recipe.peer_error)

    def _finish(self) -> dict[str, Any] | None:
        tests: dict[str, Any] = {}
        for split in self.recipe.test_splits:
            try:
                data = self.data.load(split)
            except DatasetError as err:
                tests[split] = {"skipped": err.cli}
                continue
            result = self._evaluate(*self.data.prepare(data))
            tests[split] = {"description": data.description, "lossy": data.lossy, "images": result.count,
                            "error": result.error, "loss": result.loss,
                            "per_class_accuracy": dict(zip(data.classes, result.per_class_accuracy))}
        summary = {
            "recipe": self.recipe.name,
            "paper_ref": self.recipe.paper_ref,
            "paper_error": self.recipe.paper_error,
            "peer_error": self.recipe.peer_error,
            "peer_ref": self.recipe.peer_ref,
            "model": self.recipe.model,
            "epochs_run": self.start_epoch_done,
            "lr_drops_after_epochs": [e + 1 for e in self.schedule.drops],
            "stopped_early": self.stopped_early,
            "train_images": len(self.data.train.labels),
            "train_split": self.data.train.description,
            "data": self.data.record(),
            "eval_split": self.recipe.eval_split,  # the split that "final" calls valid_error
            "final": self.history[-1] if self.history else None,
            "tests": tests,
            "wall_time_s": self.elapsed,
            "precision": self.recipe.precision,
            "channels_last": self.recipe.channels_last,
            "processes": self.world.world_size,
            "hardware": describe_hardware(self.device),
            "commit": self.commit,
            "source": self.source,
            "command": self.command,
            "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        }
        if not self.world.is_main:
            return None
        atomic_write_text(self.out_dir / "summary.json", json.dumps(summary, indent=2) + "\n")
        return summary
