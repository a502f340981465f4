"""The training loop: a recipe in, a trained model, checkpoints and records out."""
from __future__ import annotations

import dataclasses
import json
import math
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from nin.errors import NinError
from nin.utils.atomic import atomic_write_text, remove_partial_writes
from nin.data import Augment, DatasetError, DeviceLoader, LabeledImages, Pipeline, build_pipeline, load_dataset
from nin.utils.hardware import describe_hardware
from nin.models import create_model, param_groups
from nin.utils.provenance import git_commit, source_digest
from nin.checkpoint import load_checkpoint, save_checkpoint
from nin.utils.distributed import World, all_reduce_sum, barrier, init_world, shutdown
from nin.inference.evaluate import EvalResult, autocast, evaluate, resident_dtype
from nin.train.metrics import plot_curves, write_metrics
from nin.train.recipe import RECIPE_DEFAULTS, Recipe, RecipeError, recipe_to_toml
from nin.train.schedule import Schedule


class TrainingError(NinError, RuntimeError):
    """Training stopped on purpose; the message explains why and what to do."""


DEAD_MAP_STEPS = 20  # consecutive steps with all logits exactly zero before calling the maps dead
DEAD_CLASS_EPOCHS = 3  # consecutive epochs a class map is zero on every training image before training stops
SYNC_EVERY = 25  # on CUDA, steps between the host's looks at the loss


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise TrainingError("device cuda was asked for but this machine has no CUDA GPU; use --device cpu")
    return torch.device(name)


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


def _dead_maps_message(recipe: Recipe, num_classes: int, where: str) -> str:
    return (
        f"{where}: every class map is zero, so the loss sits at ln({num_classes}) = {math.log(num_classes):.6f} and "
        "the network predicts chance. The ReLU on the last mlpconv layer has switched off all class maps at once "
        f"(lr {recipe.lr}, Gaussian init). Remedies: a lower learning rate (--set lr={recipe.lr / 5:g}), a warm-up "
        "(--set warmup_epochs=2), a smaller init for the last layer, or BatchNorm (--set model_args.batch_norm=true, "
        "not in the paper). Training was stopped instead of running for hours at chance level."
    )


