"""The README's commands, run as written on tiny data, so the docs cannot drift from the CLI.

Every line of a ```sh block is run in order, in one working folder, by ``nin.cli.main`` (``torchrun ... -m nin.cli``
runs as one process). What changes is only what makes them fast and offline: the data root (the README's
``--data-dir`` folders and ``$NIN_DATA`` point at tiny official-format files), ``--epochs 1 --subset 16`` for
training, 32 validation images instead of 10,000, ``--epochs 1`` for ``nin check``, the unit scaling instead of
ZCA (whose 3,072×3,072 eigendecomposition takes tens of seconds on a shared 2-core CPU), one model for
``nin models``, and ``file://`` mirrors for ``nin data download``. pip, apt and pytest lines are skipped.
"""
from __future__ import annotations

import io
import pickle
import re
import shlex
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from _idx import write_mnist
from PIL import Image

import nin.data.datasets as datasets
from nin.cli import main
from nin.data import ZCA
from nin.data import download as dl
from nin.experiments.paper import EXPERIMENTS
from nin.train import load_recipe

README = Path(__file__).resolve().parents[1] / "README.md"
SKIPPED = ("sudo", "pip", "apt-get")


def readme_commands() -> list[list[str]]:
    """Each command of the README's ```sh blocks as argv, in order (``a && b`` gives two)."""
    commands = []
    for block in re.findall(r"```sh\n(.*?)```", README.read_text(), flags=re.S):
        for line in block.splitlines():
            words = shlex.split(line, comments=True)
            while words:
                end = words.index("&&") if "&&" in words else len(words)
                commands.append(words[:end])
                words = words[end + 1:]
    return commands


def _cifar_batch(n: int, seed: int, fine: bool = False) -> bytes:
    rng = np.random.default_rng(seed)
    labels = [int(v) for v in rng.integers(0, 100 if fine else 10, n)]
    key = b"fine_labels" if fine else b"labels"
    return pickle.dumps({b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8), key: labels}, protocol=2)


def _tiny_root(root: Path, mirror: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """MNIST, Fashion-MNIST and CIFAR-10 in their official layouts under ``root``; CIFAR-100 and SVHN only on a
    ``file://`` mirror, for ``nin data download`` to fetch (checksums: these files')."""
    for name in ("mnist", "fashion-mnist"):
        write_mnist(root / name, n_train=96, n_test=16, gz=True, size=28)
        monkeypatch.setitem(dl.CHECKSUMS, name, {f: dl.md5sum(root / name / f) for f in dl.CHECKSUMS[name]})
    cifar = root / "cifar-10-batches-py"
    cifar.mkdir()
    for k, name in enumerate([*(f"data_batch_{i}" for i in range(1, 6)), "test_batch"]):
        (cifar / name).write_bytes(_cifar_batch(16, k))
    mirror.mkdir()
    with tarfile.open(mirror / "cifar-100-python.tar.gz", "w:gz") as tar:
        meta = pickle.dumps({b"fine_label_names": [f"c{i}".encode() for i in range(100)]}, protocol=2)
        for name, data in (("train", _cifar_batch(16, 7, True)), ("test", _cifar_batch(16, 8, True)), ("meta", meta)):
            info = tarfile.TarInfo(f"cifar-100-python/{name}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    for name in dl.CHECKSUMS["svhn"]:
        (mirror / name).write_bytes(name.encode())  # never read: only fetched and checked
    for name in ("cifar100", "svhn"):
        monkeypatch.setitem(dl.MIRRORS, name, [mirror.as_uri() + "/"])
        monkeypatch.setitem(dl.CHECKSUMS, name, {f: dl.md5sum(mirror / f) for f in dl.CHECKSUMS[name]})
    monkeypatch.setattr(datasets, "VALID_SIZE", 32)


def _files_the_readme_names(folder: Path) -> None:
    """digit.png, photo.jpg and a photos/ folder of class folders, in the working folder."""
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (28, 28), dtype=np.uint8)).save(folder / "digit.png")
    Image.fromarray(rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)).save(folder / "photo.jpg")
    for label in ("cat", "dog"):
        (folder / "photos" / label).mkdir(parents=True)
        for i in range(10):
            Image.fromarray(rng.integers(0, 256, (40, 30, 3), dtype=np.uint8)).save(folder / "photos" / label / f"{i}.png")


