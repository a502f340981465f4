"""Training: recipes, the loop and its parts (data, optimizer and schedules, health checks), metrics."""
from nin.train.engine import Trainer
from nin.train.health import TrainingError
from nin.train.recipe import Recipe, RecipeError, apply_overrides, list_recipes, load_recipe

__all__ = ["Recipe", "RecipeError", "Trainer", "TrainingError", "apply_overrides", "list_recipes", "load_recipe"]
