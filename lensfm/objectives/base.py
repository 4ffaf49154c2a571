"""The interface every objective implements; the trainer relies on nothing else."""
from typing import Any

import jax

PyTree = Any


class Objective:
  """A self-supervised (or supervised) objective around a backbone.

  Parameters are a dict whose 'encoder' entry holds the backbone's parameters, so
  downstream tasks can take the encoder from any objective's checkpoint. `extra`
  is objective state that is not trained by gradients (EMA targets, DINO centres);
  it is checkpointed and sharded like the parameters.
  """

  def __init__(self, config, model):
    self.config = config
    self.model = model

  def init(self, rng: jax.Array, batch: dict[str, jax.Array]) -> tuple[PyTree, PyTree]:
    """Returns (params, extra) for a batch of the shapes training will use."""
    raise NotImplementedError

  def loss(self, params, extra, batch, rng, step) -> tuple[jax.Array, tuple[dict, PyTree]]:
    """Returns (scalar loss, (metrics dict of scalars, extra)). Runs inside jit."""
    raise NotImplementedError

  def update_extra(self, params, extra, step) -> PyTree:
    """Called inside jit after the optimizer step (e.g. EMA targets)."""
    del params, step
    return extra

  def visualize(self, params, extra, batch, rng, path: str) -> None:
    """Optionally writes a picture of what the objective does to `path` (a PNG).

    Called on every process with replicated params and a few replicated images; only
    process 0 should write.
    """
    del params, extra, batch, rng, path
