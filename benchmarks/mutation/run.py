"""Mutation testing of the paper-critical code with mutmut: does some test fail for each plausible bug?

Not part of the timed CI: the 1,241 mutants take over 2 hours on 2 shared CPU cores (5-12 a minute here; the
Trainer tests dominate). Run it after changing these modules or their tests, in parts with ``--only`` if need be,
and record the score in results/mutation/README.md::

    nice -n 10 python benchmarks/mutation/run.py              # all targets below
    nice -n 10 python benchmarks/mutation/run.py --only nin.train.schedule.*   # one module (a mutant-name glob)
    nice -n 10 python benchmarks/mutation/run.py --keep --only-file names.txt  # re-run these, keep the rest
    python benchmarks/mutation/run.py --record-only                        # rewrite the record from mutmut's

It copies ``src/`` and ``tests/`` into a scratch folder (default /tmp/nin-mutation; mutmut edits its copy, never
the work tree), writes mutmut's ``setup.cfg`` there from TARGETS and TESTS, runs ``mutmut run`` on the mutants of
the functions named in TARGETS, and writes ``results/mutation/results.json`` (every mutant's status) and
``results/mutation/survivors.diff`` (the diff of each surviving mutant).

Re-point TARGETS after a module moves (nin/train/evaluate.py -> nin/inference/evaluate.py, ...): the paths are
relative to ``src/``; the functions are qualified names (``Class.method``), ``*`` for every function of the module.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

# --------------------------------------------------------------------------------- what is mutated, and by what
# The functions that decide the reported numbers: preprocessing, schedules, parameter groups, the training step,
# the rates and health checks of the training loop, evaluation, checkpoints. Module path -> functions.
TARGETS: dict[str, list[str]] = {
    "nin/data/preprocess.py": ["ToUnitRange.forward", "MeanImage.fit", "MeanImage.forward", "GCN.forward",
                               "ZCA.fit", "ZCA.forward", "gaussian_kernel", "LCN.forward", "Standardize.fit",
                               "Standardize.forward", "Pipeline.fit", "Pipeline.forward", "Pipeline._batched"],
    "nin/train/schedule.py": ["*"],
    "nin/models/param_groups.py": ["*"],
    "nin/models/base.py": ["ClassMapNetwork.__init__", "ClassMapNetwork.last_feature_layer",
                           "ClassMapNetwork.lr_multipliers"],
    "nin/train/engine.py": ["train_step", "Trainer._train_epoch", "Trainer._restore", "Trainer.checkpoint_state"],
    "nin/train/optimizer.py": ["*"],
    "nin/train/health.py": ["HealthMonitor.after_step", "HealthMonitor.end_epoch", "HealthMonitor.end_epoch_loss",
                            "HealthMonitor.check_parameters", "HealthMonitor.first_epoch_loss_warning"],
    "nin/inference/evaluate.py": ["evaluate"],
    "nin/checkpoint.py": ["save_checkpoint", "load_checkpoint", "content_digest", "_feed"],
}
# The tests run against the mutants (mutmut runs, for each mutant, those of them that call the mutated function):
# the focused, fast files. Left out: tests/test_train.py, tests/test_crash.py and the end-to-end tests of the other
# commands (minutes per mutant on 2 shared cores, and some of their subprocesses import the installed package
# rather than the mutated copy). A mutant only they would kill counts here as surviving.
TESTS: list[str] = [
    "tests/test_preprocess.py",
    "tests/test_schedule.py",
    "tests/test_training_rules.py",
    "tests/test_evaluation_numerics.py",
    "tests/test_gpu_paths_on_cpu.py",
    "tests/test_error_paths.py",
    "tests/test_security.py",
]
DESELECT: list[str] = []  # test ids to leave out of the files above
# -------------------------------------------------------------------------------------------------------------

REPO = Path(__file__).resolve().parents[2]


def mutant_globs(targets: dict[str, list[str]]) -> list[str]:
    """mutmut's mutant names: ``pkg.mod.x_func__mutmut_N`` and ``pkg.mod.xǁClassǁmethod__mutmut_N``."""
    globs = []
    for path, functions in targets.items():
        module = path[:-len(".py")].replace("/", ".")
        for function in functions:
            if function == "*":
                globs.append(f"{module}.*")
            elif "." in function:
                cls, method = function.split(".")
                globs.append(f"{module}.xǁ{cls}ǁ{method}__mutmut_*")
            else:
                globs.append(f"{module}.x_{function}__mutmut_*")
    return globs


