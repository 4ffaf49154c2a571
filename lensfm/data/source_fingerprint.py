"""What a dataset build was made from, so that a build of another source is never reused.

A build directory holds FILE: the builder, its version, the content-deciding arguments
and, for builds from files (deeplense), every source file's path relative to
manual_dir, size and modification time. `lensfm.data.build` compares it with the
source asked for before reusing a build.
"""
from __future__ import annotations

import json
import os
from typing import Any, Optional

FILE = "lensfm_source.json"
_SHOWN = 5


def of_directory(root: str) -> dict[str, list[int]]:
  """{relative path: [size, mtime_ns]} of every non-hidden file under `root`."""
  files = {}
  for directory, subdirs, names in os.walk(root):
    subdirs[:] = sorted(d for d in subdirs if not d.startswith("."))
    for name in names:
      if name.startswith("."):
        continue
      path = os.path.join(directory, name)
      info = os.stat(path)
      files[os.path.relpath(path, root)] = [info.st_size, info.st_mtime_ns]
  return files


def make(builder: str, version: str, args: dict[str, Any],
         manual_dir: Optional[str]) -> dict[str, Any]:
  """The fingerprint of a source (`manual_dir` None: no source files)."""
  fingerprint = {"builder": builder, "version": version,
                 "args": json.loads(json.dumps(args, sort_keys=True, default=str))}
  if manual_dir is not None:
    fingerprint["manual_dir"] = manual_dir
    fingerprint["files"] = of_directory(manual_dir)
  return fingerprint


def write(build_path: str, fingerprint: dict[str, Any]) -> None:
  tmp = os.path.join(build_path, f".{FILE}.tmp-{os.getpid()}")
  with open(tmp, "w") as f:
    json.dump(fingerprint, f, sort_keys=True)
  os.replace(tmp, os.path.join(build_path, FILE))


def read(build_path: str) -> Optional[dict[str, Any]]:
  path = os.path.join(build_path, FILE)
  if not os.path.isfile(path):
    return None
  try:
    with open(path) as f:
      return json.load(f)
  except (OSError, ValueError):
    return None  # Unreadable: as good as absent (the build is not trusted).


def differences(stored: Optional[dict], current: dict) -> list[str]:
  """Why `stored` is not `current`, in words ([] when they match).

  Where the files are is not compared (a moved copy with the same files is the
  same source); what is in them, by size and modification time, is.
  """
  if stored is None:
    return ["the build records no source fingerprint"]
  reasons = [f"{key} {stored.get(key)!r} (now {current.get(key)!r})"
             for key in ("builder", "version", "args") if stored.get(key) != current.get(key)]
  old, new = stored.get("files"), current.get("files")
  if (old is None) != (new is None):
    reasons.append("one of them was built from files, the other not")
  elif old is not None:
    added = sorted(set(new) - set(old))
    removed = sorted(set(old) - set(new))
    changed = sorted(k for k in set(old) & set(new) if old[k] != new[k])
    for what, names in (("new", added), ("missing", removed), ("changed", changed)):
      if names:
        shown = ", ".join(names[:_SHOWN]) + (", ..." if len(names) > _SHOWN else "")
        reasons.append(f"{len(names)} {what} file(s) in manual_dir ({shown})")
  return reasons
