"""Recipes: one TOML file per experiment, the single source of truth; the CLI only overrides it."""
from __future__ import annotations

import dataclasses
import sys
import types
import typing
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import torch

from nin.checkpoint import nonfinite
from nin.data import SPLITS, build_pipeline, shares_images
from nin.errors import NinError
from nin.models import create_model, list_models
from nin.models.param_groups import head_weights

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib


class RecipeError(NinError, ValueError):
    """A recipe file or override that cannot be used; the message says what and how to fix it."""


@dataclass
class Recipe:
    """Everything that defines a training run. Percentages are test errors in %."""

    name: str
    description: str
    paper_ref: str  # the table / figure and row the recipe reproduces, or "not in the paper"
    # model
    model: str
    paper_error: float | None = None  # the paper's number for that row, in % (None: not in the paper)
    peer_error: float | None = None  # where the paper has none: a published reference error, in %
    peer_ref: str = ""  # where peer_error comes from
    model_args: dict[str, Any] = field(default_factory=dict)
    # data
    dataset: str = "cifar10"
    train_split: str = "train"
    eval_split: str | None = "valid"  # evaluated after every epoch
    test_splits: list[str] = field(default_factory=lambda: ["test"])  # evaluated at the end
    subset: int | None = None  # the first N training images, for quick runs
    image_size: int | None = None  # dataset "folder" only: the side every image is fitted to (None: 32)
    preprocess: list[Any] = field(default_factory=lambda: ["unit"])
    augment_pad: int = 0
    augment_flip: bool = False
    augment_mode: str = "zero"
    # optimization
    epochs: int = 10
    batch_size: int = 128
    lr: float = 0.1
    momentum: float = 0.9
    nesterov: bool = False
    weight_decay: float = 5e-4
    # the fully connected head's own weight decay (None: weight_decay): cuda-convnet gives every layer its own wc,
    # and the 18pct config, whose layout the conventional CNN extends, decays its fc10 with wc 1, 250x its convolutions'
    head_weight_decay: float | None = None
    label_smoothing: float = 0.0
    # schedule: "paper" (divide by 10 when training error stops improving), "step", "cosine", "onecycle", "constant"
    schedule: str = "constant"
    warmup_epochs: int = 0
    plateau_patience: int = 10  # paper: epochs without a new best training error before dividing
    plateau_min_delta: float = 0.1  # paper: percentage points that count as an improvement
    plateau_max_drops: int = 2  # paper: divide twice, then stop at the next plateau
    milestones: list[int] = field(default_factory=list)  # step: epochs at which the rate is multiplied by gamma
    gamma: float = 0.1
    # paper and step: the drops divide the weights' rates only, the biases' stay (the authors' README edits epsW
    # only); the other schedules have no drops, so it changes nothing there
    hold_bias_rates: bool = False
    # numerics and hardware
    precision: str = "fp32"  # fp32 | bf16 | fp16
    channels_last: bool = False
    device: str = "auto"  # auto | cpu | cuda
    seed: int = 0
    eval_batch_size: int = 500
    cuda_graphs: bool = False  # CUDA only: replay the forward and backward of full batches as a graph (train/graphs.py)
    test_time_flip: bool = False  # evaluate on each image and its mirror image, logits averaged (not the paper's)
    max_minutes: float | None = None  # stop cleanly after the epoch that passes this wall time (a job's time slot)
    save_every: int = 1  # epochs between checkpoints and plots (the last epoch is always saved): short epochs on GPUs

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            _check_range(f.name, getattr(self, f.name), f"recipe {self.name!r}")


_CHOICES = {
    "schedule": ("paper", "step", "cosine", "onecycle", "constant"),
    "precision": ("fp32", "bf16", "fp16"),
    "device": ("auto", "cpu", "cuda"),
    "augment_mode": ("zero", "reflect"),
}
_AT_LEAST_1 = (lambda v: v >= 1, "at least 1")
_AT_LEAST_0 = (lambda v: v >= 0, "at least 0")
_PERCENT = (lambda v: 0 <= v <= 100, "a percentage, from 0 to 100")
# what a number must be to make sense, checked before any work, so that a bad value is not met hours later
_RANGES: dict[str, tuple[Callable[[Any], bool], str]] = {
    "epochs": _AT_LEAST_1, "batch_size": _AT_LEAST_1, "eval_batch_size": _AT_LEAST_1, "save_every": _AT_LEAST_1,
    "plateau_patience": _AT_LEAST_1, "subset": (lambda v: v >= 1, "a positive number of images"),
    "seed": _AT_LEAST_0, "warmup_epochs": _AT_LEAST_0, "augment_pad": _AT_LEAST_0, "plateau_max_drops": _AT_LEAST_0,
    "weight_decay": _AT_LEAST_0, "head_weight_decay": _AT_LEAST_0, "plateau_min_delta": _AT_LEAST_0,
    "lr": (lambda v: v > 0, "positive (the SGD step size)"),
    "momentum": (lambda v: 0 <= v < 1, "at least 0 and below 1 (0.9 is usual; from 1 on, old gradients never fade "
                                      "and training diverges)"),
    "label_smoothing": (lambda v: 0 <= v <= 1, "a probability, from 0 to 1"),
    "gamma": (lambda v: v > 0, "positive"),
    "max_minutes": (lambda v: v > 0, "positive"),
    "paper_error": _PERCENT, "peer_error": _PERCENT,
    "milestones": (lambda v: all(m >= 1 for m in v) and v == sorted(set(v)),
                   "increasing epoch numbers, each at least 1"),
}


