"""Bad input through the CLI: one clear error (what, where, what to do), exit status 2, no traceback,
nothing partly written.

Covered elsewhere and not repeated here:
- damaged dataset files, by the library: tests/test_datasets.py::test_damaged_idx_names_the_file,
  ::test_damaged_gzip_and_mismatched_counts, ::test_damaged_cifar_pickle_names_the_file,
  ::test_damaged_cifar_archive_names_the_file, ::test_damaged_svhn_names_the_file;
- a wrong checksum: tests/test_download.py::test_checksum_mismatch_keeps_nothing and
  ::test_existing_file_is_kept_or_replaced_by_checksum (end to end: tests/test_security.py);
- unknown recipe keys and values of the wrong type: tests/test_recipe.py::test_bad_overrides_are_explained,
  ::test_unknown_recipe_and_bad_files, tests/test_train.py::test_cli_errors_are_one_line_without_traceback
  (values of the right type that name nothing known: below);
- divergence (NaN/Inf in the loss or the weights):
  tests/test_train.py::test_divergence_stops_and_keeps_the_last_good_checkpoint.
"""
from __future__ import annotations

import errno
import os
import re
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pytest
from _checkpoints import MODEL_ARGS, checkpoint_state, synthetic_checkpoint, synthetic_digits
from _cli import TINY, fails, files
from _idx import idx_bytes
from PIL import Image

import nin.utils.atomic
from nin.checkpoint import load_checkpoint, save_checkpoint
from nin.cli import main
from nin.inference.weights import WeightsError, weights_from_state_dict
from nin.models import create_model
from nin.train import Trainer, apply_overrides, load_recipe
from nin.train.metrics import read_metrics
from nin.utils.atomic import atomic_write


def mnist_root(folder: Path, test_images: np.ndarray) -> Path:
    """A data root whose MNIST test split holds these images (labelled 0)."""
    (folder / "mnist").mkdir(parents=True)
    (folder / "mnist" / "t10k-images-idx3-ubyte").write_bytes(idx_bytes(test_images))
    (folder / "mnist" / "t10k-labels-idx1-ubyte").write_bytes(idx_bytes(np.zeros(len(test_images), np.uint8)))
    return folder


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return synthetic_checkpoint(tmp_path_factory.mktemp("bad-input"))


# ------------------------------------------------------------------------------------------ data


def test_truncated_training_file_stops_train_before_anything_is_written(shared_data: Path, tmp_path: Path,
                                                                         capsys: pytest.CaptureFixture) -> None:
    root = tmp_path / "data"
    shutil.copytree(shared_data / "mnist", root / "mnist", ignore=shutil.ignore_patterns("t10k*"))
    damaged = root / "mnist" / "train-labels-idx1-ubyte.gz"
    damaged.write_bytes(damaged.read_bytes()[:5000])
    out = tmp_path / "run"
    fails(capsys, ["train", "--recipe", "mnist", "--data-dir", str(root), "--out", str(out), *TINY],
          str(damaged), "cannot decompress", "download")
    assert files(out) == []


@pytest.mark.parametrize("folder", ["empty", "missing", "a-file"])
def test_data_dir_without_the_dataset_names_the_file_it_needs(folder: str, tmp_path: Path,
                                                               capsys: pytest.CaptureFixture) -> None:
    root = tmp_path / folder
    if folder == "empty":
        root.mkdir()
    elif folder == "a-file":
        root.write_text("not a folder")
    out = tmp_path / "run"
    fails(capsys, ["train", "--recipe", "mnist", "--data-dir", str(root), "--out", str(out), *TINY],
          str(root / "mnist" / "train-images-idx3-ubyte.gz"), "missing", "To fix")
    assert files(out) == []


def test_empty_split_file_is_refused_not_scored_nan(checkpoint: Path, tmp_path: Path,
                                                    capsys: pytest.CaptureFixture) -> None:
    root = mnist_root(tmp_path, np.zeros((0, 28, 28), np.uint8))
    fails(capsys, ["eval", str(checkpoint), "--data-dir", str(root)], "holds no images", "fetch it again")


