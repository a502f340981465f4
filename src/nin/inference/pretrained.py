"""The registry of pretrained weights shipped with the package: one card per weights file.

In the style of torchvision's weights enums and timm's pretrained configs, a :class:`Pretrained` card says
which network the weights fit, which recipe trained them and which record under ``results/`` holds that run,
the error measured on each split, and the SHA-256 of the files. The files live in ``nin/pretrained/``: the
tensors in ``NAME.safetensors``, the fitted preprocessing's structure and the class names in its sidecar
``NAME.json`` (``nin.inference.weights``), so the weights take raw images when asked to.

Names are ``MODEL.TAG`` (``nin_mnist.fast``); a bare model name means the model's first card below, which is
the paper's procedure where we have one.
"""
from __future__ import annotations

import fnmatch
import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from nin.inference.refit import RefitError
from nin.inference.trained import TrainedModel, load_trained
from nin.inference.weights import WeightsError, load_weights, read_weights
from nin.models import create_model as build_model
from nin.models import list_models

PRETRAINED_DIR = Path(__file__).parent.parent / "pretrained"


@dataclass(frozen=True)
class Pretrained:
    """One shipped weights file and how it was made and measured (errors in %, by split of ``dataset``)."""

    model: str
    tag: str
    recipe: str
    record: str  # the run's record, relative to the repository: results/NAME
    dataset: str
    errors: dict[str, float]  # the record's own numbers: test splits from summary.json, valid from its last epoch
    sha256: str  # of NAME.safetensors
    sidecar_sha256: str  # of NAME.json
    description: str
    paper: str = ""  # the paper's number for the same row, when the recipe follows the paper
    notes: tuple[str, ...] = field(default=())
    recipe_changes: dict[str, object] = field(default_factory=dict)  # the run's --set overrides of the recipe

    @property
    def name(self) -> str:
        return f"{self.model}.{self.tag}"

    @property
    def file(self) -> Path:
        return PRETRAINED_DIR / f"{self.name}.safetensors"

    def load(self, device: str | torch.device = "cpu", data_dir: str | os.PathLike | None = None) -> TrainedModel:
        """The network and its fitted preprocessing, after checking both files against their hashes (``data_dir``:
        where the training images are, for weights whose preprocessing is fitted on first use)."""
        for path, expected in ((self.file, self.sha256), (self.file.with_suffix(".json"), self.sidecar_sha256)):
            try:
                digest = hashlib.sha256(path.read_bytes()).hexdigest()
            except OSError as err:
                raise WeightsError(f"{path}: cannot read the shipped weights of {self.name} ({err.strerror or err}); "
                                   "reinstall the package") from None
            if digest != expected:
                raise WeightsError(f"{path} does not match the SHA-256 its card in nin.inference.pretrained gives for "
                                   f"{self.name}: the file is damaged or was replaced; reinstall the package")
        try:
            return read_weights(self.file).load(device, data_dir)
        except RefitError as err:  # no training images here: point to weights of this model that need none
            carried = [p.name for p in pretrained_for(self.model) if read_weights(p.file).preprocess_fit is None]
            if not carried:
                raise
            hint = f"; or use {carried[0]}, whose preprocessing is in its file"
            raise RefitError(str(err).rstrip(".") + hint, cli=err.cli.rstrip(".") + hint) from None


# Notes shared by the cards of the paper's CIFAR-10 weights.
_CIFAR10_VALID_PROTOCOL = ("trained on the 40,000 'train' images and scored on the other 10,000 ('valid'), the "
                           "paper's own protocol before its retraining on 50,000")
_JPEG75_NOTE = "test-jpeg75 is a lossy copy of the test set; the whitening amplifies its artefacts"
_CIFAR10_TRAINVALID = ("trained on 'train+valid' with no held-out data, as the paper and the authors' README do: its "
                       "error on 'valid' (or 'train') measures images it learned, so score it on the test splits only")
_CIFAR10_TRAINVALID_REFIT = ("the GCN + ZCA is not in the file: it is fitted again on first use from cifar10 "
                             "'train+valid', as for nin_cifar10.paper")