def _check_range(key: str, value: Any, where: str) -> None:
    """Refuse a value of the right type that cannot work: NaN or Inf, a negative rate, a probability above 1."""
    bad = nonfinite(value, key)
    if bad:
        name, kind = bad[0]
        raise RecipeError(f"{where}: {name} is {kind}; give a finite number")
    if key in _CHOICES and value not in _CHOICES[key]:
        raise RecipeError(f"{where}: {key} = {value!r}; use one of {', '.join(_CHOICES[key])}")
    if key in _RANGES and value is not None:
        test, what = _RANGES[key]
        if not test(value):
            raise RecipeError(f"{where}: {key} must be {what}, got {value!r}")


_FIELDS = {f.name: f for f in dataclasses.fields(Recipe)}
RECIPE_DEFAULTS = {f.name: f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
                   for f in _FIELDS.values() if f.default is not dataclasses.MISSING
                   or f.default_factory is not dataclasses.MISSING}


def _type_matches(value: Any, annotation: Any) -> bool:
    hint = typing.get_type_hints(Recipe)[annotation] if isinstance(annotation, str) else annotation
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        return any(_type_matches(value, arg) for arg in typing.get_args(hint))
    if hint is type(None):
        return value is None
    if hint is Any:
        return True
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if origin is list:
        (item,) = typing.get_args(hint)
        return isinstance(value, list) and all(_type_matches(v, item) for v in value)
    if origin is dict:
        return isinstance(value, dict)
    return isinstance(value, hint)


def _check(name: str, key: str, value: Any, where: str) -> Any:
    if key not in _FIELDS:
        fetch = " (a download is a command of its own: nin data download NAME)" if key == "download" else ""
        raise RecipeError(f"{where}: unknown recipe key {key!r}{fetch}; known keys: {', '.join(_FIELDS)}")
    hint = typing.get_type_hints(Recipe)[key]
    if not _type_matches(value, hint):
        expected = getattr(hint, "__name__", str(hint)).replace("typing.", "")
        raise RecipeError(f"{where}: {key} = {value!r} has the wrong type; expected {expected}")
    _check_range(key, value, where)
    return float(value) if hint is float and isinstance(value, int) else value


def _check_names(recipe: Recipe, where: str) -> None:
    """Values of the right type must also name something that exists: a dataset, split, model, step."""
    if recipe.dataset not in SPLITS:
        raise RecipeError(f"{where}: dataset = {recipe.dataset!r} is unknown; datasets: {', '.join(SPLITS)}")
    splits = SPLITS[recipe.dataset]
    for key, split in [("train_split", recipe.train_split), ("eval_split", recipe.eval_split),
                       *[("test_splits", s) for s in recipe.test_splits]]:
        if split is not None and split not in splits:
            raise RecipeError(f"{where}: {key} {split!r} is not a split of {recipe.dataset}; splits: {', '.join(splits)}")
    for key, split in [("eval_split", recipe.eval_split), *[("test_splits", s) for s in recipe.test_splits]]:
        if split is not None and shares_images(split, recipe.train_split):
            raise RecipeError(f"{where}: {key} {split!r} shares images with train_split {recipe.train_split!r}, so "
                              "its error would be measured on images the network trained on; use a held-out split "
                              "(a retraining on train+valid, the paper's Section 4.2, has eval_split = \"none\" and "
                              "tests on the test splits)")
    if recipe.image_size is not None and (recipe.dataset != "folder" or recipe.image_size < 1):
        raise RecipeError(f"{where}: image_size = {recipe.image_size} is for dataset = \"folder\" (your own images), "
                          "as a positive number of pixels; the other datasets have their official size")
    if recipe.model not in list_models():
        raise RecipeError(f"{where}: model = {recipe.model!r} is unknown; models: {', '.join(list_models())}")
    try:
        with torch.device("meta"):  # builds the modules without allocating or initializing any weight
            model = create_model(recipe.model, **recipe.model_args)
    except (TypeError, ValueError, RuntimeError) as err:
        raise RecipeError(f"{where}: model_args {recipe.model_args} do not fit {recipe.model}: {err}") from None
    if recipe.head_weight_decay is not None and not head_weights(model):
        raise RecipeError(f"{where}: head_weight_decay = {recipe.head_weight_decay} needs a fully connected head, and "
                          f"{recipe.model} has none (its head has no weights); leave head_weight_decay out")
    try:
        build_pipeline(recipe.preprocess)
    except (ValueError, TypeError) as err:
        raise RecipeError(f"{where}: preprocess = {recipe.preprocess!r}: {err}") from None


