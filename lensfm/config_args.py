"""Parsing of the `:ARGS` suffix of `--config=configs/NAME.py:ARGS`.

`parse_arg('variant=B/8,runlocal', variant='B/16', runlocal=False)` returns a
ConfigDict(variant='B/8', runlocal=True): a bare name means True, values are cast to
the type of their default, and an unknown name is an error listing the known ones.
`check_config_file` and `check_overrides` name a missing config file or a misspelt
`--config.<field>` with a suggestion. Every error here is a `lensfm.errors.UserError`.
"""
import glob
import importlib.util
import os

import ml_collections

from lensfm import errors


def _cast(name: str, value: str, default):
  if isinstance(default, bool):
    if value.lower() in ("1", "true", "yes", ""):
      return True
    if value.lower() in ("0", "false", "no"):
      return False
    raise errors.UserError(f"Config arg {name}={value!r}: expected a boolean.")
  if default is None:
    return value
  try:
    return type(default)(value)
  except ValueError:
    raise errors.UserError(
        f"Config arg {name}={value!r}: expected a {type(default).__name__}.") from None


def parse_arg(arg, **defaults) -> ml_collections.ConfigDict:
  values = dict(defaults)
  for item in (arg or "").split(","):
    item = item.strip()
    if not item:
      continue
    name, sep, value = item.partition("=")
    if name not in defaults:
      raise errors.UserError(f"Unknown config arg {name!r}; known: {sorted(defaults)}."
                             + errors.did_you_mean(name, defaults))
    if sep:
      values[name] = _cast(name, value, defaults[name])
    elif isinstance(defaults[name], bool):
      values[name] = True  # A bare flag such as `runlocal`.
    else:
      raise errors.UserError(f"Config arg {name!r} needs a value: {name}=VALUE.")
  return ml_collections.ConfigDict(values)


def config_files(directory: str) -> list[str]:
  """The config files in `directory`: Python files that define get_config, sorted."""
  def defines_get_config(path):
    with open(path, encoding="utf-8") as f:
      return "def get_config(" in f.read()
  return [p for p in sorted(glob.glob(os.path.join(directory, "*.py"))) if defines_get_config(p)]


def check_config_file(path: str) -> None:
  """Fails naming `path` (and the closest config beside it) when it does not exist."""
  if os.path.isfile(path):
    return
  directory = os.path.dirname(path) or "."
  known = config_files(directory)
  listing = (f" Configs in {directory}/: {', '.join(os.path.basename(k) for k in known)}."
             if known else "")
  raise errors.MissingFileError(f"Config file {path} does not exist."
                                + errors.did_you_mean(path, known) + listing)


def check_overrides(config, fields) -> None:
  """Fails naming the first of `fields` ('optim.base_lr', ...) that `config` lacks.

  What ml_collections reports for a misspelt `--config.<field>` on a locked config,
  as one line with a suggestion; fields that exist pass (their values are checked by
  the flag parser).
  """
  for field in fields:
    node, walked = config, "config"
    for key in field.split("."):
      if not isinstance(node, (ml_collections.ConfigDict, dict)):
        break  # Inside a tuple or a value: ml_collections' parser judges the rest.
      if key not in node:
        raise errors.UserError(
            f"--config.{field}: {walked} has no field {key!r}."
            f"{errors.did_you_mean(key, node.keys())} Fields of {walked}: "
            f"{', '.join(sorted(node.keys()))}.")
      node, walked = node[key], f"{walked}.{key}"


def load(spec: str) -> ml_collections.ConfigDict:
  """Loads 'path/to/config.py[:ARGS]' as `--config=` would (unlocked), e.g. in notebooks."""
  path, _, arg = spec.partition(":")
  check_config_file(path)
  module_spec = importlib.util.spec_from_file_location(
      os.path.splitext(os.path.basename(path))[0], path)
  module = importlib.util.module_from_spec(module_spec)
  module_spec.loader.exec_module(module)
  return module.get_config(arg or None)
