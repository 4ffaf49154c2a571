"""Task 'finetune': the training loop around a supervised objective, for downstream tasks.

It is task 'pretrain' after two preparations that only downstream runs need:
  1. The config adopts `config.init_from`'s backbone and input grid (any checkpoint, or a
     shipped one such as 'lensfm:tiny'; `contract.Checkpoint.adopt`; mode 'scratch' keeps
     the backbone, not the weights), then it is checked before anything compiles.
  2. The objective fills the config fields that depend on the data
     (`DownstreamObjective.prepare_config`: regression target statistics), so the
     checkpoint carries them to evaluation and prediction.
Adaptation modes (set in the configs): full fine-tuning with layer-wise lr decay
(config.optim.layer_decay), linear probe (config.optim.freeze='^encoder/'), from
scratch (no init_from; the same backbone, randomly initialised).
"""
import itertools
from typing import Optional

import jax
import ml_collections

from lensfm import data as data_lib
from lensfm import objectives
from lensfm.data import model_input
from lensfm.objectives import base
from lensfm.tasks import pretrain
from lensfm.train import contract
from lensfm.train import sharding
from lensfm.train import trainer as trainer_lib


def training_batches(config, num_examples: int):
  """The first batches of the training input holding at least `num_examples` examples."""
  mesh = sharding.make_mesh(config.mesh)
  devices = len(jax.devices())
  batch_size = config.batch_size - config.batch_size % devices or devices
  source = data_lib.make_input(config.data, global_batch_size=batch_size,
                               sharding=sharding.batch_sharding(mesh), seed=config.seed,
                               split="train")
  try:
    yield from itertools.islice(source, -(-num_examples // batch_size))
  finally:
    source.close()


def prepare_config(config) -> ml_collections.ConfigDict:
  """A copy of `config` with the objective's data-dependent fields resolved."""
  config = ml_collections.ConfigDict(config.to_dict())
  objective = objectives.objective_class(config)
  if issubclass(objective, base.DownstreamObjective):
    config = objective.prepare_config(config, lambda n: training_batches(config, n))
  return config


def fit_to_data(config) -> ml_collections.ConfigDict:
  """A copy of `config` whose data fields say what the data are, as the data say
  (`model_input.describe`): channels, and band_names (recorded in the checkpoint)."""
  facts = model_input.describe(config.data)
  config = ml_collections.ConfigDict(config.to_dict())
  config.data.channels = facts.channels
  config.data.band_names = ",".join(facts.bands)
  return config


def adopted(config) -> tuple[ml_collections.ConfigDict, Optional[contract.Checkpoint]]:
  """(config fitted to its data, with init_from's backbone and grid; the checkpoint its
  weights start from: None for a fresh mode or no init_from), checked before anything
  compiles."""
  config = fit_to_data(config)
  start_from = contract.start_from(config)
  if start_from is None:
    return config, None
  config = start_from.adopt(config)
  start_from.check_fits(config)
  return config, start_from if config.init_from else None


def run(config, workdir: str):
  config, start_from = adopted(config)
  return pretrain.train(trainer_lib.Trainer(prepare_config(config), workdir,
                                            start_from=start_from))
