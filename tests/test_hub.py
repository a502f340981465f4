"""torch.hub entry points for every registered network, and shipped weights as safetensors + JSON."""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import torch
from _checkpoints import checkpoint_state, synthetic_checkpoint, synthetic_digits

import nin
import nin.inference.weights
from nin.checkpoint import save_checkpoint
from nin.inference.pretrained import get_pretrained
from nin.inference.trained import load_trained
from nin.inference.weights import WeightsError, load_weights, read_weights, weights_from_checkpoint

REPO = Path(__file__).resolve().parents[1]


def test_hubconf_has_an_entry_point_for_every_registered_model() -> None:
    spec = importlib.util.spec_from_file_location("hubconf", REPO / "hubconf.py")
    hubconf = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(hubconf)
    public = {name for name in dir(hubconf) if not name.startswith("_") and callable(getattr(hubconf, name))}
    weights = {name.replace(".", "_") for name in nin.list_pretrained()}
    assert not weights & set(nin.list_models())  # a weights entry never hides a model's
    assert public == set(nin.list_models()) | weights
    assert all(getattr(hubconf, name).__doc__ for name in public)


@pytest.mark.parametrize("name", ["nin_cifar10", "nin_mnist"])
def test_hub_load_local_builds_the_network(name: str) -> None:
    model = torch.hub.load(str(REPO), name, source="local", pretrained=False)
    info = nin.model_info(name)
    assert model(torch.zeros(1, *info.input_size)).shape == (1, info.num_classes)


def test_hub_pretrained_without_shipped_weights_is_a_clear_error() -> None:
    with pytest.raises(WeightsError, match="no pretrained weights are shipped for 'nin_cifar10_fc'"):
        torch.hub.load(str(REPO), "nin_cifar10_fc", source="local", pretrained=True)


def test_safetensors_round_trip_gives_identical_logits(tmp_path) -> None:
    checkpoint = synthetic_checkpoint(tmp_path, ("gcn", "zca"))
    weights = weights_from_checkpoint(checkpoint, tmp_path / "nin_mnist.safetensors")
    assert weights.sidecar == tmp_path / "nin_mnist.json"
    assert (weights.model_name, weights.dataset, weights.input_size) == ("nin_mnist", "mnist", (1, 28, 28))
    assert weights.accuracy is None  # no summary.json beside the checkpoint
    images = synthetic_digits(8, seed=3)[0]
    expected = load_trained(checkpoint).logits(images)
    assert torch.equal(load_weights(tmp_path / "nin_mnist.safetensors").logits(images), expected)


def test_the_sidecar_accuracy_is_the_runs_test_error_subtracted_from_100(tmp_path) -> None:
    """The first test split of summary.json; 91.8, not the float noise of 100 minus the error as a run writes it
    (results/cifar10-aug-authors-bf16-trainvalid: 8.199999999999996, so 91.80000000000001)."""
    checkpoint = synthetic_checkpoint(tmp_path)
    tests = {"test-lossless-1000": {"error": 8.199999999999996, "description": "cifar10 'test-lossless-1000'"},
             "test-jpeg75": {"error": 20.39}}
    (tmp_path / "summary.json").write_text(json.dumps({"tests": tests}))
    weights_from_checkpoint(checkpoint, tmp_path / "w.safetensors")
    sidecar = (tmp_path / "w.json").read_text()
    assert '"accuracy": 91.8,' in sidecar and "\"accuracy_split\": \"cifar10 'test-lossless-1000'\"" in sidecar


@pytest.mark.parametrize("name", nin.list_pretrained())
def test_shipped_weights_load_through_the_hub(name: str) -> None:
    """Each weights entry gives the card's network: raw pixels through its preprocessing by default, the bare
    network with preprocess=False, and the model's own entry with pretrained=True gives the default card."""
    trained = get_pretrained(name).load()
    images = torch.randint(0, 256, (4, *trained.input_size), dtype=torch.uint8)
    whole = torch.hub.load(str(REPO), name.replace(".", "_"), source="local")
    with torch.no_grad():
        torch.testing.assert_close(whole(images.float()), trained.logits(images), rtol=1e-5, atol=1e-6)
        bare = torch.hub.load(str(REPO), name.replace(".", "_"), source="local", preprocess=False)
        assert torch.equal(bare(trained.preprocess(images)), trained.model(trained.preprocess(images)))
    model = name.split(".")[0]
    if get_pretrained(model).name == name:
        default = torch.hub.load(str(REPO), model, source="local", pretrained=True)
        with torch.no_grad():
            torch.testing.assert_close(default(images.float()), trained.logits(images), rtol=1e-5, atol=1e-6)


def test_a_sidecar_without_format_is_refused(tmp_path) -> None:
    (tmp_path / "x.json").write_text("{}")
    with pytest.raises(WeightsError, match="not a nin weights sidecar"):
        read_weights(tmp_path / "x.safetensors")


def test_weights_remember_whether_their_recipe_evaluates_with_flips(tmp_path) -> None:
    """A run scored with test-time flips exports weights that nin eval scores the same way; sidecars written
    before the field existed (the shipped nin_mnist.fast) read as without flips."""
    state = checkpoint_state(synthetic_digits(1024)[0], ("unit",))
    state["recipe"]["test_time_flip"] = True
    save_checkpoint(tmp_path / "flipped.pt", state)
    weights = weights_from_checkpoint(tmp_path / "flipped.pt", tmp_path / "flipped.safetensors")
    assert weights.test_time_flip and load_weights(weights.sidecar).recipe["test_time_flip"] is True
    assert not weights_from_checkpoint(synthetic_checkpoint(tmp_path), tmp_path / "plain.safetensors").test_time_flip
    assert read_weights(get_pretrained("nin_mnist.fast").file).test_time_flip is False
