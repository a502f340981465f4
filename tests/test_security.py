"""Files from elsewhere cannot run code, write outside their folder, or be used unverified; `nin predict`
survives damaged image bytes.

Covered elsewhere: archive members with absolute paths, '..' or links leaving the folder
(tests/test_download.py::test_unsafe_archives_are_refused_before_writing), a tampered CIFAR pickle
(tests/test_datasets.py::test_damaged_cifar_pickle_names_the_file, its ``_Evil`` case), downloads
checked against their MD5 before they replace anything (tests/test_download.py::test_checksum_mismatch_keeps_nothing,
::test_truncated_transfer_is_rejected, ::test_existing_file_is_kept_or_replaced_by_checksum).
"""
from __future__ import annotations

import importlib.util
import io
import os
import pickle
import sys
import tarfile
from pathlib import Path
from types import ModuleType

import pytest
import torch
from _checkpoints import synthetic_checkpoint
from hypothesis import HealthCheck, given, settings

from nin.checkpoint import FORMAT, CheckpointError, load_checkpoint, save_checkpoint
from nin.cli import main
from nin.data import DatasetError, load_dataset
from nin.data import download as dl
from nin.inference.trained import load_trained

REPO = Path(__file__).resolve().parents[1]


def _benchmark(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"benchmark_{name}", REPO / "benchmarks" / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


class _Payload:
    """Unpickling this runs ``touch MARKER``: what a malicious checkpoint would do."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return os.system, (f"touch {self.marker}",)


def _malicious(path: Path, marker: Path, kind: str) -> Path:
    state = {"format": FORMAT, "model_name": "nin_mnist", "model": _Payload(marker)}
    if kind == "torch.save":
        torch.save(state, path)
    else:  # a bare pickle, as old torch.save and plain pickle.dump write it
        path.write_bytes(pickle.dumps(state))
    return path


@pytest.mark.parametrize("kind", ["torch.save", "pickle"])
def test_malicious_checkpoint_is_refused_without_running_it(kind: str, tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    path = _malicious(tmp_path / "last.pt", marker, kind)
    with pytest.raises(CheckpointError, match="refused|not a checkpoint") as err:
        load_checkpoint(path)
    assert str(path) in str(err.value) and not marker.exists()


@pytest.mark.parametrize("command", ["eval", "train --resume", "predict", "explain", "export"])
def test_every_command_refuses_a_malicious_checkpoint(command: str, tmp_path: Path, shared_data: Path,
                                                      capsys: pytest.CaptureFixture) -> None:
    marker = tmp_path / "pwned"
    out = tmp_path / "run"
    out.mkdir()
    path = _malicious(out / "last.pt", marker, "torch.save")
    argv = {
        "eval": ["eval", str(path)],
        "train --resume": ["train", "--recipe", "mnist", "--data-dir", str(shared_data), "--out", str(out), "--resume"],
        "predict": ["predict", str(path), str(tmp_path / "any.png")],
        "explain": ["explain", str(path), "--out", str(tmp_path / "maps")],
        "export": ["export", str(path), "--format", "safetensors"],
    }[command]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "refused" in err and "never unpickles" in err and "Traceback" not in err
    assert not marker.exists() and sorted(p.name for p in out.iterdir()) == ["last.pt"]


def test_archive_with_a_device_or_fifo_member_is_refused(tmp_path: Path) -> None:
    archive = tmp_path / "a.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        for name, kind in (("data/fifo", tarfile.FIFOTYPE), ("data/tty", tarfile.CHRTYPE)):
            info = tarfile.TarInfo(name)
            info.type = kind
            tar.addfile(info)
    dest = tmp_path / "dest"
    dest.mkdir()
    with pytest.raises(DatasetError, match="device, FIFO or other special file"):
        dl.extract_tar(archive, dest)
    assert list(dest.iterdir()) == []


def test_download_is_verified_before_it_is_extracted(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """End to end: a mirror serving a tampered CIFAR-10 archive (a member that climbs out of the root):
    the MD5 check refuses it, so nothing is extracted, kept or written outside."""
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    with tarfile.open(mirror / "cifar-10-python.tar.gz", "w:gz") as tar:
        for name in ("cifar-10-batches-py/test_batch", "../../escaped"):
            info = tarfile.TarInfo(name)
            info.size = 1
            tar.addfile(info, io.BytesIO(b"x"))
    monkeypatch.setitem(dl.MIRRORS, "cifar10", [mirror.as_uri() + "/"])
    root = tmp_path / "deep" / "root"
    with pytest.raises(DatasetError, match=f"could not download.*{dl.CHECKSUMS['cifar10']['cifar-10-python.tar.gz']}"):
        load_dataset("cifar10", "test", root=root, download=True)
    assert list(root.iterdir()) == [] and not (tmp_path / "escaped").exists()


# --------------------------------------------------------------------------------------- fuzzing

fuzz_predict = _benchmark("fuzz_predict")


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory):
    return load_trained(synthetic_checkpoint(tmp_path_factory.mktemp("fuzz")))


@pytest.fixture(scope="module")
def seeds(shared_data: Path) -> dict[str, bytes]:
    if not (shared_data / "cifar-10-lossless-subset").is_dir():
        pytest.skip("needs the CIFAR-10 lossless subset of the shared data")
    return fuzz_predict.seed_images(shared_data)


def test_predict_survives_fuzzed_image_bytes(trained, seeds: dict[str, bytes], tmp_path: Path) -> None:
    """~100 damaged PNG/JPEG files (benchmarks/fuzz_predict.py runs 2,000): a prediction or one clean error."""
    outcomes: list[str] = []

    @settings(max_examples=100, deadline=None, database=None, derandomize=True,
              suppress_health_check=list(HealthCheck))
    @given(fuzz_predict.image_bytes(seeds))
    def one(case: tuple[str, bytes]) -> None:
        outcomes.append(fuzz_predict.check(trained, case[1], tmp_path))

    one()
    assert len(outcomes) >= 100 and "predicted" in outcomes and any(o.startswith("error") for o in outcomes)


def test_fuzzed_checkpoint_bytes_give_only_checkpoint_errors(tmp_path: Path) -> None:
    """Truncations and overwritten bytes anywhere in a checkpoint: the same state back, or a CheckpointError."""
    from hypothesis import strategies as st

    path = tmp_path / "c.pt"
    save_checkpoint(path, {"model": {"w": torch.arange(256, dtype=torch.float32)}, "epoch": 3})
    good = path.read_bytes()

    @settings(max_examples=100, deadline=None, database=None, derandomize=True,
              suppress_health_check=list(HealthCheck))
    @given(st.integers(0, len(good) - 1), st.integers(1, 255), st.booleans())
    def one(position: int, value: int, cut: bool) -> None:
        damaged = good[:position] if cut else good[:position] + bytes([good[position] ^ value]) + good[position + 1:]
        path.write_bytes(damaged)
        try:
            state = load_checkpoint(path)
        except CheckpointError as err:
            assert str(path) in str(err)
            return
        assert torch.equal(state["model"]["w"], torch.arange(256, dtype=torch.float32)) and state["epoch"] == 3

    one()
