"""Training: recipes, the loop, schedules, checkpoints and metrics."""
from nin.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from nin.train.engine import Trainer, TrainingError
from nin.inference.evaluate import EvalResult, evaluate
from nin.train.recipe import Recipe, RecipeError, apply_overrides, list_recipes, load_recipe

__all__ = ["CheckpointError", "EvalResult", "Recipe", "RecipeError", "Trainer", "TrainingError", "apply_overrides",
           "evaluate", "list_recipes", "load_checkpoint", "load_recipe", "save_checkpoint"]
