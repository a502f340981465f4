"""Crash test: SIGKILL `nin train` at chosen and random moments, resume each time, compare with one clean run.

A small real MNIST run (the first ``--subset`` training images, the first ``--eval-images`` official
test images evaluated after every epoch and at the end) is trained once without interruption, then
again in the same way but killed ``--kills`` times with SIGKILL and restarted with ``--resume``. The
kills are spread over the epochs and aimed by watching the run from outside only, never by a hook in
the code: its stderr log (the tqdm bar and the per-epoch line) and its run folder (the temporary file
``atomic_write`` creates while ``last.pt`` is written). Each aim has a random delay, so the moment in
the step, the evaluation or the write differs from kill to kill. Where a kill landed is read back from
the log and the files after it (a temporary checkpoint left behind means it landed mid-write).

After every kill ``last.pt`` must load and ``metrics.jsonl`` must list epochs 1..n without gaps or
repeats; at the end the checkpoint (weights, optimizer, schedule, RNG states, history), the metrics and
the test results must equal the clean run's, timing fields (``images_per_s``, ``elapsed_s``) excepted.

    python benchmarks/crash_test.py --data-dir ../shared/data --out results/reliability/crash_test.json
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import random
import re
import shlex
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch

from nin.checkpoint import CheckpointError, load_checkpoint
from nin.data import load_dataset
from nin.train.metrics import read_metrics
from nin.utils.atomic import atomic_write_text
from nin.utils.hardware import describe_hardware

TIMING = ("images_per_s", "elapsed_s")
BAR = re.compile(r"epoch (\d+)/\d+:\s+\d+%\|[^|\r]*\| (\d+)/(\d+)")  # tqdm: "epoch 3/8:  50%|███  | 2/4 ["
CLEARED = re.compile(r"\r {10,}\r")  # tqdm(leave=False).close() blanks the bar: the epoch's steps are done
DONE = re.compile(r"(?:^|\r)epoch (\d+): lr ", re.M)  # printed after the epoch's checkpoint and records are written
Event = tuple[str, int] | tuple[str, int, int]  # (what, epoch) or ("steps", epoch, steps done)
RESUMED = re.compile(r"resumed from .* after epoch (\d+)|no checkpoint in .*; starting from scratch")


@dataclass
class Config:
    kills: int = 24
    final_kills: int = 2  # of them, aimed at the end (test evaluation, summary) once every epoch is done
    epochs: int = 8
    subset: int = 64
    batch_size: int = 16
    eval_images: int = 128
    seed: int = 0
    strategies: tuple[str, ...] = ("step", "checkpoint", "evaluation", "random", "checkpoint", "startup")
    keep_malloc: bool = False  # NIN_KEEP_MALLOC=1: skip the CLI's allocator re-exec (starts faster, same numbers)


def make_data_root(shared: Path, folder: Path, eval_images: int) -> Path:
    """A data root whose MNIST training files are the official ones (linked) and whose test file holds
    the first ``eval_images`` official test images, so evaluating after every epoch stays cheap."""
    mnist = folder / "mnist"
    mnist.mkdir(parents=True, exist_ok=True)
    for name in ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"):
        link = mnist / name
        if not link.exists():
            link.symlink_to((shared / "mnist" / name).resolve())
    test = load_dataset("mnist", "test", root=shared)
    for name, array in (("t10k-images-idx3-ubyte", test.images[:eval_images, 0].numpy()),
                        ("t10k-labels-idx1-ubyte", test.labels[:eval_images].numpy().astype(np.uint8))):
        header = (0x0800 | array.ndim).to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in array.shape)
        (mnist / name).write_bytes(header + array.tobytes())
    return folder


def train_command(config: Config, data_root: Path, out: Path, resume: bool) -> list[str]:
    return [sys.executable, "-m", "nin.cli", "train", "--recipe", "mnist", "--data-dir", str(data_root),
            "--out", str(out), "--epochs", str(config.epochs), "--subset", str(config.subset), "--seed",
            str(config.seed), "--device", "cpu", "--set", f"batch_size={config.batch_size}",
            "--set", 'eval_split="test"', "--set", 'test_splits=["test"]', *(["--resume"] if resume else [])]


def partial_writes(out: Path) -> list[str]:
    """Temporary files of atomic_write in the run folder (left behind only by a kill mid-write)."""
    return sorted(p.name for p in out.glob(".*.tmp")) if out.is_dir() else []


class Run:
    """One `nin train` process, followed from outside through its stderr log and its run folder.

    ``events`` maps ("bar", k) (epoch k's steps began), ("trained", k) (its steps ended), ("saving", k)
    (its checkpoint is being written), ("done", k) (its line was printed), ("ready", 0) (the trainer
    was built) to the seconds after the start when they were first seen.
    """

    def __init__(self, argv: list[str], out: Path, log: Path, env: dict[str, str]) -> None:
        self.out = out
        with open(log, "w") as stderr:
            self.proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=stderr, env=env)
        self.start = time.monotonic()
        self.text = ""
        self.events: dict[Event, float] = {}
        self.last_bar: tuple[int, int, int] | None = None  # (epoch, steps done, steps) as last shown
        self._reader = open(log, errors="replace", newline="")

    def __enter__(self) -> Run:
        return self

    def __exit__(self, *exc: object) -> None:
        """Never leave the process behind (it would go on writing into the run folder)."""
        if self.proc.poll() is None:
            self.proc.kill()
        self.close()

    def elapsed(self) -> float:
        return time.monotonic() - self.start

    def _seen(self, event: Event) -> None:
        self.events.setdefault(event, self.elapsed())

    def poll(self) -> None:
        new = self._reader.read()
        if new:
            self.text += new
            tokens = sorted([(m.start(), m) for m in BAR.finditer(self.text)]
                            + [(m.start(), m) for m in CLEARED.finditer(self.text)], key=lambda t: t[0])
            for _, m in tokens:
                if m.re is BAR:
                    self.last_bar = (int(m[1]), int(m[2]), int(m[3]))
                    self._seen(("bar", self.last_bar[0]))
                    self._seen(("steps", self.last_bar[0], self.last_bar[1]))
                    if self.last_bar[1] == self.last_bar[2]:
                        self._seen(("trained", self.last_bar[0]))
                elif self.last_bar is not None:
                    self._seen(("trained", self.last_bar[0]))
            for m in DONE.finditer(self.text):
                self._seen(("done", int(m[1])))
            if RESUMED.search(self.text):
                self._seen(("ready", 0))
        trained = [e[1] for e in self.events if e[0] == "trained"]
        if trained and any(n.startswith(".last.pt.") for n in partial_writes(self.out)):
            self._seen(("saving", max(trained)))

    def wait_for(self, events: list[Event], step_s: float) -> bool:
        """Poll until one of ``events`` was seen (True) or the process has exited (False)."""
        while True:
            exited = self.proc.poll() is not None
            self.poll()
            if any(e in self.events for e in events):
                return True
            if exited:
                return False
            time.sleep(step_s)

    def sleep_unless_exited(self, seconds: float) -> bool:
        """Sleep ``seconds`` or until the process exits; True if it is still running."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                return False
            time.sleep(min(0.005, max(0.0, deadline - time.monotonic())))
        return self.proc.poll() is None

    def close(self) -> int:
        code = self.proc.wait()
        if not self._reader.closed:
            self.poll()
            self._reader.close()
        return code


def checkpoint_epoch(out: Path) -> tuple[int, str | None]:
    """The epoch of ``out/last.pt`` (0 if there is none) and the error if it cannot be loaded."""
    if not (out / "last.pt").exists():
        return 0, None
    try:
        return int(load_checkpoint(out / "last.pt")["epoch"]), None
    except CheckpointError as err:
        return -1, str(err)


def metrics_epochs(out: Path) -> list[int]:
    path = out / "metrics.jsonl"
    return [row["epoch"] for row in read_metrics(path)] if path.exists() else []


def landed(run: Run, leftovers: list[str], epoch_after: int, epochs: int) -> dict[str, Any]:
    """Where a kill landed, as far as the log and the files tell."""
    ready = ("ready", 0) in run.events
    bars = sorted(e[1] for e in run.events if e[0] == "bar")
    done = max((e[1] for e in run.events if e[0] == "done"), default=0)
    if any(n.startswith(".last.pt.") for n in leftovers):
        return {"phase": "checkpoint write", "epoch": epoch_after + 1}
    if leftovers:
        return {"phase": "records write", "epoch": epoch_after, "files": leftovers}
    if done == epochs or (not bars and ready and epoch_after == epochs):
        return {"phase": "final evaluation"}
    if not bars:
        return {"phase": "startup", "detail": "trainer built" if ready else "imports, data, model"}
    k = bars[-1]
    if ("trained", k) not in run.events:
        assert run.last_bar is not None
        return {"phase": "train step", "epoch": k, "step": run.last_bar[1] + 1}
    if done >= k:
        return {"phase": "train step", "epoch": k + 1, "step": 1}
    if epoch_after >= k:
        return {"phase": "records write", "epoch": k}
    return {"phase": "evaluation", "epoch": k}


def plan(config: Config) -> list[tuple[str, int]]:
    """(strategy, target epoch) per kill: the strategies in turn, the targets spread over the epochs."""
    spread = config.kills - config.final_kills
    return ([(config.strategies[j % len(config.strategies)], 1 + j * config.epochs // spread) for j in range(spread)]
            + [("final", config.epochs)] * config.final_kills)


def aim(run: Run, strategy: str, target: int, start_epoch: int, ref: dict[Event, float], steps: int,
        rng: random.Random) -> float | None:
    """Wait for the moment ``strategy`` aims at in epoch ``target``, then a random part of that phase as the
    clean run timed it; the delay chosen, or None if the process exited first."""
    def span(a: Event, b: Event) -> float:
        end = ref.get(b, ref[("done", b[1])])  # ("saving", k) is missing if the clean run's write was too quick
        return max(end - ref[a], 0.01)

    events: list[Event] = []  # wait until one of these was seen (none: from the start)
    if strategy == "startup":
        window = ref[("bar", 1)]
    elif strategy == "random":  # anywhere from the start to the end of epoch `target`
        window = ref[("bar", 1)] + sum(span(("bar", k), ("done", k)) for k in range(start_epoch + 1, target + 1))
    elif strategy == "step":  # a random step of the epoch, at a random point in it
        events = [("steps", target, rng.randrange(steps)), ("trained", target)]  # (had tqdm skipped the step)
        window = span(("bar", target), ("trained", target)) / steps
    elif strategy == "evaluation":
        events, window = [("trained", target)], span(("trained", target), ("saving", target))
    elif strategy == "checkpoint":  # as soon as the temporary checkpoint appears (or the line, had it been missed)
        events, window = [("saving", target), ("done", target)], 0.0
    else:  # final: after the last epoch's line, or once built when resuming with no epoch left
        events = [("done", target)] + ([("ready", 0)] if start_epoch == target else [])
        window = 0.5 * (ref[("exit", 0)] - ref[("done", target)])
    if events and not run.wait_for(events, step_s=0.001 if strategy == "checkpoint" else 0.003):
        return None
    delay = rng.uniform(0.0, window)
    return delay if run.sleep_unless_exited(delay) else None


def same(a: Any, b: Any, where: str = "") -> list[str]:
    """Where two checkpoint / summary structures differ (tensors bit for bit)."""
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        ok = isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor) and a.dtype == b.dtype \
            and a.shape == b.shape and torch.equal(a, b)
        return [] if ok else [where]
    if isinstance(a, dict) and isinstance(b, dict):
        if a.keys() != b.keys():
            return [f"{where} keys"]
        return [d for k in a for d in same(a[k], b[k], f"{where}/{k}")]
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        if len(a) != len(b):
            return [f"{where} length"]
        return [d for i, (x, y) in enumerate(zip(a, b)) for d in same(x, y, f"{where}[{i}]")]
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return []  # the accuracy of a class absent from the test images
    return [] if a == b else [where]


def timeless(state: dict[str, Any]) -> dict[str, Any]:
    """A checkpoint or summary without its wall-clock fields."""
    drop = ("elapsed", "wall_time_s", "hardware", "commit", "command", "date")
    out = {k: v for k, v in state.items() if k not in drop}
    for key in ("history",):
        if key in out:
            out[key] = [{k: v for k, v in row.items() if k not in TIMING} for row in out[key]]
    if out.get("final"):
        out["final"] = {k: v for k, v in out["final"].items() if k not in TIMING}
    return out


def compare(ref: Path, crashed: Path) -> dict[str, Any]:
    """The crashed run's final files against the clean run's."""
    checkpoint = same(timeless(load_checkpoint(ref / "last.pt")), timeless(load_checkpoint(crashed / "last.pt")))
    rows = [timeless({"history": read_metrics(p / "metrics.jsonl")})["history"] for p in (ref, crashed)]
    summaries = [timeless(json.loads((p / "summary.json").read_text())) for p in (ref, crashed)]
    epochs = [row["epoch"] for row in rows[1]]
    return {
        "checkpoint_differences": checkpoint,
        "metrics_equal": rows[0] == rows[1],
        "metrics_epochs": epochs,
        "metrics_epochs_contiguous": epochs == list(range(1, len(epochs) + 1)),
        "summary_differences": same(summaries[0], summaries[1]),
        "partial_writes_left": partial_writes(crashed),
    }


def crash_test(config: Config, shared: Path, work: Path, progress: bool = False) -> dict[str, Any]:
    """Run the clean and the killed runs under ``work``; the report (see the module docstring)."""
    began = time.monotonic()
    rng = random.Random(config.seed)
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "NIN_PROGRESS": "bar"}  # the bar, though stderr is a pipe
    if config.keep_malloc:
        env["NIN_KEEP_MALLOC"] = "1"
    data_root = make_data_root(shared, work / "data", config.eval_images)
    ref_out, out = work / "clean", work / "killed"

    with Run(train_command(config, data_root, ref_out, resume=False), ref_out, work / "clean.log", env) as clean:
        clean.wait_for([], step_s=0.001)  # to its end, timing its phases
        if clean.close() != 0:
            raise RuntimeError(f"the clean run failed:\n{clean.text[-3000:]}")
        assert clean.last_bar is not None
        ref, steps = {**clean.events, ("exit", 0): clean.elapsed()}, clean.last_bar[2]

    kills: list[dict[str, Any]] = []
    problems: list[str] = []
    schedule = plan(config)
    attempt = 0
    while len(kills) < len(schedule) and attempt < 2 * len(schedule):
        strategy, target = schedule[len(kills)]
        start_epoch, _ = checkpoint_epoch(out)
        earlier = set(partial_writes(out))  # left by the previous kill, until this run's start removes them
        if start_epoch >= config.epochs:
            strategy, target = "final", config.epochs
        target = max(target, start_epoch + 1) if strategy != "final" else target
        with Run(train_command(config, data_root, out, resume=True), out, work / f"killed-{attempt}.log", env) as run:
            attempt += 1
            delay = aim(run, strategy, target, start_epoch, ref, steps, rng)
            if delay is None:  # it finished (or failed) before the moment came: try again
                code = run.close()
                if code != 0:
                    raise RuntimeError(f"attempt {attempt} failed with exit status {code}:\n{run.text[-3000:]}")
                continue
            at = run.elapsed()
            os.kill(run.proc.pid, signal.SIGKILL)
            code = run.close()
        leftovers = sorted(set(partial_writes(out)) - earlier)
        epoch_after, error = checkpoint_epoch(out)
        epochs_listed = metrics_epochs(out)
        record = {"strategy": strategy, "target_epoch": target, "resumed_from_epoch": start_epoch,
                  "delay_s": round(delay, 3), "killed_after_s": round(at, 3), "exit_status": code,
                  **landed(run, leftovers, epoch_after, config.epochs), "checkpoint_epoch_after": epoch_after,
                  "metrics_epochs_after": len(epochs_listed)}
        if error is not None:
            problems.append(f"kill {len(kills) + 1}: unreadable checkpoint: {error}")
        if epochs_listed != list(range(1, len(epochs_listed) + 1)) or \
                len(epochs_listed) not in (epoch_after - 1, epoch_after):
            problems.append(f"kill {len(kills) + 1}: metrics epochs {epochs_listed}, checkpoint epoch {epoch_after}")
        kills.append(record)
        if progress:
            print(f"kill {len(kills):2d}: {strategy:10s} -> {record['phase']} {record.get('epoch', '')} "
                  f"(checkpoint epoch {epoch_after}, {record['killed_after_s']:.1f} s)", file=sys.stderr, flush=True)

    with Run(train_command(config, data_root, out, resume=True), out, work / "final.log", env) as final:
        if final.close() != 0:
            raise RuntimeError(f"the final resume failed:\n{final.text[-3000:]}")
    outcome = compare(ref_out, out)
    identical = (not outcome["checkpoint_differences"] and outcome["metrics_equal"]
                 and outcome["metrics_epochs_contiguous"] and not outcome["summary_differences"])
    return {
        "config": dataclasses.asdict(config),
        "kills": len(kills),
        "runs_that_ended_before_their_kill": attempt - len(kills),
        "phases": dict(Counter(k["phase"] for k in kills).most_common()),
        "checkpoints_unreadable": sum("unreadable" in p for p in problems),
        "problems": problems,
        "identical_to_clean_run": identical,
        "passed": identical and not problems and not outcome["partial_writes_left"],
        "comparison": outcome,
        "partial_writes_seen_after_kills": sum(bool(k.get("files")) or k["phase"] == "checkpoint write"
                                               for k in kills),
        "clean_run_s": round(ref[("exit", 0)], 1),
        "wall_time_s": round(time.monotonic() - began, 1),
        "kill_log": kills,
    }


def main(argv: list[str] | None = None) -> int:
    defaults = Config()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default=os.environ.get("NIN_DATA", "../shared/data"),
                        help="the shared data folder holding mnist/ (default: $NIN_DATA, else ../shared/data)")
    parser.add_argument("--out", default="results/reliability/crash_test.json")
    parser.add_argument("--work", help="folder for the runs (default: a temporary folder, removed afterwards)")
    for field in dataclasses.fields(Config):
        value = getattr(defaults, field.name)
        flag = "--" + field.name.replace("_", "-")
        if isinstance(value, bool):
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=value)
        elif isinstance(value, tuple):
            parser.add_argument(flag, nargs="+", default=list(value))
        else:
            parser.add_argument(flag, type=type(value), default=value)
    args = parser.parse_args(argv)
    config = Config(**{f.name: getattr(args, f.name) for f in dataclasses.fields(Config)})
    config.strategies = tuple(config.strategies)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # unwind, so the running `nin train` is stopped too
    with tempfile.TemporaryDirectory(prefix="nin-crash-") as tmp:
        report = crash_test(config, Path(args.data_dir), Path(args.work or tmp), progress=True)
    report = {"command": "python " + " ".join(shlex.quote(a) for a in sys.argv),
              "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
              "hardware": describe_hardware(torch.device("cpu")), **report}
    atomic_write_text(args.out, json.dumps(report, indent=2) + "\n")
    print(f"{report['kills']} kills {report['phases']}; unreadable checkpoints {report['checkpoints_unreadable']}; "
          f"identical to the clean run: {report['identical_to_clean_run']}; passed: {report['passed']}; "
          f"wrote {args.out}")
    return 0 if report["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
