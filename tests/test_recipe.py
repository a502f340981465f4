"""Recipes: every shipped file loads, overrides are checked by key and type."""
from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

import nin
from nin.train.recipe import RecipeError, apply_overrides, list_recipes, load_recipe, recipe_to_toml

REQUIRED = {"mnist", "cifar10", "cifar10-aug", "cifar10-caffe", "cifar100", "svhn", "cifar10-fc", "cifar10-fc-dropout",
            "cifar10-nodropout", "cnn-fc", "cnn-fc-dropout", "cnn-gap", "fashion-mnist", "mnist-fast", "cifar10-fast"}


def test_every_paper_experiment_has_a_recipe() -> None:
    assert REQUIRED <= set(list_recipes())


@pytest.mark.parametrize("name", list_recipes())
def test_recipe_names_a_registered_model_and_its_source(name: str) -> None:
    recipe = load_recipe(name)
    assert recipe.name == name
    assert recipe.model in nin.list_models()
    assert recipe.paper_ref


@pytest.mark.parametrize("name", list_recipes())
def test_recipe_round_trips_through_toml(name: str, tmp_path) -> None:
    recipe = load_recipe(name)
    path = tmp_path / "r.toml"
    path.write_text(recipe_to_toml(recipe))
    assert load_recipe(str(path)) == recipe


def test_a_recipe_without_per_epoch_evaluation_round_trips(tmp_path) -> None:
    recipe = apply_overrides(load_recipe("mnist"), ["eval_split=none", "max_minutes=none"])
    path = tmp_path / "r.toml"
    path.write_text(recipe_to_toml(recipe))
    assert 'eval_split = "none"' in path.read_text()  # an absent key would mean the default, "valid"
    assert load_recipe(str(path)) == recipe and load_recipe(str(path)).eval_split is None


def test_overrides_are_typed() -> None:
    recipe = apply_overrides(load_recipe("mnist"), ["lr=0.5", "epochs=3", "eval_split=none", "model_args.dropout=0.0",
                                                    "test_splits=[\"test\"]", "weight_decay=0"])
    assert (recipe.lr, recipe.epochs, recipe.eval_split) == (0.5, 3, None)
    assert recipe.model_args == {"bias_lr_mult": 2.0, "last_layer_lr_mult": 0.1, "last_layer_bias_lr_mult": 0.2,
                                 "dropout": 0.0}  # one argument added to the recipe's own
    assert recipe.weight_decay == 0.0 and isinstance(recipe.weight_decay, float)


@pytest.mark.parametrize("item, message", [
    ("lrr=0.1", "unknown recipe key 'lrr'"),
    ("lr=fast", "lr = 'fast' has the wrong type; expected float"),
    ("epochs=2.5", "epochs = 2.5 has the wrong type; expected int"),
    ("channels_last=1", "channels_last = 1 has the wrong type; expected bool"),
    ("schedule=linear", "schedule = 'linear'; use one of"),
    ("epochs=0", "epochs must be at least 1"),
    ("lr", "expected KEY=VALUE"),
])
def test_bad_overrides_are_explained(item: str, message: str) -> None:
    with pytest.raises(RecipeError, match=message.replace("(", r"\(").replace("[", r"\[")):
        apply_overrides(load_recipe("mnist"), [item])


@pytest.mark.parametrize("overrides, key", [
    (["train_split=train+valid"], "eval_split 'valid'"),  # the Section 4.2 retraining, forgetting the held-out split
    (["train_split=train+valid", "eval_split=none", 'test_splits=["test", "train"]'], "test_splits 'train'"),
    (["eval_split=train"], "eval_split 'train'"),
    (["train_split=valid", "eval_split=train+valid"], "eval_split 'train\\+valid'"),
])
def test_a_held_out_split_that_overlaps_the_training_split_is_refused(overrides: list[str], key: str) -> None:
    with pytest.raises(RecipeError, match=f"{key} shares images with train_split .*trained on; use a held-out"):
        apply_overrides(load_recipe("cifar10"), overrides)


def test_the_paper_retraining_on_train_plus_valid_is_accepted() -> None:
    recipe = apply_overrides(load_recipe("cifar10"), ["train_split=train+valid", "eval_split=none"])
    assert (recipe.train_split, recipe.eval_split) == ("train+valid", None)
    assert recipe.test_splits == ["test", "test-lossless-1000", "test-jpeg75"]


def test_unknown_recipe_and_bad_files(tmp_path) -> None:
    with pytest.raises(RecipeError, match="unknown recipe 'mnits'.*mnist"):
        load_recipe("mnits")
    bad = tmp_path / "bad.toml"
    bad.write_text("name = [")
    with pytest.raises(RecipeError, match="bad.toml is not valid TOML"):
        load_recipe(str(bad))
    bad.write_text('name = "x"\ndescription = "d"\npaper_ref = "p"\nmodel = "nin_mnist"\nbatchsize = 3\n')
    with pytest.raises(RecipeError, match="unknown recipe key 'batchsize'"):
        load_recipe(str(bad))
    bad.write_text('name = "x"\ndescription = "d"\n')
    with pytest.raises(RecipeError, match="missing required recipe keys: paper_ref, model"):
        load_recipe(str(bad))


def test_a_recipe_without_a_paper_number_prints_its_peer_reference(capsys: pytest.CaptureFixture) -> None:
    from nin.cli import _print_final

    recipe = load_recipe("fashion-mnist-fast")
    assert recipe.paper_error is None and recipe.peer_error == 8.4
    _print_final({"recipe": recipe.name, "epochs_run": 1, "wall_time_s": 60.0, "final": {}, "tests": {},
                  "paper_error": None, "paper_ref": recipe.paper_ref, "peer_error": recipe.peer_error,
                  "peer_ref": recipe.peer_ref})
    assert "no paper number; peer reference: 8.40% (Fashion-MNIST README benchmark" in capsys.readouterr().out


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_the_20_minute_recipe_is_the_one_its_records_ran(seed: int) -> None:
    """docs/speed.md quotes results/cifar10-fast20-seed*; the shipped recipe must train exactly those settings
    (seeds 0 and 1 ran as cifar10-fast with overrides, before the recipe had a name)."""
    record = Path(__file__).resolve().parents[1] / "results" / f"cifar10-fast20-seed{seed}" / "recipe.toml"
    ran = dataclasses.asdict(load_recipe(str(record)))
    shipped = dataclasses.asdict(load_recipe("cifar10-fast20"))
    ignored = {"name", "description", "seed"}
    assert {k: v for k, v in ran.items() if k not in ignored} == {k: v for k, v in shipped.items() if k not in ignored}
    assert ran["seed"] == seed
