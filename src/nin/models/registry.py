"""A timm-style registry: every network of the paper by name."""
from __future__ import annotations

import fnmatch
from collections.abc import Callable
from dataclasses import dataclass

from torch import nn

from nin.errors import NinError

Builder = Callable[..., nn.Module]


@dataclass(frozen=True)
class ModelInfo:
    """What a caller needs to know about a registered network before building it."""

    name: str
    builder: Builder
    input_size: tuple[int, int, int]
    num_classes: int
    paper: str  # where the network appears in the paper (or "not in the paper")
    description: str


_REGISTRY: dict[str, ModelInfo] = {}


class UnknownModelError(NinError, KeyError):
    """A model name that is not registered."""

    def __str__(self) -> str:
        return str(self.args[0])


def register_model(
    *, input_size: tuple[int, int, int], num_classes: int, paper: str
) -> Callable[[Builder], Builder]:
    """Register a builder under its function name; its docstring's first line describes it."""

    def decorate(builder: Builder) -> Builder:
        name = builder.__name__
        if name in _REGISTRY:
            raise ValueError(f"a model named {name!r} is already registered")
        doc = (builder.__doc__ or "").strip().splitlines()
        _REGISTRY[name] = ModelInfo(name, builder, input_size, num_classes, paper, doc[0] if doc else "")
        return builder

    return decorate


def list_models(pattern: str | None = None) -> list[str]:
    """Registered model names, sorted, optionally filtered by a shell-style pattern."""
    names = sorted(_REGISTRY)
    return names if pattern is None else [n for n in names if fnmatch.fnmatchcase(n, pattern)]


def model_info(name: str) -> ModelInfo:
    """The registry entry for ``name``; an unknown name lists the known ones."""
    try:
        return _REGISTRY[name]
    except KeyError:
        raise UnknownModelError(f"unknown model {name!r}; known models: {', '.join(list_models())}") from None


def create_model(name: str, **overrides) -> nn.Module:
    """Build a registered network; keyword overrides go to its builder (e.g. ``num_classes``)."""
    return model_info(name).builder(**overrides)
