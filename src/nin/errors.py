"""The errors a user can cause and fix; the CLI prints their message without a traceback."""
from __future__ import annotations

from nin.check import CheckError
from nin.data import DatasetError
from nin.export import ExportError
from nin.models.registry import UnknownModelError
from nin.predict import ImageFileError
from nin.quantize import QuantizationError
from nin.reproduce import ExperimentError
from nin.train.checkpoint import CheckpointError
from nin.train.engine import TrainingError
from nin.train.recipe import RecipeError
from nin.weights import WeightsError

EXPECTED_ERRORS: tuple[type[BaseException], ...] = (DatasetError, CheckpointError, TrainingError, RecipeError,
                                                      UnknownModelError, ImageFileError, ExportError, WeightsError,
                                                      ExperimentError, QuantizationError, CheckError)
