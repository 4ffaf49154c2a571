"""Task 'finetune': the training loop around a supervised objective, for downstream tasks.

It is task 'pretrain' after two preparations that only downstream runs need:
  1. The config adopts `config.init_from`'s backbone and input grid (any checkpoint, or a
     shipped one such as 'lensfm:tiny'; `loading.adopt_init_from`; mode 'scratch' keeps
     the backbone, not the weights), then it is checked before anything compiles.
  2. The objective fills the config fields that depend on the data
     (`DownstreamObjective.prepare_config`: regression target statistics), so the
     checkpoint carries them to evaluation and prediction.
Adaptation modes (set in the configs): full fine-tuning with layer-wise lr decay
(config.optim.layer_decay), linear probe (config.optim.freeze='^encoder/'), from
scratch (no init_from; the same backbone, randomly initialised).
"""
import itertools

import jax
import ml_collections

from lensfm import data as data_lib
from lensfm import objectives
from lensfm.objectives import base
from lensfm.tasks import pretrain
from lensfm.train import loading
from lensfm.train import sharding


def training_batches(config, num_examples: int):
  """The first batches of the training input holding at least `num_examples` examples."""
  mesh = sharding.make_mesh((("data", -1), ("fsdp", 1)))
  devices = len(jax.devices())
  batch_size = config.batch_size - config.batch_size % devices or devices
  source = data_lib.make_input(config.data, global_batch_size=batch_size,
                               sharding=sharding.batch_sharding(mesh), seed=config.seed,
                               split="train")
  try:
    yield from itertools.islice(source, -(-num_examples // batch_size))
  finally:
    if hasattr(source, "close"):
      source.close()


def prepare_config(config) -> ml_collections.ConfigDict:
  """A copy of `config` with the objective's data-dependent fields resolved."""
  config = ml_collections.ConfigDict(config.to_dict())
  objective = objectives.objective_class(config)
  if issubclass(objective, base.DownstreamObjective):
    config = objective.prepare_config(config, lambda n: training_batches(config, n))
  return config


def run(config, workdir: str):
  config = loading.adopt_init_from(config)
  loading.check_init_from(config)
  return pretrain.run(prepare_config(config), workdir)
