"""Small helpers every floor may use: parameter path names, plain dicts of configs and
atomic JSON writes."""
import json
import os
from typing import Any, Mapping, Optional

import ml_collections


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
