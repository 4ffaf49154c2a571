"""Parsing of the `:ARGS` suffix of `--config=configs/NAME.py:ARGS`.

`parse_arg('variant=B/8,runlocal', variant='B/16', runlocal=False)` returns a
ConfigDict(variant='B/8', runlocal=True): a bare name means True, values are cast to
the type of their default, and an unknown name is an error listing the known ones.
"""
import ml_collections


def _cast(name: str, value: str, default):
  if isinstance(default, bool):
    if value.lower() in ("1", "true", "yes", ""):
      return True
    if value.lower() in ("0", "false", "no"):
      return False
    raise ValueError(f"Config arg {name}={value!r}: expected a boolean.")
  if default is None:
    return value
  try:
    return type(default)(value)
  except ValueError:
    raise ValueError(f"Config arg {name}={value!r}: expected a {type(default).__name__}.") from None


def parse_arg(arg, **defaults) -> ml_collections.ConfigDict:
  values = dict(defaults)
  for item in (arg or "").split(","):
    item = item.strip()
    if not item:
      continue
    name, sep, value = item.partition("=")
    if name not in defaults:
      raise ValueError(f"Unknown config arg {name!r}; known: {sorted(defaults)}.")
    if sep:
      values[name] = _cast(name, value, defaults[name])
    elif isinstance(defaults[name], bool):
      values[name] = True  # A bare flag such as `runlocal`.
    else:
      raise ValueError(f"Config arg {name!r} needs a value: {name}=VALUE.")
  return ml_collections.ConfigDict(values)


def load(spec: str) -> ml_collections.ConfigDict:
  """Loads 'path/to/config.py[:ARGS]' as `--config=` would (unlocked), e.g. in notebooks."""
  import importlib.util  # pylint: disable=g-import-not-at-top
  import os  # pylint: disable=g-import-not-at-top
  path, _, arg = spec.partition(":")
  if not os.path.exists(path):
    raise FileNotFoundError(f"Config file {path} does not exist.")
  module_spec = importlib.util.spec_from_file_location(
      os.path.splitext(os.path.basename(path))[0], path)
  module = importlib.util.module_from_spec(module_spec)
  module_spec.loader.exec_module(module)
  return module.get_config(arg or None)
