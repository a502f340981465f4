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

# the code under test: keep these imports together, so they are easy to re-point when modules move
from nin.cli import main
from nin.train import Trainer, TrainingError, apply_overrides, load_recipe
from nin.weights import Weights, WeightsError, read_weights, save_weights, weights_from_checkpoint

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
    assert capsys.readouterr().err == (f"nin eval: error: {path} is not a nin checkpoint (expected format "
                                       "'nin-checkpoint-v1')\n")


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


def test_cli_names_the_shipped_weights_when_asked_for_others(capsys: pytest.CaptureFixture) -> None:
    """`nin eval NAME` of a network without shipped weights lists those that are shipped and how to make some."""
    assert main(["eval", "nin_svhn"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("nin eval: error: no pretrained weights are shipped for 'nin_svhn' (shipped: nin_mnist). ")
    assert "--format safetensors --out src/nin/weights/nin_svhn.safetensors`, or use pretrained=False" in err
