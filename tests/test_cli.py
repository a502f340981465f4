"""The command line itself: its version, its help, and the tables it prints."""
from __future__ import annotations

import argparse
import subprocess
import sys

import pytest
import torch

import nin
from nin.cli import build_parser, main
from nin.train import list_recipes


def test_version_names_nin_and_torch(capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as done:
        main(["--version"])
    assert done.value.code == 0
    assert capsys.readouterr().out.startswith(f"nin {nin.__version__} (torch {torch.__version__}, Python ")


def _undocumented(parser: argparse.ArgumentParser, path: str) -> list[str]:
    missing = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            documented = {choice.dest for choice in action._choices_actions if choice.help}
            for name, sub in action.choices.items():
                missing += [] if name in documented else [f"{path} {name}"]
                missing += _undocumented(sub, f"{path} {name}")
        elif not action.help:
            missing.append(f"{path} {'/'.join(action.option_strings) or action.dest}")
    return missing


def test_every_command_and_option_has_help_text() -> None:
    assert _undocumented(build_parser(), "nin") == []


def test_the_models_and_recipes_tables_have_headers(capsys: pytest.CaptureFixture) -> None:
    assert main(["models", "nin_mnist*"]) == 0
    header, row = capsys.readouterr().out.splitlines()
    assert header.split()[:4] == ["model", "parameters", "M", "MACs"] and "input" in header
    assert row.startswith("nin_mnist ") and "1×28×28" in row
    assert header.index("input") == row.index("1×28×28")  # the columns line up under their names
    assert main(["models", "nin_cifar10"]) == 0
    header, row = capsys.readouterr().out.splitlines()
    assert row[header.index("weights"):].split()[0] == "aug50k,aug,paper,paper50k,fast20"  # the default weights first
    assert row[header.index("where in the paper"):].startswith("Table 1")  # a long weights list keeps the columns
    assert main(["recipes"]) == 0
    header, *rows = capsys.readouterr().out.splitlines()
    assert header.split()[:4] == ["recipe", "model", "dataset", "paper"]
    assert [r.split()[0] for r in rows] == list_recipes()
    mnist = rows[list_recipes().index("mnist")]
    assert mnist[header.index("dataset"):].startswith("mnist ") and "0.47%" in mnist


def test_a_reader_that_leaves_early_gets_no_traceback() -> None:
    """`nin models | head -1`: the pipe is closed before nin writes to it; nin stops quietly, as a shell tool does."""
    proc = subprocess.Popen([sys.executable, "-m", "nin.cli", "models", "nin_mnist"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    proc.stdout.close()
    err = proc.stderr.read()
    assert proc.wait(timeout=120) == 141 and err == b""
