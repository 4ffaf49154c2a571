"""Evaluation inputs: the training data config turned into a fixed, unaugmented split.

  * augmentations are switched off (the simulator would otherwise apply them to every
    split; the TFDS pipeline already does so only for 'train');
  * a labelled pool ('sim_pool', labels_per_class) evaluates on the plain simulator:
    labels limit training, never the test set;
  * the simulator is endless, so a simulated split is the first `num_examples`
    (rounded up to whole batches) of that split's stream: the same examples at every
    evaluation of a run and in every run with the same seed;
  * a TFDS split, 'train' included, is read exactly once (in record order, the last
    batch padded, with 'mask' False on padding; `num_examples` may cap it).
"""
import math

import ml_collections

from lensfm import data as data_lib
from lensfm import utils

_POOL_KEYS = ("labels_per_class", "labels_seed")


def eval_data_config(data_config) -> ml_collections.ConfigDict:
  d = utils.as_dict(data_config)
  if d.get("source") == "sim_pool":
    d["source"] = "sim"
  for k in _POOL_KEYS:
    d.pop(k, None)
  d["augment"] = ""
  return ml_collections.ConfigDict(d)


def make_eval_input(data_config, *, split: str, batch_size: int, sharding, seed: int,
                    num_examples: int):
  """(input, num_batches): num_batches is None for a single-pass TFDS split."""
  config = eval_data_config(data_config)
  source = data_lib.make_input(config, global_batch_size=batch_size, sharding=sharding,
                               seed=seed, split=split, single_pass=True)
  if getattr(source, "num_batches", None) is not None:  # A finite split.
    limit = source.num_batches
    if num_examples:
      limit = min(limit, math.ceil(num_examples / batch_size))
    return source, limit
  if not num_examples or num_examples <= 0:
    raise ValueError(f"Evaluating on the endless {config.source!r} source needs a positive "
                     f"num_examples; got {num_examples!r}.")
  return source, math.ceil(num_examples / batch_size)


def rewind(source) -> None:
  """Back to the first batch, so every evaluation sees the same examples."""
  if hasattr(source, "reset"):
    source.reset()
  else:
    source.set_state({"step": 0})
