"""configs/lensfind.py: the realistic Euclid lens-finding recipe by default (full and
runlocal), the toy 'lensfind' recipe one override away, both giving batches on the grid."""
import jax
import numpy as np

from configs import lensfind
from lensfm.data import sim_source


def _batch(data, size=8):
  sharding = jax.sharding.NamedSharding(jax.sharding.Mesh(np.array(jax.devices()[:1]), ("data",)),
                                        jax.sharding.PartitionSpec("data"))
  source = sim_source.make(data, global_batch_size=size, sharding=sharding, seed=0)
  return source.batch_at(0)


def test_default_recipe_is_realistic_and_toy_recipe_still_works():
  full = lensfind.get_config()
  assert full.data.recipe == "realistic_euclid_lensfind"
  assert (full.data.image_size, full.data.pixel_scale) == (64, 0.101)
  c = lensfind.get_config("runlocal")
  assert c.data.recipe == "realistic_euclid_lensfind" and c.total_steps <= 150
  # The whole 64-pixel (6.5") field on the 32x32 runlocal grid.
  assert c.data.image_size * c.data.pixel_scale == 64 * 0.101
  assert sim_source.get_recipe(c.data).supersampling == 1
  batch = _batch(c.data)
  assert batch["image"].shape == (8, 32, 32, 1) and np.isfinite(batch["image"]).all()
  assert set(np.asarray(batch["label"]).tolist()) <= {0, 1}
  c.data.recipe = "lensfind"   # --config.data.recipe=lensfind: the earlier toy recipe
  toy = sim_source.get_recipe(c.data)
  assert toy.name == "lensfind" and toy.image_shape == (64, 64, 1)
