"""Training: recipe schema, loop, optimizer/schedule, checkpoints and resume, distributed."""

from __future__ import annotations

from growlm.train.recipe import Recipe, load_recipe, recipe_from_dict

__all__ = ["Recipe", "load_recipe", "recipe_from_dict"]
