"""Small helpers every floor may use: parameter path names, plain dicts of configs, atomic
JSON writes, a config section's defaults, and finding a plug-in by name."""
import importlib
import json
import os
import re
import sys
from typing import Any, Mapping, Optional

import ml_collections

from lensfm import errors


def path_to_str(path) -> str:
  """A parameter's pytree path as 'encoder/block_0/kernel' (what config regexes match)."""
  parts = []
  for key in path:
    for attr in ("key", "name", "idx"):
      if hasattr(key, attr):
        parts.append(str(getattr(key, attr)))
        break
    else:
      parts.append(str(key))
  return "/".join(parts)


def write_json_atomically(path: str, obj: Any) -> None:
  """Writes `obj` as JSON to a temporary file beside `path`, then renames it into place,
  so a reader never sees half a file."""
  tmp = f"{path}.tmp-{os.getpid()}"
  with open(tmp, "w") as f:
    json.dump(obj, f, indent=2, sort_keys=True, default=str)
  os.replace(tmp, path)


def as_dict(config: Optional[Mapping]) -> dict:
  """A ConfigDict, FrozenConfigDict, mapping or None as a plain dict."""
  if isinstance(config, (ml_collections.ConfigDict, ml_collections.FrozenConfigDict)):
    return config.to_dict()
  return dict(config or {})


def with_defaults(section, defaults: Mapping[str, Any]) -> ml_collections.ConfigDict:
  """`section` of a config (e.g. config.objective; None for none) with the fields it
  lacks taken from `defaults`: the one place a plug-in states its defaults, so that the
  configs of old checkpoints and of tests, written before a field existed, still run."""
  return ml_collections.ConfigDict({**defaults, **as_dict(section)})

def plugin_names(package: str, attr: str) -> list[str]:
  """The plug-ins of `package` (e.g. 'lensfm.models'): its files that define `attr` at
  the top level (read as text, nothing imported), less base.py (a kind's interface)."""
  directory = os.path.join(os.path.dirname(os.path.abspath(__file__)),
                           *package.split(".")[1:])
  defines = re.compile(rf"^(class|def) {attr}\b|^{attr}\s*[:=]", re.M)
  names = []
  for f in sorted(os.listdir(directory)):
    if f.endswith(".py") and not f.startswith("_") and f != "base.py":
      with open(os.path.join(directory, f)) as source:
        if defines.search(source.read()):
          names.append(f[:-len(".py")])
  return names


def plugin(package: str, name: Any, attr: str, field: str,
           files: Optional[Mapping[str, str]] = None) -> Any:
  """`attr` of the plug-in file `<package>.<name>` (e.g. the `Model` of
  lensfm/models/vit.py), imported only when asked for: every kind of plug-in (backbone,
  objective, evaluator, data source, dataset builder, task) is one file named by a config
  field. `files` maps names to file names where the two differ (names stored in old
  configs); it then lists every name. A module already imported under the package's
  name (a test's probe objective registers itself so) counts as a file.

  Raises errors.UserError naming `field` (e.g. 'config.model.name'), the bad value, the
  available names and the closest one.
  """
  available = sorted(files) if files is not None else plugin_names(package, attr)
  if isinstance(name, str) and name in available:
    module = files[name] if files is not None else name
    return getattr(importlib.import_module(f"{package}.{module}"), attr)
  registered = sys.modules.get(f"{package}.{name}") if files is None else None
  if isinstance(name, str) and hasattr(registered, attr):
    return getattr(registered, attr)
  raise errors.UserError(f"{field}={name!r} is not one of {available}."
                         + errors.did_you_mean(name, available))