def _nullable(key: str) -> bool:
    return key in _FIELDS and type(None) in typing.get_args(typing.get_type_hints(Recipe)[key])


def recipe_from_dict(data: dict[str, Any], where: str) -> Recipe:
    """Validate every key, type and name, then build the recipe. TOML has no null: ``"none"`` stands for
    None in a field that may be None (``eval_split = "none"``: no evaluation after each epoch)."""
    data = {key: None if value == "none" and _nullable(key) else value for key, value in data.items()}
    values = {key: _check(data.get("name", "?"), key, value, where) for key, value in data.items()}
    missing = [f.name for f in _FIELDS.values() if f.name not in values
               and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
    if missing:
        raise RecipeError(f"{where}: missing required recipe keys: {', '.join(missing)}")
    recipe = Recipe(**values)
    _check_names(recipe, where)
    return recipe


def list_recipes() -> list[str]:
    """Names of the recipes shipped with the package."""
    folder = resources.files("nin") / "recipes"
    return sorted(p.name[: -len(".toml")] for p in folder.iterdir() if p.name.endswith(".toml"))


def load_recipe(name_or_path: str) -> Recipe:
    """A shipped recipe by name, or a TOML file by path."""
    path = Path(name_or_path)
    if path.suffix == ".toml" or path.exists():
        if not path.is_file():
            raise RecipeError(f"recipe file {path} does not exist")
        text, where = path.read_text(), str(path)
    else:
        source = resources.files("nin") / "recipes" / f"{name_or_path}.toml"
        if not source.is_file():
            raise RecipeError(f"unknown recipe {name_or_path!r}; shipped recipes: {', '.join(list_recipes())}, "
                              "or give the path of a .toml file")
        text, where = source.read_text(), f"recipe {name_or_path}"
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        raise RecipeError(f"{where} is not valid TOML: {err}") from None
    return recipe_from_dict(data, where)


def _parse_value(text: str) -> Any:
    """A TOML literal (1, 0.5, true, "x", [1, 2]); anything else is taken as a bare string."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def apply_overrides(recipe: Recipe, overrides: Sequence[str | tuple[str, str]]) -> Recipe:
    """Apply ``key=value`` overrides (``model_args.KEY=value`` sets one model argument).

    An override may also come as (option, ``key=value``): its errors then name the option the user typed
    (``--epochs 0``) rather than ``--set``.
    """
    data = dataclasses.asdict(recipe)
    for entry in overrides:
        where, item = entry if isinstance(entry, tuple) else (f"--set {entry}", entry)
        key, sep, text = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise RecipeError(f"--set {item!r}: expected KEY=VALUE, e.g. --set lr=0.05")
        value = None if text.strip().lower() in ("none", "null") else _parse_value(text.strip())
        if key.startswith("model_args."):
            data["model_args"] = {**data["model_args"], key.split(".", 1)[1]: value}
        else:
            data[key] = _check(recipe.name, key, value, where)
    return recipe_from_dict(data, "overrides")


def recipe_to_toml(recipe: Recipe) -> str:
    """Write a recipe back as TOML (for the run folder), so a run can be repeated from its record."""
    lines = []
    for key, value in dataclasses.asdict(recipe).items():
        if value is None:
            if _FIELDS[key].default is None:
                continue  # an absent key means the default, None
            value = "none"
        lines.append(f"{key} = {_toml_value(value)}")
    return "\n".join(lines) + "\n"


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k} = {_toml_value(v)}" for k, v in value.items()) + "}"
    raise TypeError(f"cannot write {value!r} as TOML")
