"""Shipped weights: a safetensors file of tensors plus a JSON sidecar saying what they are.

In the spirit of torchvision's weight enums, a :class:`Weights` record carries everything needed to
use the tensors correctly: the network and its arguments, the recipe that trained it, the accuracy
measured and on which split, the class names and the fitted preprocessing. The preprocessing's
tensors (a ZCA matrix, say) live in the safetensors file under ``preprocess/…`` keys and the JSON
holds its structure, so loading never unpickles anything.

``nin export CHECKPOINT --format safetensors`` writes them from a checkpoint; the weights shipped with
the package are such files, listed with their measured errors in ``nin.inference.pretrained``.
"""
from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load as load_safetensors
from safetensors.torch import save as save_safetensors

from nin.checkpoint import describe_nonfinite, load_checkpoint, nonfinite
from nin.data import SPLITS, Pipeline, build_pipeline
from nin.errors import NinError
from nin.inference.refit import RECORD_KEYS, fit_record, fitted_tensors, refit
from nin.inference.trained import TrainedModel, check_input_size, trained_from_state
from nin.models import create_model, model_info
from nin.utils.atomic import atomic_write_all

FORMAT = "nin-weights-v1"
_TENSOR = "__tensor__"  # a JSON placeholder {"__tensor__": key} for a tensor stored in the safetensors file


class WeightsError(NinError, ValueError):
    """Weights that are missing or unusable; the message names the file and what to do."""


@dataclass(frozen=True)
class Weights:
    """What a weights file holds and how it was measured (accuracy in %, on ``accuracy_split``)."""

    model_name: str
    model_args: dict[str, Any]
    file: str  # the safetensors file, relative to the sidecar's folder
    recipe: str
    dataset: str
    accuracy: float | None
    accuracy_split: str | None
    classes: list[str]
    input_size: tuple[int, int, int]
    preprocess: dict[str, Any]  # Pipeline.to_spec() with tensors replaced by placeholders
    test_time_flip: bool = False  # the recipe evaluated each image and its mirror image: nin eval does too
    # the images the preprocessing was fitted on (nin.inference.refit.fit_record), when its fitted tensors are
    # left out of the file and fitted again on first use; None: they are in the file
    preprocess_fit: dict[str, str] | None = None
    # the split the network trained on, so that nin eval can say when a split holds those images; None: not known
    # (weights_from_state_dict not told, or a sidecar written before the field)
    train_split: str | None = None
    sidecar: Path | None = None  # where the record was read from (None: not yet written)

    def load(self, device: str | torch.device = "cpu", data_dir: str | os.PathLike | None = None) -> TrainedModel:
        """The network in eval mode with these weights, and its fitted preprocessing (fitted on first use from
        the images under ``data_dir`` when the file leaves it out; default ``$NIN_DATA``, else the cache)."""
        if self.sidecar is None:
            raise WeightsError(f"weights for {self.model_name} have no file yet; write them with save_weights")
        path = self.sidecar.parent / self.file
        try:
            tensors = load_safetensors(path.read_bytes())
        except (FileNotFoundError, SafetensorError) as err:
            raise WeightsError(f"{path}: cannot read the weights ({err}); export them again with "
                               "`nin export CHECKPOINT --format safetensors`") from None
        except OSError as err:
            raise WeightsError(f"cannot read {path}: {err.strerror}; check its permissions and those of its "
                               "folders") from None
        bad = [found for key, tensor in tensors.items() for found in nonfinite(tensor, key)]
        if bad:
            raise WeightsError(f"{path} holds {describe_nonfinite(bad)}, so every result would be meaningless; "
                               "export the weights again from a good checkpoint")
        prefix = "model."
        state = {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}
        try:
            model = create_model(self.model_name, num_classes=len(self.classes), **self.model_args)
            model.load_state_dict(state)
            preprocess = Pipeline.from_spec(_restore(self.preprocess, tensors))
        except (KeyError, RuntimeError, ValueError, TypeError) as err:
            raise WeightsError(f"{path} does not fit {self.model_name} as described by {self.sidecar}: {err}") from None
        if self.preprocess_fit is not None and not preprocess.fitted:
            preprocess = refit(preprocess, self.preprocess_fit, data_dir, str(self.sidecar))
        model.eval()
        input_size = check_input_size(model, list(self.input_size), str(self.sidecar))
        recipe = {"name": self.recipe, "test_time_flip": self.test_time_flip}
        if self.train_split is not None:
            recipe["train_split"] = self.train_split
        return TrainedModel(model.to(device), self.model_name, dict(self.model_args), preprocess, list(self.classes),
                            self.dataset, input_size, recipe, [])