PRETRAINED: tuple[Pretrained, ...] = (
    Pretrained(
        model="nin_mnist", tag="paper", recipe="mnist", record="results/mnist-seed1-warmup2", dataset="mnist",
        errors={"test": 0.51, "valid": 0.41},
        sha256="0bfa82656700779c9589b856fd92abe7a1d489fd0a77aa2f522dd4418c3f07b7",
        sidecar_sha256="3f43ac51ac5d34c00f2b271749185cc0b4024ffd7083cc88b51f724655b3c989",
        description="the paper's network and the authors' own procedure (NIN/mnist_params, the paper's rate rule: "
                    "48 epochs, rates divided after epochs 29 and 37) with a 2-epoch warm-up, bf16 on a 2-core CPU",
        paper="Table 4: 0.47% test error",
        notes=("seed 1 of three runs of the recipe (seeds 0, 1, 2: 0.48%, 0.41%, 0.57% on valid; 0.42%, 0.51%, "
               "0.49% on test): the one with the lowest validation error; pixels / 255, no augmentation, trained on "
               "the first 50,000 training images",),
    ),
    Pretrained(
        model="nin_mnist", tag="fast", recipe="mnist-fast", record="results/mnist-fast", dataset="mnist",
        errors={"test": 0.50, "valid": 0.59},
        sha256="4d607b78dbaf8f4bf499ef86f82e790803b29a4d57320ee166131a8e2c2b0b3d",
        sidecar_sha256="b72206c4dc396e58fda1b91fc111b381657311d8ff66b461570aad90decf3cf7",
        description="BatchNorm variant (not the paper's network), one-cycle schedule, 8 epochs, bf16 on a 2-core CPU",
        paper="Table 4: 0.47% test error (the paper's network and procedure)",
    ),
    Pretrained(
        model="nin_cifar10", tag="aug50k", recipe="cifar10-aug", record="results/cifar10-aug-authors-bf16-trainvalid",
        dataset="cifar10", errors={"test-lossless-1000": 8.20, "test-jpeg75": 20.39},
        recipe_changes={"train_split": "train+valid", "eval_split": None},
        sha256="a8950c44a62d88d69aaeeadf5bd02be1221961bf0657308cca02b226630b505f",
        sidecar_sha256="cff93427af88b5d889d38aa72289249d45bd459a8072ec9bb5b1d797d0cead69",
        description="nin_cifar10.aug's network and procedure, retrained on all 50,000 training images as the "
                    "paper's Section 4.2 does, bf16 on a 2-core CPU",
        paper="Table 1: 8.81% test error with augmentation (after retraining on all 50,000 training images)",
        notes=("the default for nin_cifar10: the paper's whole procedure, its final retraining included, and the "
               "lowest test error of the weights trained with it",
               _CIFAR10_TRAINVALID, _CIFAR10_TRAINVALID_REFIT, _JPEG75_NOTE),
    ),
    Pretrained(
        model="nin_cifar10", tag="aug", recipe="cifar10-aug", record="results/cifar10-aug-authors-bf16",
        dataset="cifar10", errors={"valid": 8.92, "test-lossless-1000": 9.60, "test-jpeg75": 22.22},
        sha256="e88f3d4a500daf36690cefb3c4ea359a7cb457efe8ccd0abcfbfa0d34ef72dd9",
        sidecar_sha256="d8edd8f7b595d017956187a09a796b36d3355adf73ab3551346787fb927ebeea",
        description="the paper's network and the authors' own procedure (NIN/cifar-10_params, their README's "
                    "200 + 30 + 30 epoch schedule), GCN + ZCA, dropout, the paper's translations and flips, bf16 "
                    "on a 2-core CPU",
        paper="Table 1: 8.81% test error with augmentation (after retraining on all 50,000 training images)",
        notes=(_CIFAR10_VALID_PROTOCOL,
               "the GCN + ZCA is not in the file (37.7 MB): it is fitted again on first use, as for "
               "nin_cifar10.paper",
               _JPEG75_NOTE),
    ),
    Pretrained(
        model="nin_cifar10", tag="paper", recipe="cifar10", record="results/cifar10-authors-bf16", dataset="cifar10",
        errors={"valid": 10.66, "test-lossless-1000": 10.30, "test-jpeg75": 20.65},
        sha256="85eb351820d25110fa7923d01db6f23350c7920c64c5d0e01ef53f3cc75bbaeb",
        sidecar_sha256="93ce211763597e07dd65d280b584263bc491792dfa1705b3f9a36298f228418a",
        description="the paper's network and the authors' own procedure (NIN/cifar-10_params, their README's "
                    "200 + 30 + 30 epoch schedule), GCN + ZCA, dropout, no augmentation, bf16 on a 2-core CPU",
        paper="Table 1: 10.41% test error without augmentation (after retraining on all 50,000 training images)",
        notes=(_CIFAR10_VALID_PROTOCOL,
               "the GCN + ZCA is not in the file (37.7 MB): it is fitted again on first use from cifar10 'train' "
               "under data_dir (else $NIN_DATA, else ~/.cache/nin), checked by the pixels' SHA-256, and cached",
               _JPEG75_NOTE),
    ),
    Pretrained(
        model="nin_cifar10", tag="paper50k", recipe="cifar10", record="results/cifar10-authors-bf16-trainvalid",
        dataset="cifar10", errors={"test-lossless-1000": 9.80, "test-jpeg75": 18.58},
        recipe_changes={"train_split": "train+valid", "eval_split": None},
        sha256="e03c5ea65be8f0128b1f8524685ddad0d3d0ef6f3ec7133c945db19778ed4c60",
        sidecar_sha256="40e53030dcca228aa6ce731c41c0ce19cabd683d554cbcde2c5eba4aa466cd1f",
        description="nin_cifar10.paper's network and procedure, retrained on all 50,000 training images as the "
                    "paper's Section 4.2 does, bf16 on a 2-core CPU",
        paper="Table 1: 10.41% test error without augmentation (after retraining on all 50,000 training images)",
        notes=(_CIFAR10_TRAINVALID, _CIFAR10_TRAINVALID_REFIT, _JPEG75_NOTE),
    ),
    Pretrained(
        model="nin_cifar10", tag="fast20", recipe="cifar10-fast20", record="results/cifar10-fast20-seed2",
        dataset="cifar10", errors={"valid": 10.17, "test-lossless-1000": 10.70, "test-jpeg75": 15.62},
        sha256="ef0821f1416afee95ea989862877390232b1d5ac5b8b827b27113217ec6508cb",
        sidecar_sha256="e10d9b691a9d6a6825cdf070dd0d294c8e2db1d1baa84d123af5f559a0f5c80f",
        description="BatchNorm variant (not the paper's network), 13 epochs on the 40,000 training images, "
                    "one-cycle schedule, no dropout, bf16 on a 2-core CPU in 17.7 min; scored with test-time flips",
        paper="Table 1: 10.41% without augmentation, 8.81% with it (the paper's network and procedure)",
        notes=("seed 2 of three runs of the recipe (9.90%, 9.75%, 10.17% on valid): the one trained under the "
               "recipe's own name",),
    ),
)


