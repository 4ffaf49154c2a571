"""JAX's persistent compilation cache: a repeated or resumed run loads its compiled steps.

Where the cache lives, first match wins:
  1. the `path` argument (`config.compilation_cache_dir` in a run), if not None;
  2. the environment variable LENSFM_COMPILATION_CACHE;
  3. $XDG_CACHE_HOME/lensfm/jax (default ~/.cache/lensfm/jax).
The value 'off' (or '') turns the cache off. Entries are keyed by the program, the JAX
and XLA versions, the device kind and XLA's flags, so a changed model or setting simply
compiles anew; deleting the directory is always safe.
"""
import os
from typing import Optional

import jax

ENV = "LENSFM_COMPILATION_CACHE"
# Cache programs whose compilation took at least this long: the step and the simulator,
# not the many sub-second helper functions.
MIN_COMPILE_SECS = 0.5


def default_dir() -> str:
  root = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
  return os.path.join(root, "lensfm", "jax")


def resolve(path: Optional[str] = None) -> Optional[str]:
  """The cache directory to use, or None when the cache is off."""
  if path is None:
    path = os.environ.get(ENV, default_dir())
  path = str(path).strip()
  if path.lower() in ("", "off", "none", "false", "0"):
    return None
  return os.path.abspath(os.path.expanduser(path))


def enable(path: Optional[str] = None) -> Optional[str]:
  """Points JAX's persistent cache at `path` (see the module docstring); returns it."""
  directory = resolve(path)
  if directory is None:
    jax.config.update("jax_enable_compilation_cache", False)
    return None
  os.makedirs(directory, exist_ok=True)
  jax.config.update("jax_enable_compilation_cache", True)
  jax.config.update("jax_compilation_cache_dir", directory)
  jax.config.update("jax_persistent_cache_min_compile_time_secs", MIN_COMPILE_SECS)
  jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
  return directory
