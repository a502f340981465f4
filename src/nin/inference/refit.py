"""Preprocessing fitted again on first use, for weights that leave it out of their file.

The paper's CIFAR-10 network takes GCN + ZCA data. Its whitening matrix is 3,072 × 3,072 (37.7 MB in float32,
ten times the network) and has no compact exact form (``results/zca/``). Weights can record instead which
images the preprocessing was fitted on: dataset, split and the SHA-256 of their pixels. The first load fits it
again from the user's copy of those images, after checking they are the same pixels, and caches the result in
``~/.cache/nin/preprocess/`` (``$XDG_CACHE_HOME/nin/preprocess``). The fit is a deterministic function of the
images, up to float64 rounding, so the refitted preprocessing is the one the network was trained with.
"""
from __future__ import annotations

import hashlib
import json
import os
import sys
from collections.abc import Mapping
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load as load_safetensors
from safetensors.torch import save as save_safetensors

from nin.data import DatasetError, Pipeline, default_root, load_dataset, resolve_root
from nin.errors import NinError
from nin.utils.atomic import atomic_write_bytes

RECORD_KEYS = ("dataset", "split", "images_sha256")


class RefitError(NinError, ValueError):
    """Preprocessing that cannot be fitted again: the images are missing or are not those it was fitted on."""


def images_sha256(images: torch.Tensor) -> str:
    """SHA-256 of a split's pixels, with their shape and type: same images in the same order, same digest."""
    digest = hashlib.sha256(f"{tuple(images.shape)} {images.dtype}\n".encode())
    digest.update(images.contiguous().cpu().numpy().tobytes())
    return digest.hexdigest()


def fit_record(dataset: str, split: str, images: torch.Tensor) -> dict[str, str]:
    """What a weights sidecar keeps of the images its preprocessing was fitted on."""
    return {"dataset": dataset, "split": split, "images_sha256": images_sha256(images)}


def cache_file(pipeline: Pipeline, record: Mapping[str, str]) -> Path:
    """Where the fit of these steps on these images is cached: one file per (steps and arguments, images)."""
    steps = pipeline.unfitted().to_spec()["steps"]
    key = hashlib.sha256(json.dumps({"steps": steps, **record}, sort_keys=True).encode()).hexdigest()[:24]
    return default_root() / "preprocess" / f"{key}.safetensors"


def fitted_tensors(pipeline: Pipeline) -> dict[str, torch.Tensor]:
    """The fitted tensors of every step, by step index and name: what the cache holds."""
    return {f"steps.{i}.{name}": getattr(step, name).contiguous()
            for i, step in enumerate(pipeline.steps) for name in step.fitted_buffers}


def _read_cache(pipeline: Pipeline, path: Path) -> Pipeline | None:
    """The cached fit, or None when there is none or it is damaged (it is then fitted and written again)."""
    try:
        tensors = load_safetensors(path.read_bytes())
    except (OSError, SafetensorError):
        return None
    spec = pipeline.unfitted().to_spec()
    for i, step in enumerate(pipeline.steps):
        for name in step.fitted_buffers:
            tensor = tensors.get(f"steps.{i}.{name}")
            if tensor is None or not torch.isfinite(tensor).all():
                return None
            spec["steps"][i][name] = tensor
    return Pipeline.from_spec(spec)


def refit(pipeline: Pipeline, record: Mapping[str, str], data_dir: str | os.PathLike | None, who: str) -> Pipeline:
    """``pipeline``'s steps fitted on the images ``record`` names, from the cache or from ``data_dir``
    (default ``$NIN_DATA``, else ``~/.cache/nin``); refused if those images are not the recorded ones."""
    dataset, split, expected = (record[key] for key in RECORD_KEYS)
    path = cache_file(pipeline, record)
    cached = _read_cache(pipeline, path)
    if cached is not None:
        return cached
    steps = " + ".join(step.name for step in pipeline.steps)
    try:
        data = load_dataset(dataset, split, root=data_dir)
    except DatasetError as err:  # the loader's remedy speaks load_dataset's words (download=True): say ours
        intro = f"{who}: its preprocessing ({steps}) is fitted on first use from the {dataset} '{split}' images"
        raise RefitError(f"{intro}, and they cannot be loaded from {resolve_root(data_dir)}: fetch them with "
                         f"nin.data.download_dataset({dataset!r}, root) and pass that folder as data_dir= (or set "
                         "$NIN_DATA)", cli=f"{intro}, and they cannot be loaded: {err.cli}") from None
    found = images_sha256(data.images)
    if found != expected:
        problem = (f"{who}: its preprocessing ({steps}) is fitted on first use from the {dataset} '{split}' images, "
                   f"but those found ({data.description}) differ from the ones it was trained with (pixel SHA-256 "
                   f"{found[:12]}..., recorded {expected[:12]}...); use the official {dataset}")
        raise RefitError(f"{problem}: pass its folder as data_dir= or set $NIN_DATA",
                         cli=f"{problem}: pass its folder with --data-dir or set $NIN_DATA")
    print(f"nin: fitting {steps} on {data.description} for {who}, once; cached in {path}", file=sys.stderr)
    fitted = pipeline.unfitted().fit(data.images)
    try:
        atomic_write_bytes(path, save_safetensors(fitted_tensors(fitted)))
    except OSError as err:
        print(f"nin: could not cache the fitted preprocessing in {path} ({err.strerror or err}); it will be "
              "fitted again next time", file=sys.stderr)
    return fitted
