"""Running the CLI in tests: a tiny training, and the check that an error is one line without a traceback."""
from __future__ import annotations

from pathlib import Path

import pytest

from nin.cli import main

# one epoch on 16 MNIST images, one step, no evaluation: the cheapest run that writes every file of a run folder
TINY = ["--epochs", "1", "--subset", "16", "--set", "batch_size=16", "--set", "eval_split=none",
        "--set", "test_splits=[]", "--device", "cpu"]


def fails(capsys: pytest.CaptureFixture, argv: list[str], *fragments: str) -> str:
    """Run the CLI; it must exit with 2 and print one error line containing ``fragments``, without a traceback."""
    assert main(argv) == 2
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith(f"nin {argv[0]}: error:")]
    assert len(lines) == 1 and "Traceback" not in err, err
    for fragment in fragments:
        assert fragment in lines[0], (fragment, err)
    return lines[0]


def files(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []
