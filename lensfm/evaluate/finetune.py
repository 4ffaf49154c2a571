"""Task 'finetune': the training loop around a supervised objective, for downstream tasks.

It is `lensfm.train.trainer.run` after three preparations that only downstream runs need:
  1. The config adopts `config.init_from`'s backbone and input grid (any checkpoint, or
     a shipped one such as 'lensfm:tiny'; `restore.adopt_init_from`), which is then
     checked before anything compiles.
  2. `config.data.labels_per_class` with the simulator (source 'sim') becomes the fixed
     labelled pool of `lensfm.data.sim_pool` (source 'sim_pool'); the TFDS
     pipeline implements labels_per_class itself.
  3. Regression target statistics are resolved once and written into the run's config
     (config.objective.target_stats), so the checkpoint carries them to evaluation and
     prediction.
Adaptation modes (set in the configs): full fine-tuning with layer-wise lr decay
(config.optim.layer_decay), linear probe (config.optim.freeze='^encoder/'), from
scratch (no init_from; the same backbone, randomly initialised).
"""
import ml_collections

from lensfm.data import sim_pool
from lensfm.evaluate import restore
from lensfm.train import trainer as trainer_lib


def prepare_config(config) -> ml_collections.ConfigDict:
  """A copy of `config` with the data source and regression statistics resolved."""
  config = ml_collections.ConfigDict(config.to_dict())
  data = config.data
  if data.get("source", None) == "sim" and (data.get("labels_per_class", None) or 0) > 0:
    data.source = sim_pool.SOURCE_NAME
  if config.objective.get("name", None) == "regress":
    from lensfm.objectives import regress  # pylint: disable=g-import-not-at-top
    stats = regress.resolve_target_stats(config)
    config.objective.target_stats = {k: list(v) for k, v in stats.items()}
  return config


def run(config, workdir: str):
  config = restore.adopt_init_from(config)
  restore.check_init_from(config)
  return trainer_lib.run(prepare_config(config), workdir)