def matches(name: str, globs: list[str]) -> bool:
    """Whether a mutant's name matches one of the globs (``*`` the only wildcard)."""
    return any(re.fullmatch(re.escape(g).replace(r"\*", ".*"), name) for g in globs)


def undecorate_no_grad(path: Path) -> None:
    """mutmut leaves decorated functions alone; ``@torch.no_grad()`` on a module function is moved below it
    (``f = torch.no_grad()(f)``), which is what the decorator does, so that ``evaluate`` is mutated too."""
    text = path.read_text()
    names = re.findall(r"^@torch\.no_grad\(\)\ndef (\w+)\(", text, flags=re.M)
    if names:
        text = re.sub(r"^@torch\.no_grad\(\)\n(?=def )", "", text, flags=re.M)
        text += "".join(f"\n{name} = torch.no_grad()({name})\n" for name in names)
        path.write_text(text)


def refresh_tests(work: Path) -> None:
    """The current tests, and no cached map of which test covers which function (mutmut rebuilds it)."""
    for folder in (work / "tests", work / "mutants" / "tests"):
        shutil.rmtree(folder, ignore_errors=True)
    shutil.copytree(REPO / "tests", work / "tests", ignore=shutil.ignore_patterns("__pycache__"))
    (work / "mutants" / "mutmut-stats.json").unlink(missing_ok=True)