def _strip(value: Any, key: str, tensors: dict[str, torch.Tensor]) -> Any:
    """``value`` as JSON-able data; its tensors go to ``tensors`` under ``key``-derived names."""
    if isinstance(value, torch.Tensor):
        tensors[key] = value.detach().cpu().contiguous()
        return {_TENSOR: key}
    if isinstance(value, dict):
        return {str(k): _strip(v, f"{key}.{k}", tensors) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_strip(v, f"{key}.{i}", tensors) for i, v in enumerate(value)]
    return value


def _restore(value: Any, tensors: dict[str, torch.Tensor]) -> Any:
    if isinstance(value, dict):
        if set(value) == {_TENSOR}:
            return tensors[value[_TENSOR]]
        return {k: _restore(v, tensors) for k, v in value.items()}
    if isinstance(value, list):
        return [_restore(v, tensors) for v in value]
    return value


def save_weights(trained: TrainedModel, path: str | os.PathLike, accuracy: float | None = None,
                 accuracy_split: str | None = None, preprocess_fit: Mapping[str, str] | None = None) -> Weights:
    """Write ``path`` (.safetensors) and its sidecar ``path`` with suffix .json; returns the record.

    With ``preprocess_fit`` (:func:`nin.inference.refit.fit_record` of the images the preprocessing was fitted
    on) the fitted tensors stay out of the file and are fitted again on first use.
    """
    path = Path(path)
    if path.suffix != ".safetensors":
        raise WeightsError(f"{path}: weights files end in .safetensors")
    tensors = {f"model.{k}": v.detach().cpu().contiguous() for k, v in trained.model.state_dict().items()}
    stored = trained.preprocess if preprocess_fit is None else trained.preprocess.unfitted()
    preprocess = _strip(stored.to_spec(), "preprocess", tensors)
    model_name = trained.model_name
    record = Weights(model_name, dict(trained.model_args), path.name, str(trained.recipe.get("name", "unknown")),
                     trained.dataset, accuracy, accuracy_split, list(trained.classes), tuple(trained.input_size),
                     preprocess, bool(trained.recipe.get("test_time_flip", False)),
                     dict(preprocess_fit) if preprocess_fit is not None else None, trained.recipe.get("train_split"))
    sidecar = path.with_suffix(".json")
    payload = save_safetensors(tensors, metadata={"format": FORMAT, "model_name": model_name})
    fields = {k: v for k, v in asdict(record).items() if k != "sidecar"}
    text = json.dumps({"format": FORMAT, **fields}, indent=2) + "\n"
    # both or neither: new weights beside an old sidecar would load with another network's classes and accuracy
    atomic_write_all({path: lambda f: f.write(payload), sidecar: lambda f: f.write(text.encode())})
    return read_weights(sidecar)


