"""The 7 plausible bugs of issue #22 that once passed every test: apply each to a scratch copy of src/ and check
that the tests named for it now fail. Not part of the timed CI (about 2 minutes); run after touching these tests:

    nice -n 10 python benchmarks/mutation/issue22.py

Each bug is a (file, exact text, replacement) edit; re-point the files after the restructuring.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

BUGS: list[tuple[str, str, str, str, list[str]]] = [
    # (what, file under src/, text, replacement, tests)
    ("the plateau rule keeps its best error after a rate drop", "nin/train/schedule.py",
     "self.best_train_error = math.inf  # the new rate", "pass  # the new rate",
     ["tests/test_training_rules.py::test_paper_rule_drops_twice_then_stops_through_the_trainer"]),
    ("the plateau counter is not restored on resume", "nin/train/schedule.py",
     'self.epochs_without_improvement = int(state["epochs_without_improvement"])',
     "self.epochs_without_improvement = 0",
     ["tests/test_training_rules.py::test_resume_between_drops_follows_the_same_rule"]),
    ("the trainer's lr_mult are all 1", "nin/train/optimizer.py",
     '* (held if group["bias"] else factor) * group["lr_mult"]', '* (held if group["bias"] else factor) * 1.0',
     ["tests/test_training_rules.py::test_cifar10_recipe_rates_per_layer_and_held_bias_rates_at_the_drops",
      "tests/test_training_rules.py::test_paper_rule_drops_twice_then_stops_through_the_trainer"]),
    ("the trainer ignores hold_bias_rates", "nin/train/optimizer.py",
     "if recipe.hold_bias_rates else factor", "if False else factor",
     ["tests/test_training_rules.py::test_cifar10_recipe_rates_per_layer_and_held_bias_rates_at_the_drops",
      "tests/test_training_rules.py::test_paper_rule_drops_twice_then_stops_through_the_trainer"]),
    ("the dead-class detector counts dead epochs that are not consecutive", "nin/train/health.py",
     "[n + 1 if steps == 0 else 0 for", "[n + 1 if steps == 0 else n for",
     ["tests/test_training_rules.py::test_only_consecutive_dead_epochs_stop_training"]),
    ("the first-epoch dead-map counter is never reset", "nin/train/health.py",
     "self.dead_steps + 1 if bool(logits.abs().max() == 0) else 0",
     "self.dead_steps + 1 if bool(logits.abs().max() == 0) else self.dead_steps",
     ["tests/test_training_rules.py::test_first_epoch_dead_maps_need_twenty_steps_in_a_row"]),
    ("evaluation averages the loss per batch", "nin/inference/evaluate.py",
     'totals[0] += F.cross_entropy(logits, y, reduction="sum").double()',
     'totals[0] += F.cross_entropy(logits, y, reduction="mean").double() * len(share) / -(-len(share) // batch_size)',
     ["tests/test_evaluation_numerics.py"]),
    ("evaluation leaves dropout on", "nin/inference/evaluate.py", "    model.eval()\n", "    pass\n",
     ["tests/test_evaluation_numerics.py"]),
]


def main() -> int:
    env = {**os.environ, "NIN_DATA": os.environ.get("NIN_DATA", str(REPO.parent / "shared" / "data"))}
    failures = 0
    for what, file, text, replacement, tests in BUGS:
        with tempfile.TemporaryDirectory(prefix="nin-issue22-") as scratch:
            src = Path(scratch) / "src"
            shutil.copytree(REPO / "src", src, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
            path = src / file
            code = path.read_text()
            assert code.count(text) == 1, f"{what}: the text to change is not in {file} once; re-point BUGS"
            path.write_text(code.replace(text, replacement))
            run = subprocess.run([sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", *tests],
                                 cwd=REPO, env={**env, "PYTHONPATH": str(src)}, capture_output=True, text=True)
        caught = run.returncode == 1
        failures += not caught
        print(f"{'caught' if caught else 'MISSED'}: {what} ({run.stdout.strip().splitlines()[-1]})", flush=True)
    print(f"{len(BUGS) - failures} of {len(BUGS)} bugs caught")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