def prepare(work: Path) -> None:
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    shutil.copytree(REPO / "src", work / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    refresh_tests(work)
    # tests that read the repository's records and benchmarks find them here
    for folder in ("results/mnist-fast", "benchmarks"):
        shutil.copytree(REPO / folder, work / folder, ignore=shutil.ignore_patterns("__pycache__"))
    for path in TARGETS:
        undecorate_no_grad(work / "src" / path)
    lines = "\n    ".join
    (work / "setup.cfg").write_text(
        "[mutmut]\n"
        "source_paths = src/\n"
        f"only_mutate =\n    {lines('src/' + p for p in TARGETS)}\n"
        f"pytest_add_cli_args_test_selection =\n    {lines(TESTS)}\n"
        "also_copy =\n    benchmarks\n    results\n"
        f"pytest_add_cli_args =\n    -p\n    no:cacheprovider\n" + "".join(f"    --deselect={t}\n" for t in DESELECT) +
        "process_isolation = forkserver\n"
        "use_git_change_detection = false\n"
        "timeout_multiplier = 5.0\n")
    (work / "pytest.ini").write_text("[pytest]\ntestpaths = tests\nmarkers =\n    slow: slow\n")


def mutant_diffs(work: Path) -> dict[str, list[str]]:
    """The changed lines of every mutant, read from mutmut's generated sources (``mutmut show`` one by one is slow)."""
    import ast
    import difflib

    diffs = {}
    for path in (work / "mutants" / "src").rglob("*.py"):
        text = path.read_text()
        if "__mutmut_orig" not in text:
            continue
        lines = text.splitlines()
        bodies = {node.name: lines[node.lineno - 1:node.end_lineno] for node in ast.walk(ast.parse(text))
                  if isinstance(node, ast.FunctionDef) and "__mutmut_" in node.name}
        module = path.relative_to(work / "mutants" / "src").with_suffix("").as_posix().replace("/", ".")
        for name, body in bodies.items():
            base, _, number = name.rpartition("__mutmut_")
            if not number.isdigit() or base + "__mutmut_orig" not in bodies:
                continue
            orig = [line.replace(base + "__mutmut_orig", "F") for line in bodies[base + "__mutmut_orig"]]
            body = [line.replace(name, "F") for line in body]
            diffs[f"{module}.{name}"] = [line for line in difflib.unified_diff(orig, body, lineterm="", n=0)
                                         if line[:1] in "+-" and line[:3] not in ("+++", "---")]
    return diffs


def results(work: Path) -> dict[str, str]:
    """Status of every mutant (killed, survived, no tests, timeout, ...), by mutant name."""
    out = subprocess.run([sys.executable, "-m", "mutmut", "results", "--all", "true"], cwd=work, text=True,
                         capture_output=True, check=True).stdout
    statuses = {}
    for line in out.splitlines():
        name, _, status = line.strip().rpartition(": ")
        if name:
            statuses[name] = status
    return statuses


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=Path("/tmp/nin-mutation"), help="scratch folder (replaced)")
    parser.add_argument("--only", nargs="+", help="mutant-name globs or names to run instead of all TARGETS")
    parser.add_argument("--only-file", type=Path, help="a file of mutant names (one a line) to run instead")
    parser.add_argument("--max-children", type=int, default=2, help="parallel mutants (default 2)")
    parser.add_argument("--keep", action="store_true", help="reuse the scratch folder and mutmut's cached results")
    parser.add_argument("--out", type=Path, default=REPO / "results" / "mutation")
    parser.add_argument("--record-only", action="store_true", help="only write the record of the results mutmut has")
    args = parser.parse_args()

    globs = args.only or (args.only_file.read_text().split() if args.only_file else mutant_globs(TARGETS))
    started = datetime.now(timezone.utc)
    if not args.record_only:
        if args.keep and args.work.exists():
            refresh_tests(args.work)  # mutmut keeps its mutants and the results it has; the named ones are re-run
        else:
            prepare(args.work)
        env = {**os.environ, "NIN_DATA": os.environ.get("NIN_DATA", str(REPO.parent / "shared" / "data"))}
        env.pop("PYTHONPATH", None)  # mutmut puts its mutated copy of src/ first on sys.path
        subprocess.run([sys.executable, "-m", "mutmut", "run", "--max-children", str(args.max_children), *globs],
                       cwd=args.work, env=env, check=False)
    statuses = results(args.work)
    # the record covers every mutant of TARGETS that has a result, from this run or an earlier one kept with --keep;
    # with --only, those of the globs alone (a part of the targets)
    targets = mutant_globs(TARGETS)
    recorded = args.only or targets
    selected = {name: s for name, s in statuses.items() if matches(name, targets) and matches(name, recorded)}
    counts: dict[str, int] = {}
    for status in selected.values():
        counts[status] = counts.get(status, 0) + 1
    survivors = sorted(name for name, s in selected.items() if s not in ("killed", "timeout", "not checked"))
    changed = mutant_diffs(args.work)
    diffs = [f"# {name}: {selected[name]}\n" + "\n".join(changed.get(name, [])) + "\n" for name in survivors]
    args.out.mkdir(parents=True, exist_ok=True)
    import mutmut

    record = {"tool": f"mutmut {getattr(mutmut, '__version__', '?')}", "started": started.isoformat(timespec="seconds"),
              "finished": datetime.now(timezone.utc).isoformat(timespec="seconds"), "globs": globs, "counts": counts,
              "mutants": dict(sorted(selected.items()))}
    (args.out / "results.json").write_text(json.dumps(record, indent=1, ensure_ascii=False) + "\n")
    (args.out / "survivors.diff").write_text("\n".join(diffs))
    print(json.dumps(counts), f"{len(survivors)} not killed: {args.out / 'survivors.diff'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
