"""What evaluators and evaluation tasks share: running a jitted function over batches."""
import os
from typing import Iterable, Optional

import jax
from jax.experimental import multihost_utils
import numpy as np


def to_host(tree):
  """Global arrays as numpy on every process (gathered when there are several)."""
  if jax.process_count() > 1:
    tree = multihost_utils.process_allgather(tree, tiled=True)
  return jax.tree.map(np.asarray, jax.device_get(tree))


def collect(eval_fn, params, extra, batches: Iterable[dict], num_batches: Optional[int] = None
            ) -> tuple[dict[str, np.ndarray], Optional[dict]]:
  """Concatenated per-example outputs of the real (mask True) examples, and the first batch.

  `eval_fn(params, extra, batch)` -> {name: [B, ...]} (a downstream objective's
  `eval_outputs`, jitted). `num_batches`: stop after that many (needed for endless
  sources such as the simulator); None reads until the source ends (a TFDS split).
  """
  parts, first = [], None
  for i, batch in enumerate(batches):
    if num_batches is not None and i >= num_batches:
      break
    out = to_host(eval_fn(params, extra, batch))
    mask = to_host(batch["mask"]) if "mask" in batch else None
    if mask is not None:
      out = {k: v[mask] for k, v in out.items()}
    parts.append(out)
    if first is None:
      first = batch
  if not parts:
    raise ValueError("The evaluation data yielded no batches.")
  return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}, first


def figure_path(directory: str, prefix: str = ""):
  """name -> DIRECTORY/PREFIXname.png, for `DownstreamObjective.plots`."""
  os.makedirs(directory, exist_ok=True)
  return lambda name: os.path.join(directory, f"{prefix}{name}.png")