def read_weights(path: str | os.PathLike) -> Weights:
    """The record of a sidecar ``.json`` (or of the ``.safetensors`` file beside it)."""
    sidecar = Path(path).with_suffix(".json")
    try:
        data = json.loads(sidecar.read_text())
    except FileNotFoundError:
        raise WeightsError(f"{sidecar} does not exist: weights need their JSON sidecar next to the "
                           ".safetensors file") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise WeightsError(f"{sidecar} is unreadable ({err}); export the weights again") from None
    except OSError as err:
        raise WeightsError(f"cannot read {sidecar}: {err.strerror}; check its permissions and those of its "
                           "folders") from None
    if not isinstance(data, dict) or data.pop("format", None) != FORMAT:
        raise WeightsError(f"{sidecar} is not a nin weights sidecar (expected format {FORMAT!r})")
    try:
        weights = Weights(**{**data, "input_size": tuple(data["input_size"])}, sidecar=sidecar)
    except (TypeError, KeyError) as err:
        raise WeightsError(f"{sidecar} lacks or has unknown fields ({err}); export the weights again") from None
    fit = weights.preprocess_fit
    if fit is not None and not (isinstance(fit, dict) and all(isinstance(fit.get(k), str) for k in RECORD_KEYS)):
        raise WeightsError(f"{sidecar}: preprocess_fit must name the {', '.join(RECORD_KEYS)} of the images the "
                           "preprocessing is fitted on; export the weights again")
    if not isinstance(weights.train_split, (str, type(None))):
        raise WeightsError(f"{sidecar}: train_split must name the split the network trained on, or be null if not "
                           f"known, not {weights.train_split!r}")
    return weights


def load_weights(path: str | os.PathLike, device: str | torch.device = "cpu",
                 data_dir: str | os.PathLike | None = None) -> TrainedModel:
    """Load weights from a ``.safetensors`` file and its JSON sidecar (``data_dir``: see :meth:`Weights.load`)."""
    return read_weights(path).load(device, data_dir)


def _measured_accuracy(checkpoint: Path) -> tuple[float | None, str | None]:
    """Test accuracy from the run's ``summary.json`` beside the checkpoint, if there is one."""
    summary = checkpoint.parent / "summary.json"
    try:
        tests = json.loads(summary.read_text()).get("tests", {})
    except (OSError, json.JSONDecodeError, AttributeError):
        return None, None
    for split, result in tests.items():
        if isinstance(result, dict) and "error" in result:  # rounded: 100 - 8.2 is 91.80000000000001 in floats
            return round(100.0 - float(result["error"]), 6), result.get("description", split)
    return None, None


def weights_from_checkpoint(checkpoint: str | os.PathLike, path: str | os.PathLike, refit_preprocess: bool = False,
                            data_dir: str | os.PathLike | None = None) -> Weights:
    """Turn a ``nin train`` checkpoint into shipped-weights files; the accuracy comes from its summary.json.

    ``refit_preprocess`` leaves the fitted preprocessing out of the file (CIFAR-10's ZCA: 37.7 MB); it is
    fitted again on first use from the run's training split, read now from ``data_dir`` (else the root the run
    recorded) to record its pixels' digest and to check that a refit gives the fit the network was trained with.
    """
    checkpoint = Path(checkpoint)
    state = load_checkpoint(checkpoint)
    trained = trained_from_state(state, checkpoint)
    accuracy, split = _measured_accuracy(checkpoint)
    fit = _checked_fit_record(trained, data_dir, str(checkpoint)) if refit_preprocess else None
    return save_weights(trained, path, accuracy, split, fit)


