"""SIGKILL `nin train` three times (in a step, while last.pt is written, during evaluation), resume each
time, and get the uninterrupted run's weights and records: a short version of benchmarks/crash_test.py."""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

from nin.train import Trainer, apply_overrides, load_recipe
from nin.train.metrics import read_metrics

REPO = Path(__file__).resolve().parents[1]


def _crash_test_module():
    spec = importlib.util.spec_from_file_location("benchmark_crash_test", REPO / "benchmarks" / "crash_test.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_three_kills_and_resumes_equal_an_uninterrupted_run(shared_data: Path, tmp_path: Path) -> None:
    crash = _crash_test_module()
    config = crash.Config(kills=3, final_kills=0, epochs=2, subset=16, batch_size=8, eval_images=32,
                          strategies=("step", "checkpoint", "evaluation"), keep_malloc=True)
    report = crash.crash_test(config, shared_data, tmp_path)
    assert report["kills"] == 3 and all(k["exit_status"] == -9 for k in report["kill_log"])
    assert report["checkpoints_unreadable"] == 0 and report["problems"] == []
    assert report["comparison"]["checkpoint_differences"] == [] and report["comparison"]["metrics_equal"]
    assert report["comparison"]["metrics_epochs"] == [1, 2] and report["comparison"]["partial_writes_left"] == []
    assert report["comparison"]["summary_differences"] == [] and report["passed"]
    assert {k["phase"] for k in report["kill_log"]} <= {"train step", "checkpoint write", "records write",
                                                        "evaluation", "startup"}


def test_resume_repairs_what_a_kill_between_two_writes_leaves(shared_data: Path, tmp_path: Path) -> None:
    """A kill after last.pt was replaced but before metrics.jsonl was (the records one epoch behind), or in
    the middle of a write (a temporary file left for good): the resume puts both right, even with no epoch
    left to train."""
    recipe = apply_overrides(load_recipe("mnist"), ["epochs=1", "subset=8", "batch_size=8", "eval_split=none",
                                                    "test_splits=[]", 'device="cpu"'])
    Trainer(recipe, tmp_path, data_root=shared_data, progress=False).fit()
    (tmp_path / "metrics.jsonl").write_text("")
    (tmp_path / ".last.pt.k1ll3d_x.tmp").write_bytes(b"half a checkpoint")
    Trainer(recipe, tmp_path, data_root=shared_data, resume=True, progress=False).fit()
    assert [row["epoch"] for row in read_metrics(tmp_path / "metrics.jsonl")] == [1]
    assert not list(tmp_path.glob(".*.tmp"))