def list_pretrained(pattern: str | None = None) -> list[str]:
    """Names of the shipped weights (``MODEL.TAG``), optionally filtered by a glob pattern."""
    names = [p.name for p in PRETRAINED]
    return [n for n in names if pattern is None or fnmatch.fnmatch(n, pattern)]


def pretrained_for(model: str) -> list[Pretrained]:
    """The cards of one model, its default first."""
    return [p for p in PRETRAINED if p.model == model]


def get_pretrained(name: str) -> Pretrained:
    """The card of ``MODEL.TAG``, or of a model's default weights for a bare ``MODEL``; a clear error otherwise."""
    for p in PRETRAINED:
        if name == p.name:
            return p
    if name in list_models() and pretrained_for(name):
        return pretrained_for(name)[0]
    have = ", ".join(list_pretrained()) or "none yet"
    if name in list_models():
        raise WeightsError(f"no pretrained weights are shipped for {name!r} (shipped: {have}); train it with "
                           "`nin train --recipe ...`, or use pretrained=False")
    raise WeightsError(f"unknown pretrained weights {name!r}; shipped: {have}")


def open_trained(source: str | os.PathLike, device: str | torch.device = "cpu",
                 data_dir: str | os.PathLike | None = None) -> TrainedModel:
    """A trained network from a ``nin train`` checkpoint, a weights file, or a shipped weights name.

    ``nin eval``, ``predict``, ``explain`` and ``export`` take any of the three, so the shipped weights work out
    of the box: ``nin predict nin_mnist digit.png``. ``data_dir`` is where weights whose preprocessing is fitted
    on first use find their training images (default ``$NIN_DATA``, else ``~/.cache/nin``).
    """
    path = Path(source)
    if path.suffix in (".json", ".safetensors"):
        return load_weights(path, device, data_dir)
    if path.exists() or path.suffix == ".pt" or os.sep in str(source):
        return load_trained(path, device)
    return get_pretrained(str(source)).load(device, data_dir)


def create_model(name: str, pretrained: bool = False, preprocess: bool = True,
                 data_dir: str | os.PathLike | None = None, **kwargs) -> nn.Module:
    """A registered network by name (``nin_cifar10``) or by weights name (``nin_mnist.fast``).

    ``pretrained=True`` loads the shipped weights (a bare model name: its default weights). The network then
    takes raw images, float pixel values 0..255 of shape (N, C, H, W), through the weights' own fitted
    preprocessing, as ``nin predict`` does; ``preprocess=False`` returns the bare network, which expects
    preprocessed input. Without ``pretrained``, ``kwargs`` go to the model's builder (``num_classes``,
    ``batch_norm``, ...); a weights name builds that weights' architecture, untrained. ``data_dir`` is where
    weights whose preprocessing is fitted on first use find their training images (default ``$NIN_DATA``).
    """
    if not pretrained:
        if name not in list_pretrained():  # a model name (or an unknown one, which the registry names alike)
            return build_model(name, **kwargs)
        card = get_pretrained(name)
        return build_model(card.model, **{**read_weights(card.file).model_args, **kwargs})
    card = get_pretrained(name)
    if kwargs:
        raise WeightsError(f"{name}: pretrained=True builds the network the weights were trained as; remove "
                           f"{', '.join(sorted(kwargs))}")
    trained = card.load(data_dir=data_dir)
    return trained.preprocessed() if preprocess else trained.model
