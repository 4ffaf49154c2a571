"""Data: sources (simulator or files) -> batches of global, sharded jax.Arrays.

The trainer only ever sees `Input` (below): an iterator of dicts of *global* arrays
already laid out with the batch sharding, plus a JSON-able state for exact resume.
Every source (TFDS/grain files, the on-device simulator) is made by `make_input`
from `config.data`, so a new source never touches the trainer.

`config.data` fields common to every source:
  source: 'sim' (on-device simulation, endless) or 'tfds' (ArrayRecord via grain).
  labels_per_class: N > 0 keeps N labelled training examples per class (seeded,
    `labels_seed`): the simulator's training split then becomes the fixed pool of
    `sim_pool`, a TFDS training split a subset of its records.
  image_size, channels: what the model sees (checked against what the source gives).
  normalize: 'zscore' (default) | 'minmax' | 'asinh' | 'standardize' | 'none'.
Source-specific fields are documented in the source's module.
"""
from __future__ import annotations

from typing import Any, Iterator, Protocol

import jax

from lensfm import errors
from lensfm import utils

Batch = dict[str, jax.Array]

# config.data.source -> the file of lensfm/data defining `make(data_config, **kw) -> Input`
# (names stored in configs and checkpoints, so a table: two differ from their files).
SOURCE_FILES = {
    "sim": "sim_source",
    "sim_pool": "sim_pool",
    "sim_mixture": "sim_mixture",  # Same-lens views, instrument mixture.
    "tfds": "pipeline",
}


class Input(Protocol):
  """What the trainer consumes.

  `next()` returns a dict of global jax.Arrays whose leading axis is the global
  batch, sharded with the `sharding` given to `make_input`. `get_state()` returns
  a JSON-serialisable dict; `set_state()` with it makes the iterator continue
  exactly where it was (bit-for-bit identical batches). `close()` releases what the
  input holds (threads, worker processes); it cannot be used afterwards.
  """

  def __iter__(self) -> Iterator[Batch]: ...

  def __next__(self) -> Batch: ...

  def get_state(self) -> dict[str, Any]: ...

  def set_state(self, state: dict[str, Any]) -> None: ...

  def close(self) -> None: ...


def source_name(data_config) -> str:
  """The source that serves `data_config`: labels_per_class on the simulator is the pool."""
  source = data_config.get("source", None)
  if source == "sim" and (data_config.get("labels_per_class", None) or 0) > 0:
    return "sim_pool"
  return source


def make_input(data_config, *, global_batch_size: int,
               sharding: jax.sharding.NamedSharding, seed: int,
               split: str = "train", single_pass: bool = False) -> Input:
  """Builds the input named by `data_config.source`.

  Args:
    data_config: the `config.data` ConfigDict.
    global_batch_size: examples per step over all processes; must divide by the
      number of processes (each process loads only its slice).
    sharding: sharding of the leading (batch) axis over the mesh's data axes.
    seed: makes shuffling, augmentation and simulation reproducible.
    split: which split to read ('train', 'test', ...; sources may map names).
    single_pass: read a finite split exactly once, in record order and unaugmented,
      even 'train' (evaluations); otherwise 'train' is shuffled and endless. Endless
      sources (the simulator) are unchanged: an evaluation takes a fixed number of
      their batches.
  """
  make = utils.plugin("lensfm.data", source_name(data_config), "make", "config.data.source",
                      files=SOURCE_FILES)
  if global_batch_size % jax.process_count():
    raise errors.UserError(
        f"Global batch size {global_batch_size} must be divisible by the number "
        f"of processes ({jax.process_count()}).")
  return make(data_config, global_batch_size=global_batch_size,
              sharding=sharding, seed=seed, split=split, single_pass=single_pass)
