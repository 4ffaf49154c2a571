"""Every simulator recipe by name: DeepLense's (`recipes`) and the realistic skies
(`realistic`). What `config.data.recipe` names is looked up here."""
from typing import Any

from lensfm import errors
from lensfm.sim import realistic
from lensfm.sim import recipes

RECIPES = {**recipes.RECIPES, **realistic.RECIPES}
PIXEL_SCALES = {**recipes.PIXEL_SCALES, **realistic.PIXEL_SCALES}


def get(name: str, **overrides: Any) -> recipes.Recipe:
  """The recipe `name` with keyword overrides; a clear error for an unknown name."""
  if name in realistic.RECIPES:
    return realistic.get(name, **overrides)
  if name not in recipes.RECIPES:
    raise errors.UserError(f"config.data.recipe={name!r} is not a simulator recipe; the "
                           f"recipes are {sorted(RECIPES)}." + errors.did_you_mean(name, RECIPES))
  return recipes.get(name, **overrides)