def _caffe_files(folder: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """cifar10_nin.caffemodel in the working folder, written through Caffe's schema from random weights (the
    authors' file is not offline), and a ZCA fit that is only a mean: the converter fits GCN + ZCA on the
    training images, and the real fit's 3,072×3,072 eigendecomposition is tested with the preprocessing."""
    pytest.importorskip("google.protobuf")
    from test_caffe import CIFAR10_NET, random_weights, write_caffemodel

    write_caffemodel(folder / "cifar10_nin.caffemodel", CIFAR10_NET, random_weights(CIFAR10_NET, 0), "v1")

    def mean_only(self: ZCA, x):
        flat = x.flatten(1).float()
        self.mean, self.whitening = flat.mean(0), torch.eye(flat.shape[1])
        return self

    monkeypatch.setattr(ZCA, "fit", mean_only)


def _uses_zca(argv: list[str]) -> bool:
    if argv[0] == "train":
        recipes = [argv[argv.index("--recipe") + 1]]
    else:
        recipes = EXPERIMENTS[argv[1]].recipes
    return any("zca" in load_recipe(r).preprocess for r in recipes)


def small(argv: list[str], root: Path) -> list[str]:
    """The README's ``nin`` arguments with tiny data and short runs (see the module docstring)."""
    argv = list(argv)
    if "--data-dir" in argv:  # the README's own folders (photos/) stay; any other root becomes the tiny one
        where = Path(argv[argv.index("--data-dir") + 1])
        if where.is_absolute() or not where.exists():
            argv[argv.index("--data-dir") + 1] = str(root)
    if argv[0] in ("train", "reproduce"):
        argv += [] if "--epochs" in argv else ["--epochs", "1"]
        argv += [] if "--subset" in argv else ["--subset", "16"]
        argv += ["--set", 'preprocess=["unit"]'] if _uses_zca(argv) else []
    if argv[0] == "check":
        argv[argv.index("--epochs") + 1] = "1"
    if argv == ["models"]:
        argv.append("nin_mnist")
    return argv


def test_the_readme_commands_run_as_written(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                            capsys: pytest.CaptureFixture) -> None:
    root, work = tmp_path / "data", tmp_path / "work"
    work.mkdir()
    _tiny_root(root, tmp_path / "mirror", monkeypatch)
    _files_the_readme_names(work)
    _caffe_files(work, monkeypatch)
    monkeypatch.chdir(work)
    monkeypatch.setenv("NIN_DATA", str(root))
    ran = []
    for words in readme_commands():
        if words[0] in SKIPPED or words[:3] == ["python", "-m", "pytest"]:
            continue
        if words[0] == "torchrun":
            words = ["nin", *words[words.index("nin.cli") + 1:]]
        assert words[0] == "nin", f"the README runs {words[0]!r}: teach this test how to run it"
        argv = small(words[1:], root)
        try:
            status = main(argv)
        except SystemExit as done:  # --version and --help exit through argparse
            status = done.code
        output = capsys.readouterr()
        assert status == 0, f"`{shlex.join(words)}` (run as `nin {shlex.join(argv)}`) failed:\n{output.err[-3000:]}"
        ran.append(words[1])
    assert {"train", "eval", "explain", "predict", "reproduce", "report", "check", "export", "data",
            "convert"} <= set(ran)
    assert (root / "cifar-100-python" / "meta").is_file() and (root / "svhn" / "extra_32x32.mat").is_file()
    assert (work / "runs" / "mnist" / "explain" / "explain-000.png").is_file()