class Trainer:
    """Trains one recipe into ``out_dir``: ``last.pt``, ``metrics.jsonl``, ``curves.png``, ``summary.json``."""

    def __init__(self, recipe: Recipe, out_dir: str | Path, data_root: str | Path | None = None,
                 resume: bool = False, progress: bool = True, command: str | None = None,
                 stop_after: int | None = None) -> None:
        """``stop_after`` ends training after that epoch without changing the schedule (as ``max_minutes`` does):
        the epochs run are those of the full recipe, which is what `nin check` needs to compare with a record."""
        self.recipe = recipe
        self.stop_after = stop_after
        self.out_dir = Path(out_dir)
        self.data_root = data_root
        self.device = resolve_device(recipe.device)
        self.world = init_world(self.device)
        if self.device.type == "cuda" and self.world.distributed:
            self.device = torch.device("cuda", self.world.local_rank)
            torch.cuda.set_device(self.device)
        if recipe.precision == "fp16" and self.device.type != "cuda":
            raise TrainingError("precision fp16 needs a CUDA GPU; use --precision bf16 on a CPU")
        self.progress = progress and self.world.is_main
        self.command = command or " ".join(sys.argv)
        self.checkpoint_path = self.out_dir / "last.pt"
        state = self._resume_state() if resume else None

        torch.manual_seed(recipe.seed)
        train = self._load("train", recipe.train_split)
        if recipe.subset is not None:
            train = dataclasses.replace(train, images=train.images[: recipe.subset], labels=train.labels[: recipe.subset])
        self.classes = train.classes
        self.num_classes = len(train.classes)
        self.preprocess = (Pipeline.from_spec(state["preprocess"]) if state
                           else build_pipeline(recipe.preprocess).fit(train.images))
        self.train_set = train
        self.eval_set = self._load("eval", recipe.eval_split) if recipe.eval_split else None

        augment = Augment(recipe.augment_pad, recipe.augment_flip, recipe.augment_mode) \
            if recipe.augment_pad or recipe.augment_flip else None
        self.loader = DeviceLoader(self._finite(train).to(resident_dtype(recipe.precision)), train.labels,
                                   recipe.batch_size, shuffle=True,
                                   seed=recipe.seed, rank=self.world.rank, world_size=self.world.world_size,
                                   augment=augment, device=self.device, channels_last=recipe.channels_last)
        self.eval_data = self._prepare(self.eval_set) if self.eval_set else None

        try:
            model = create_model(recipe.model, num_classes=self.num_classes, **recipe.model_args)
        except TypeError as err:
            raise RecipeError(f"model_args {recipe.model_args} do not fit {recipe.model}: {err}") from None
        self.model = model.to(self.device)
        if recipe.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.optimizer = torch.optim.SGD(param_groups(self.model, recipe.lr, recipe.weight_decay), lr=recipe.lr,
                                         momentum=recipe.momentum, nesterov=recipe.nesterov)
        self.schedule = Schedule(recipe.schedule, recipe.epochs, len(self.loader), warmup_epochs=recipe.warmup_epochs,
                                 milestones=recipe.milestones, gamma=recipe.gamma, patience=recipe.plateau_patience,
                                 min_delta=recipe.plateau_min_delta, max_drops=recipe.plateau_max_drops)
        self.scaler = torch.amp.GradScaler("cuda", enabled=recipe.precision == "fp16")
        self.history: list[dict[str, Any]] = []
        self.start_epoch = 0
        self.elapsed = 0.0
        self.dead_epochs = [0] * len(self.classes)  # per class: consecutive epochs of this process with a dead map
        self.stopped_early: str | None = None  # why fit() ended before the recipe's end, if it did
        self.commit = git_commit()  # the code this process runs, read before the tree can change
        self.source = source_digest()
        if state:
            self._restore(state)
        self.ddp_model: nn.Module = (nn.parallel.DistributedDataParallel(self.model) if self.world.distributed
                                     else self.model)

    # -- data ---------------------------------------------------------------------------------
    def _load(self, role: str, split: str) -> LabeledImages:
        data = load_dataset(self.recipe.dataset, split, root=self.data_root)
        if self.progress:
            print(f"{role}: {data.description}", file=sys.stderr)
        return data

    def _prepare(self, data: LabeledImages) -> tuple[torch.Tensor, torch.Tensor]:
        return self._finite(data).to(self.device, resident_dtype(self.recipe.precision)), data.labels.to(self.device)

    def _finite(self, data: LabeledImages) -> torch.Tensor:
        """The preprocessed images, refused if any value is NaN or Inf: training on them would only
        surface later as a 'diverged' loss that blames the learning rate."""
        x = self.preprocess.transform(data.images)
        bad = torch.cat([~torch.isfinite(chunk.flatten(1)).all(1) for chunk in x.split(4096)])
        if bad.any():
            raise TrainingError(
                f"{data.name} {data.split!r}: the preprocessing {self.recipe.preprocess} turned {int(bad.sum()):,} "
                f"of {len(x):,} images into NaN or Inf (the first is image {int(bad.nonzero()[0])}); nothing was "
                "trained. Fix the preprocessing (a zca filter_bias above 0, more images to fit it on) or the data "
                "files.")
        return x

    # -- checkpoints --------------------------------------------------------------------------
    def _resume_state(self) -> dict[str, Any] | None:
        if not self.checkpoint_path.exists():
            if self.world.is_main:
                print(f"no checkpoint in {self.out_dir}; starting from scratch", file=sys.stderr)
            return None
        state = load_checkpoint(self.checkpoint_path)
        saved = state["recipe"]
        mine = dataclasses.asdict(self.recipe)
        # extended, moved, re-timed, saved more or less often, re-cited
        ignored = {"epochs", "device", "max_minutes", "save_every", "peer_error", "peer_ref"}
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
            "preprocess": self.preprocess.to_spec(),
            "recipe": dataclasses.asdict(self.recipe),
            "classes": list(self.classes),
            "dataset": self.recipe.dataset,
            "input_size": list(self.train_set.images.shape[1:]),
        }

    # -- the loop -----------------------------------------------------------------------------
    def _set_lr(self, epoch: int, step: int) -> float:
        """Set every group's rate for this step; returns the base rate of the weights."""
        factor = self.schedule.factor(epoch, step)
        held = self.schedule.factor(epoch, step, held=True) if self.recipe.hold_bias_rates else factor
        for group in self.optimizer.param_groups:
            group["lr"] = self.recipe.lr * (held if group["bias"] else factor) * group["lr_mult"]
        return self.recipe.lr * factor

    def _train_epoch(self, epoch: int) -> tuple[float, float, float]:
        recipe, world = self.recipe, self.world
        self.ddp_model.train()
        self.loader.set_epoch(epoch)
        n_total = len(self.train_set.labels)
        # loss sum, correct, count, then for each class the steps where its logit was not zero for some image
        totals = torch.zeros(3 + self.num_classes, dtype=torch.float64, device=self.device)
        dead_steps = 0
        bar = tqdm(total=len(self.loader), desc=f"epoch {epoch + 1}/{recipe.epochs}", disable=not self.progress,
                   leave=False, unit="batch")
        # Reading a GPU value stalls the host until the GPU catches up, so on CUDA the checks look every
        # SYNC_EVERY steps (a NaN loss stays NaN in the running sum); on a CPU they are free every step.
        sync_every = SYNC_EVERY if self.device.type == "cuda" else 1
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
                if epoch == 0:  # a host read per step, in the first epoch only
                    dead_steps = dead_steps + 1 if bool(logits.abs().max() == 0) else 0
            checked = step % sync_every == sync_every - 1 or step == last_step
            if checked and not torch.isfinite(totals[0]):  # the model in memory is lost; last.pt is not
                raise TrainingError(
                    f"the loss became {totals[0].item()} at epoch {epoch + 1}, step {step + 1}"
                    f"{'' if sync_every == 1 else ' (or up to ' + str(sync_every - 1) + ' steps before)'}: training "
                    f"diverged. The last good checkpoint {self.checkpoint_path} (epoch {self.start_epoch_done}) is "
                    f"kept. Lower the learning rate (now {recipe.lr}) or add a warm-up (--set warmup_epochs=2).")
            if dead_steps >= DEAD_MAP_STEPS:
                raise TrainingError(_dead_maps_message(recipe, self.num_classes, f"epoch 1, step {step + 1}"))
            bar.update()
            if self.progress and step % (10 * sync_every) == 0:
                bar.set_postfix(loss=f"{totals[0].item() / max(totals[2].item(), 1):.3f}")
        bar.close()
        seconds = time.perf_counter() - start
        loss_sum, correct, count, *live_steps = all_reduce_sum(totals, world).tolist()
        self.dead_epochs = [n + 1 if steps == 0 else 0 for n, steps in zip(self.dead_epochs, live_steps)]
        dead = [name for name, n in zip(self.classes, self.dead_epochs) if n >= DEAD_CLASS_EPOCHS]
        if dead:
            raise TrainingError(self._dead_classes_message(epoch, dead))
        dying = [name for name, n in zip(self.classes, self.dead_epochs) if n]
        if dying and world.is_main:
            print(f"warning: epoch {epoch + 1}: the class map of {', '.join(map(repr, dying))} was zero on every "
                  f"training image; training stops if that lasts {DEAD_CLASS_EPOCHS} epochs", file=sys.stderr)
        return loss_sum / count, 100.0 * (1 - correct / count), count / seconds

    def _dead_classes_message(self, epoch: int, dead: list[str]) -> str:
        kept = (f"the last checkpoint {self.checkpoint_path} (epoch {self.start_epoch_done}) is kept."
                if self.start_epoch_done else "no checkpoint was written.")
        one = len(dead) == 1
        return (
            f"epoch {epoch + 1}: the class {'map of' if one else 'maps of'} {', '.join(map(repr, dead))} "
            f"{'was' if one else 'were'} zero on every training image for {DEAD_CLASS_EPOCHS} epochs "
            f"({len(dead)} of {self.num_classes} classes), so the network cannot predict "
            f"{'that class' if one else 'those classes'}. The ReLU "
            "on the last layer has switched them off, and a map that is zero everywhere gets no gradient to come "
            f"back. Training was stopped; {kept} Remedies: a lower learning rate (--set lr={self.recipe.lr / 2:g}) "
            "or BatchNorm (--set model_args.batch_norm=true, not in the paper)."
        )

    @property
    def start_epoch_done(self) -> int:
        return self.history[-1]["epoch"] if self.history else 0

    def fit(self) -> dict[str, Any] | None:
        """Train to the end of the recipe (or the paper's schedule), evaluate the test splits; the summary
        is returned by the main process only."""
        recipe = self.recipe
        if self.world.is_main:
            self.out_dir.mkdir(parents=True, exist_ok=True)
            remove_partial_writes(self.out_dir)  # left by a run killed mid-write
            atomic_write_text(self.out_dir / "recipe.toml", recipe_to_toml(recipe))
            if self.history:  # a kill between last.pt and the records leaves them one epoch behind it
                self._write_records()
        started = time.perf_counter()
        for epoch in range(self.start_epoch, recipe.epochs):
            if self.schedule.finished:
                break
            lr = self._set_lr(epoch, 0)
            tic = time.perf_counter()
            train_loss, train_error, images_per_s = self._train_epoch(epoch)
            self.elapsed += time.perf_counter() - tic
            if epoch == 0 and abs(train_loss - math.log(self.num_classes)) < 1e-3 and self.world.is_main:
                print(f"warning: after epoch 1 the training loss is still ln({self.num_classes}) = {train_loss:.4f}: "
                      "the class maps are alive but tiny (the signal shrinks through the layers). Training goes on; "
                      "if it stays there, raise the init std or the learning rate.", file=sys.stderr)
            for name, p in self.model.named_parameters():
                if not torch.isfinite(p).all():
                    raise TrainingError(f"parameter {name} holds NaN or Inf after epoch {epoch + 1}: training "
                                        f"diverged. The last good checkpoint {self.checkpoint_path} is kept.")
            row: dict[str, Any] = {"epoch": epoch + 1, "lr": lr, "train_loss": train_loss, "train_error": train_error}
            if self.eval_data is not None:
                result = self._evaluate(*self.eval_data)
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
                        precision=self.recipe.precision, channels_last=self.recipe.channels_last, world=self.world)

    def _save(self, epoch: int) -> None:
        if self.world.is_main:
            save_checkpoint(self.checkpoint_path, self.checkpoint_state(epoch))
            self._write_records()
        barrier(self.world)

    def _write_records(self) -> None:
        write_metrics(self.out_dir / "metrics.jsonl", self.history)
        plot_curves(self.out_dir / "curves.png", self.history, f"{self.recipe.name}: {self.recipe.model}",
                    self.recipe.paper_error)

    def _finish(self) -> dict[str, Any] | None:
        tests: dict[str, Any] = {}
        for split in self.recipe.test_splits:
            try:
                data = load_dataset(self.recipe.dataset, split, root=self.data_root)
            except DatasetError as err:
                tests[split] = {"skipped": str(err)}
                continue
            result = self._evaluate(*self._prepare(data))
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
            "train_images": len(self.train_set.labels),
            "train_split": self.train_set.description,
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