def test_subset_zero_is_refused_by_the_recipe(shared_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    fails(capsys, ["train", "--recipe", "mnist", "--data-dir", str(shared_data), "--out", str(tmp_path / "run"),
                   "--subset", "0"], "subset must be a positive number of images, got 0")
    assert files(tmp_path / "run") == []


@pytest.mark.parametrize("override, named", [('preprocess=["zcaa"]', "zcaa"), ("model_args.width=3", "width"),
                                             ('eval_split="validation"', "validation"),
                                             ('dataset="imagenet"', "imagenet")])
def test_recipe_values_of_the_right_type_that_name_nothing_known(override: str, named: str, shared_data: Path,
                                                                  tmp_path: Path,
                                                                  capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "run"
    fails(capsys, ["train", "--recipe", "mnist", "--data-dir", str(shared_data), "--out", str(out), *TINY,
                   "--set", override], named)
    assert files(out) == []


def test_nan_after_preprocessing_is_refused_before_training(shared_data: Path, tmp_path: Path,
                                                            capsys: pytest.CaptureFixture) -> None:
    # ZCA without its filter bias, fitted on 8 images of 784 pixels: the covariance is singular and its
    # inverse square root is infinite, so the whitened images hold NaN/Inf
    out = tmp_path / "run"
    fails(capsys, ["train", "--recipe", "mnist", "--data-dir", str(shared_data), "--out", str(out), *TINY,
                   "--subset", "8", "--set", 'preprocess=[{name="zca", filter_bias=0.0}]'],
          "mnist 'train'", "NaN or Inf", "nothing was trained", "filter_bias")
    assert files(out) == []


def test_eval_refuses_images_of_another_size(checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """A 28×28 network with global average pooling runs on 32×32 images too, so only a check can say the
    data does not match the checkpoint's input size (1, 28, 28)."""
    root = mnist_root(tmp_path, np.zeros((4, 32, 32), np.uint8))
    assert main(["eval", str(checkpoint), "--data-dir", str(root)]) == 2
    err = capsys.readouterr().err
    assert "28" in err and "32" in err and "Traceback" not in err


def test_eval_warns_when_the_split_holds_images_the_network_trained_on(shared_data: Path, tmp_path: Path,
                                                                      capsys: pytest.CaptureFixture) -> None:
    """A run on train+valid (the paper's retraining) has learned 'valid': its error there is no held-out error.
    The weights exported from the run (their preprocessing in the file, so nothing is refitted) say so too."""
    for trained_on, warned in (("train", False), ("train+valid", True)):
        state = checkpoint_state(synthetic_digits(1024)[0])
        state["recipe"]["train_split"] = trained_on
        save_checkpoint(path := tmp_path / f"{trained_on}.pt", state)
        weights = tmp_path / f"{trained_on}.safetensors"
        assert main(["export", str(path), "--format", "safetensors", "--out", str(weights)]) == 0
        for scored in (path, weights):
            assert main(["eval", str(scored), "--split", "valid", "--data-dir", str(shared_data)]) == 0
            err = capsys.readouterr().err
            assert (err.startswith("nin eval: warning: ") and f"mnist '{trained_on}'" in err and "'valid'" in err
                    and "not held-out" in err) == warned, (scored, err)
    root = mnist_root(tmp_path / "data", np.zeros((4, 28, 28), np.uint8))
    assert main(["eval", str(path), "--split", "test", "--data-dir", str(root)]) == 0
    assert "warning" not in capsys.readouterr().err


def test_weights_from_a_state_dict_can_name_their_training_split(shared_data: Path, tmp_path: Path,
                                                                  capsys: pytest.CaptureFixture) -> None:
    """Weights trained elsewhere on train+valid warn on 'valid' like nin's own, once told; a split the dataset
    does not have is refused before anything is written."""
    state_dict = create_model("nin_mnist", **MODEL_ARGS).state_dict()
    for told, warned in ((None, False), ("train+valid", True)):
        weights = tmp_path / f"own-{told}.safetensors"
        weights_from_state_dict(state_dict, "nin_mnist", weights, model_args=MODEL_ARGS, dataset="mnist",
                                train_split=told)
        assert main(["eval", str(weights), "--split", "valid", "--data-dir", str(shared_data)]) == 0
        assert ("mnist 'train+valid', which holds the images of 'valid'" in capsys.readouterr().err) == warned
    for dataset, split, expected in (
            ("mnist", "train+test", "train_split 'train+test' is no split of dataset 'mnist' (its splits: train, "
                                    "valid, train+valid, test)"),
            ("own", "train", "dataset 'own' is none of them (mnist, fashion-mnist, cifar10, cifar100, svhn, folder)")):
        with pytest.raises(WeightsError, match=re.escape(expected)):
            weights_from_state_dict(state_dict, "nin_mnist", tmp_path / "bad.safetensors", model_args=MODEL_ARGS,
                                    dataset=dataset, train_split=split)
    assert not list(tmp_path.glob("bad*"))


def test_eval_of_a_checkpoint_on_a_dataset_with_another_channel_count(shared_data: Path, tmp_path: Path,
                                                                       capsys: pytest.CaptureFixture) -> None:
    """An MNIST network pointed at CIFAR-10 (the checkpoint's dataset edited)."""
    state = checkpoint_state(synthetic_digits(8)[0])
    state["dataset"] = "cifar10"
    save_checkpoint(tmp_path / "c.pt", state)
    fails(capsys, ["eval", str(tmp_path / "c.pt"), "--split", "test-lossless-1000",
                   "--data-dir", str(shared_data)], "1×28×28", "3×32×32")


def test_predict_fits_an_image_of_any_size_and_channel_count(shared_path, checkpoint: Path, tmp_path: Path,
                                                             capsys: pytest.CaptureFixture) -> None:
    """Not an error: `nin predict` converts and resizes by its documented rule (a CIFAR image, RGB 32×32,
    into an MNIST network), and a damaged file is one error line naming it."""
    with np.load(shared_path("cifar-10-lossless-subset", "test_1000.npz")) as z:
        Image.fromarray(z["x"][0]).save(tmp_path / "cifar.png")
    (tmp_path / "cut.png").write_bytes((tmp_path / "cifar.png").read_bytes()[:100])
    assert main(["predict", str(checkpoint), str(tmp_path / "cifar.png"), str(tmp_path / "cut.png")]) == 2
    out, err = capsys.readouterr()
    assert out.startswith(str(tmp_path / "cifar.png")) and "Traceback" not in err
    assert err.count("error:") == 1 and str(tmp_path / "cut.png") in err


# ----------------------------------------------------------------------------------- checkpoints


def test_checkpoint_of_another_model_is_refused(checkpoint: Path, tmp_path: Path,
                                                capsys: pytest.CaptureFixture) -> None:
    state = load_checkpoint(checkpoint)
    state["model_name"] = "nin_cifar10"
    save_checkpoint(tmp_path / "other.pt", state)
    fails(capsys, ["eval", str(tmp_path / "other.pt")], "does not fit its model 'nin_cifar10'")


def test_checkpoint_with_unknown_model_arguments(checkpoint: Path, tmp_path: Path,
                                                 capsys: pytest.CaptureFixture) -> None:
    state = load_checkpoint(checkpoint)
    state["model_args"] = {"width": 3}
    save_checkpoint(tmp_path / "args.pt", state)
    fails(capsys, ["eval", str(tmp_path / "args.pt")], "width")


def test_flipped_byte_in_a_checkpoint_is_detected(checkpoint: Path, tmp_path: Path,
                                                  capsys: pytest.CaptureFixture) -> None:
    """torch.load alone would return different weights without a word; the zip CRC-32 catches it."""
    raw = bytearray(checkpoint.read_bytes())
    raw[len(raw) // 2] ^= 0x01
    (tmp_path / "flipped.pt").write_bytes(raw)
    fails(capsys, ["eval", str(tmp_path / "flipped.pt")], str(tmp_path / "flipped.pt"), "CRC-32", "delete it")


def test_member_marked_as_a_directory_is_refused(checkpoint: Path, tmp_path: Path,
                                                 capsys: pytest.CaptureFixture) -> None:
    """The directory bit set in a member's zip attributes: every CRC still matches, but torch.load then
    fills that tensor with whatever the allocator hands back, sometimes the very bytes saved."""
    raw = bytearray(checkpoint.read_bytes())
    entry = raw.rfind(b"PK\x01\x02", 0, raw.rfind(b"/data/0"))  # its central directory entry
    raw[entry + 38] |= 0x10  # external attributes: MS-DOS directory
    (tmp_path / "dir.pt").write_bytes(raw)
    fails(capsys, ["eval", str(tmp_path / "dir.pt")], "data/0", "directory", "delete it")


def test_changed_weights_with_matching_crcs_are_caught_by_the_content_digest(
        checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """A weight changed and every CRC-32 rewritten to match: only the SHA-256 of the content can tell."""
    with zipfile.ZipFile(checkpoint) as source, zipfile.ZipFile(tmp_path / "edited.pt", "w") as edited:
        for member in source.infolist():
            data = bytearray(source.read(member))
            if member.filename.endswith("/data/0"):
                data[0] ^= 0x01
            edited.writestr(member, bytes(data))
    fails(capsys, ["eval", str(tmp_path / "edited.pt")], "SHA-256", "delete it")


def test_resume_from_a_truncated_checkpoint(checkpoint: Path, tmp_path: Path, shared_data: Path,
                                            capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "run"
    out.mkdir()
    (out / "last.pt").write_bytes(checkpoint.read_bytes()[:100_000])
    before = (out / "last.pt").read_bytes()
    fails(capsys, ["train", "--recipe", "mnist", "--data-dir", str(shared_data), "--out", str(out), *TINY,
                   "--resume"], str(out / "last.pt"), "unreadable", "delete it")
    assert files(out) == ["last.pt"] and (out / "last.pt").read_bytes() == before


# ------------------------------------------------------------------------------------- full disk


def _full_disk(fd: int) -> None:
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def test_full_disk_keeps_the_old_file_and_no_temporary(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "metrics.jsonl"
    target.write_text("old\n")
    monkeypatch.setattr(nin.utils.atomic.os, "fsync", _full_disk)
    with pytest.raises(OSError) as err:
        atomic_write(target, lambda f: f.write(b"new\n"))
    assert err.value.errno == errno.ENOSPC and err.value.filename == str(target)
    assert target.read_text() == "old\n" and files(tmp_path) == ["metrics.jsonl"]


def test_full_disk_while_training_says_so_and_keeps_the_last_checkpoint(shared_data: Path, tmp_path: Path,
                                                                         capsys: pytest.CaptureFixture,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "run"
    recipe = apply_overrides(load_recipe("mnist"), ["epochs=1", "subset=16", "batch_size=16", "eval_split=none",
                                                    "test_splits=[]", 'device="cpu"'])
    Trainer(recipe, out, data_root=shared_data, progress=False).fit()
    before = (out / "last.pt").read_bytes()
    fsync = os.fsync

    def full_for_checkpoints(fd: int) -> None:  # the disk fills up just as epoch 2's checkpoint is written
        if os.path.basename(os.readlink(f"/proc/self/fd/{fd}")).startswith(".last.pt."):
            _full_disk(fd)
        fsync(fd)

    if not Path("/proc/self/fd").is_dir():
        pytest.skip("needs /proc to tell the checkpoint's file descriptor apart")
    monkeypatch.setattr(nin.utils.atomic.os, "fsync", full_for_checkpoints)
    fails(capsys, ["train", "--recipe", "mnist", "--data-dir", str(shared_data), "--out", str(out), *TINY,
                   "--epochs", "2", "--resume"], "no space left", str(out / "last.pt"), "--resume")
    assert (out / "last.pt").read_bytes() == before and load_checkpoint(out / "last.pt")["epoch"] == 1
    assert [row["epoch"] for row in read_metrics(out / "metrics.jsonl")] == [1]
    assert not [name for name in files(out) if name.endswith(".tmp")]

