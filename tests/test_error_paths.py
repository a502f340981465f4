"""One negative test per documented error path that no other test triggered: CUDA or fp16 asked for on a CPU
machine, a checkpoint of another format, and the WeightsError paths. Each checks the message, not only the type.

(A parameter that becomes NaN: tests/test_training_rules.py; evaluation on an empty split:
tests/test_evaluation_numerics.py.)
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from _checkpoints import synthetic_checkpoint

from nin.checkpoint import CheckpointError, load_checkpoint, save_checkpoint

# the code under test: keep these imports together, so they are easy to re-point when modules move
from nin.cli import main
from nin.inference.weights import Weights, WeightsError, read_weights, save_weights, weights_from_checkpoint
from nin.train import Trainer, TrainingError, apply_overrides, load_recipe

no_cuda = pytest.mark.skipif(torch.cuda.is_available(), reason="the error is for machines without a CUDA GPU")


@no_cuda
def test_cli_train_on_cuda_without_a_gpu_says_so(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """Catches a CUDA request that fails later with torch's own traceback instead of the remedy."""
    assert main(["train", "--recipe", "mnist", "--device", "cuda", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err == ("nin train: error: device cuda was asked for but this machine has no CUDA GPU; "
                   "use --device cpu\n")


def test_fp16_on_a_cpu_is_refused_with_the_remedy(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """fp16 needs CUDA's GradScaler: refused on a CPU, with bf16 as the remedy (CLI and Trainer alike)."""
    assert main(["train", "--recipe", "mnist", "--device", "cpu", "--precision", "fp16", "--out",
                 str(tmp_path)]) == 2
    assert capsys.readouterr().err == ("nin train: error: precision fp16 needs a CUDA GPU; use --precision bf16 "
                                       "on a CPU\n")
    with pytest.raises(TrainingError, match=r"^precision fp16 needs a CUDA GPU; use --precision bf16 on a CPU$"):
        Trainer(apply_overrides(load_recipe("mnist"), ["device=\"cpu\"", "precision=\"fp16\""]), tmp_path)


def test_a_checkpoint_of_another_format_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """A readable torch file whose ``format`` is not nin's: refused by name, before anything is used."""
    path = tmp_path / "other.pt"
    torch.save({"format": "nin-checkpoint-v0", "model": {"w": torch.zeros(2)}}, path)
    assert main(["eval", str(path)]) == 2
    assert capsys.readouterr().err.startswith(f"nin eval: error: {path} is not a nin checkpoint (expected format "
                                              "'nin-checkpoint-v1')")


def test_a_missing_checkpoint_is_named(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match=rf"^checkpoint {tmp_path / 'none.pt'} does not exist; give the path of "
                                              r"a \.pt file written by `nin train`$"):
        load_checkpoint(tmp_path / "none.pt")


class _NotPlainData:
    """Any class: a checkpoint holding one of its objects would run code to unpickle it."""


def test_a_checkpoint_holding_objects_is_refused_without_unpickling_them(tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """Refused even where torch.load's own default would unpickle it (torch < 2.6, or this variable set): the
    loader must ask for ``weights_only=True`` itself."""
    monkeypatch.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")
    path = tmp_path / "objects.pt"
    torch.save({"format": "nin-checkpoint-v1", "model": _NotPlainData()}, path)
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(path)
    assert str(err.value).startswith(f"checkpoint {path} was refused: it holds objects other than tensors and plain "
                                     "data (")
    assert "). nin never unpickles arbitrary objects; only load checkpoints written by `nin train`" in str(err.value)


def test_a_checkpoint_whose_content_no_longer_matches_its_digest_is_refused(tmp_path: Path) -> None:
    """A weight changed inside an intact file (a rewrite by another tool, a bug): the SHA-256 saved with the
    content tells. A checkpoint from before digests existed still loads."""
    path = tmp_path / "last.pt"
    save_checkpoint(path, {"model": {"w": torch.arange(4.0)}, "epoch": 3})
    state = torch.load(path, weights_only=True)
    assert set(state) == {"format", "model", "epoch", "sha256"}
    state["model"]["w"][2] = 7.0
    torch.save(state, path)
    with pytest.raises(CheckpointError, match=rf"^checkpoint {path} is damaged: its content does not match the "
                                              r"SHA-256 saved with it; delete it and train again \(or resume from a "
                                              r"good copy\)$"):
        load_checkpoint(path)
    del state["sha256"]
    torch.save(state, path)
    loaded = load_checkpoint(path)
    assert loaded["epoch"] == 3 and torch.equal(loaded["model"]["w"], torch.tensor([0.0, 1.0, 7.0, 3.0]))


# ------------------------------------------------------------------------------------------ WeightsError

@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A weights file and its sidecar, exported from an untrained synthetic checkpoint."""
    folder = tmp_path_factory.mktemp("weights")
    weights_from_checkpoint(synthetic_checkpoint(folder), folder / "nin_mnist.safetensors")
    return folder / "nin_mnist.safetensors"


def _copy(exported: Path, to: Path) -> Path:
    for suffix in (".safetensors", ".json"):
        to.joinpath(exported.with_suffix(suffix).name).write_bytes(exported.with_suffix(suffix).read_bytes())
    return to / exported.name


def test_weights_without_a_file_yet(exported: Path) -> None:
    record = read_weights(exported)
    unsaved = Weights(**{**record.__dict__, "sidecar": None})
    with pytest.raises(WeightsError, match=r"^weights for nin_mnist have no file yet; write them with save_weights$"):
        unsaved.load()


def test_unreadable_weights_file(exported: Path, tmp_path: Path) -> None:
    path = _copy(exported, tmp_path)
    path.write_bytes(b"not a safetensors file")
    with pytest.raises(WeightsError) as err:
        read_weights(path).load()
    assert str(err.value).startswith(f"{path}: cannot read the weights (")
    assert str(err.value).endswith("); export them again with `nin export CHECKPOINT --format safetensors`")


def test_weights_that_do_not_fit_the_model_of_their_sidecar(exported: Path, tmp_path: Path) -> None:
    path = _copy(exported, tmp_path)
    sidecar = path.with_suffix(".json")
    data = json.loads(sidecar.read_text())
    sidecar.write_text(json.dumps({**data, "model_name": "nin_cifar10"}))
    with pytest.raises(WeightsError, match=rf"^{path} does not fit nin_cifar10 as described by {sidecar}: "):
        read_weights(path).load()


def test_weights_files_must_end_in_safetensors(exported: Path, tmp_path: Path) -> None:
    trained = read_weights(exported).load()
    with pytest.raises(WeightsError, match=rf"^{tmp_path / 'w.pt'}: weights files end in \.safetensors$"):
        save_weights(trained, tmp_path / "w.pt", "nin_mnist", {})
    assert not list(tmp_path.iterdir())


def test_weights_without_their_sidecar(exported: Path, tmp_path: Path) -> None:
    path = _copy(exported, tmp_path)
    path.with_suffix(".json").unlink()
    with pytest.raises(WeightsError, match=rf"^{path.with_suffix('.json')} does not exist: weights need their JSON "
                                           r"sidecar next to the \.safetensors file$"):
        read_weights(path)


def test_a_sidecar_that_is_not_json(exported: Path, tmp_path: Path) -> None:
    path = _copy(exported, tmp_path)
    path.with_suffix(".json").write_text("{ not json")
    with pytest.raises(WeightsError, match=rf"^{path.with_suffix('.json')} is unreadable \(.*\); export the weights "
                                           "again$"):
        read_weights(path)


def test_a_sidecar_of_another_format(exported: Path, tmp_path: Path) -> None:
    path = _copy(exported, tmp_path)
    sidecar = path.with_suffix(".json")
    sidecar.write_text(json.dumps({**json.loads(sidecar.read_text()), "format": "nin-weights-v0"}))
    with pytest.raises(WeightsError, match=rf"^{sidecar} is not a nin weights sidecar \(expected format "
                                           r"'nin-weights-v1'\)$"):
        read_weights(path)


@pytest.mark.parametrize("change", [{"colour": "blue"}, {"classes": None}])
def test_a_sidecar_with_unknown_or_missing_fields(exported: Path, tmp_path: Path, change: dict) -> None:
    path = _copy(exported, tmp_path)
    sidecar = path.with_suffix(".json")
    data = {**json.loads(sidecar.read_text()), **change}
    sidecar.write_text(json.dumps({k: v for k, v in data.items() if v is not None}))
    with pytest.raises(WeightsError, match=rf"^{sidecar} lacks or has unknown fields \(.*\); export the weights "
                                           "again$"):
        read_weights(path)


def test_a_sidecar_whose_training_split_is_not_a_name(exported: Path, tmp_path: Path) -> None:
    """A list here would silently turn off nin eval's warning for splits the network trained on."""
    path = _copy(exported, tmp_path)
    sidecar = path.with_suffix(".json")
    sidecar.write_text(json.dumps({**json.loads(sidecar.read_text()), "train_split": ["train", "valid"]}))
    with pytest.raises(WeightsError, match=rf"^{sidecar}: train_split must name the split the network trained on, "
                                           r"or be null if not known, not \['train', 'valid'\]$"):
        read_weights(path)


def test_cli_names_the_shipped_weights_when_asked_for_others(capsys: pytest.CaptureFixture) -> None:
    """`nin eval NAME` of a network without shipped weights lists those that are shipped and how to make some."""
    assert main(["eval", "nin_svhn"]) == 2
    err = capsys.readouterr().err
    assert err == ("nin eval: error: no pretrained weights are shipped for 'nin_svhn' (shipped: nin_mnist.paper, "
                   "nin_mnist.fast, nin_cifar10.aug50k, nin_cifar10.aug, nin_cifar10.paper, nin_cifar10.paper50k, "
                   "nin_cifar10.fast20); train it with `nin train --recipe ...`, or use pretrained=False\n")