def _checked_fit_record(trained: TrainedModel, data_dir: str | os.PathLike | None, who: str) -> dict[str, str]:
    """The record of the training images, once a fit on them has been seen to give the stored preprocessing."""
    stored = fitted_tensors(trained.preprocess)
    if not stored:
        steps = " + ".join(step.name for step in trained.preprocess.steps)
        problem = f"{who}: its preprocessing ({steps}) has nothing fitted to leave out"
        raise WeightsError(f"{problem}; export it with refit_preprocess=False",
                           cli=f"{problem}; export it without --refit-preprocess")
    split = str(trained.recipe.get("train_split", "train"))
    data = trained.load_split(split, data_dir)
    again = fitted_tensors(trained.preprocess.unfitted().fit(data.images))
    for key, tensor in stored.items():
        if not torch.allclose(again[key], tensor, rtol=1e-4, atol=1e-5 * float(tensor.abs().max())):
            problem = (f"{who}: its preprocessing fitted again on {data.description} differs from the one it was "
                       f"trained with ({key}): these are not its training images")
            raise WeightsError(f"{problem}; pass the run's data folder as data_dir=",
                               cli=f"{problem}; give the run's data folder with --data-dir")
    return fit_record(trained.dataset, split, data.images)


def weights_from_state_dict(state_dict: Mapping[str, torch.Tensor], model_name: str, path: str | os.PathLike, *,
                            model_args: Mapping[str, Any] | None = None, classes: Sequence[str] | None = None,
                            preprocess: Pipeline | Sequence[str | Mapping[str, Any]] = ("unit",),
                            dataset: str = "own", input_size: Sequence[int] | None = None,
                            train_split: str | None = None) -> Weights:
    """Wrap a plain ``state_dict`` of a registered network (``nin models``) into a weights file, ``path``
    (.safetensors) and its JSON sidecar, which ``nin predict``, ``nin explain``, ``nin eval`` and
    :func:`load_weights` take: the way in for weights trained elsewhere, since nin never unpickles what
    ``torch.save`` wrote of anything but its own checkpoints.

    ``preprocess`` turns 0..255 pixels into what the network was trained on: a fitted :class:`Pipeline`, or
    recipe steps that need no fitting (default ``["unit"]``: pixels / 255). ``classes`` default to "0".."K-1"
    with K the registry's class count, ``input_size`` to the registry's. ``dataset`` names one of nin's datasets
    if the network was trained on it, so that ``nin eval`` can score it there; ``train_split`` names the split of
    it the network trained on, so that ``nin eval`` warns when a split holds those images.
    """
    info = model_info(model_name)
    args = dict(model_args or {})
    names = list(classes) if classes is not None else [str(i) for i in range(args.get("num_classes", info.num_classes))]
    args.pop("num_classes", None)
    if train_split is not None and dataset not in SPLITS:
        raise WeightsError(f"train_split {train_split!r} names a split of one of nin's datasets, and dataset "
                           f"{dataset!r} is none of them ({', '.join(SPLITS)}); pass dataset=, or leave out "
                           "train_split")
    if train_split is not None and train_split not in SPLITS[dataset]:
        raise WeightsError(f"train_split {train_split!r} is no split of dataset {dataset!r} (its splits: "
                           f"{', '.join(SPLITS[dataset])}); pass the split the network trained on, or leave it out")
    bad = [found for key, tensor in state_dict.items() for found in nonfinite(tensor, key)]
    if bad:
        raise WeightsError(f"the state_dict holds {describe_nonfinite(bad)}; these weights cannot be used")
    try:
        model = create_model(model_name, num_classes=len(names), **args)
        model.load_state_dict(state_dict)
        pipeline = preprocess if isinstance(preprocess, Pipeline) else build_pipeline(list(preprocess))
    except (RuntimeError, TypeError, ValueError) as err:
        raise WeightsError(f"the state_dict does not fit {model_name} with model_args {args}: {err}") from None
    if not pipeline.fitted:
        raise WeightsError("the preprocessing has steps that must be fitted on the training images first: pass "
                           "build_pipeline(steps).fit(training_images) as preprocess")
    model.eval()
    size = check_input_size(model, list(input_size or info.input_size), f"input_size for {model_name}")
    recipe = {"name": f"own state_dict of {model_name}"}
    if train_split is not None:
        recipe["train_split"] = train_split
    trained = TrainedModel(model, model_name, args, pipeline, names, dataset, size, recipe, [])
    return save_weights(trained, path)
