"""Task 'knn': classification by k nearest neighbours on a frozen encoder's features.

No training: the (pretrained) encoder embeds a labelled bank and a test set, each test
image takes the similarity-weighted vote of its k nearest bank images
(`lensfm.objectives.metrics.knn_predict`), and the votes are scored like any classifier
(`reports.classification`: accuracy, per-class and macro AUC, confusion matrix).

  python -m lensfm.main --config=configs/finetune_classify.py:mode=knn \
      --config.init_from=PRETRAIN_WORKDIR --workdir=DIR

The bank: with the simulator and `config.data.labels_per_class = N`, exactly the N
per class of the seeded labelled pool that fine-tuning with N labels uses
(`lensfm.data.sim_pool`); otherwise the first `knn.num_train_examples` of the training stream.
The test set: the first `knn.num_test_examples` of the 'test' split (unaugmented).

config fields: init_from (a checkpoint with params/encoder; '' = a randomly initialised
backbone, the "no pretraining" baseline), model (must match the checkpoint's backbone),
data, objective.class_names / num_classes (for the report), batch_size, seed, mesh,
knn = dict(k=20, temperature=0.07, num_train_examples=4096, num_test_examples=2048).
Writes WORKDIR/summary.json and the ROC / confusion-matrix PNGs.
"""
import os
import time

import jax
import jax.numpy as jnp
from jax.sharding import NamedSharding, PartitionSpec as P
import numpy as np

from lensfm import data as data_lib
from lensfm.data import eval_input
from lensfm.data import sim_pool
from lensfm.data import sim_source
from lensfm.data import transforms
from lensfm.evaluators import common
from lensfm.evaluators import knn
from lensfm.objectives import classify
from lensfm.objectives import metrics
from lensfm.objectives import reports
from lensfm.tasks import pretrain
from lensfm.train import checkpoint as ckpt_lib
from lensfm.train import loading
from lensfm.train import precision
from lensfm.train import sharding as sharding_lib
from lensfm.train import writer as writer_lib
from lensfm import utils


def class_names(config, num_classes: int):
  names = (config.get("objective", {}).get("class_names", None)
           or classify.recipe_class_names(config.data))
  return tuple(names) if names else tuple(f"class_{k}" for k in range(num_classes))


def encoder_params(config, model, mesh):
  """The checkpoint's encoder (checked against config.model), or a random one."""
  path = config.get("init_from", "")
  if path:
    loading.check_init_from(config)
    # Checked from the saved config first: a mismatch is named before any array is read.
    loading.check_same_backbone(loading.load_config(path).model, config.model, path)
    params, _ = loading.load_encoder(path)
  else:
    d = config.data
    images = jnp.zeros((1, d.image_size, d.image_size, d.get("channels", 1)))
    params = model.init(jax.random.key(config.seed), images)["params"]
  return jax.device_put(params, NamedSharding(mesh, P()))


def pool_batches(config, batch_size, sharding):
  """The labelled pool, normalised, in batches (padding has mask False)."""
  plain = sim_pool.sim_config(eval_input.as_dict(config.data))
  seed = config.data.get("labels_seed", None)
  pool = sim_pool.draw_pool(plain, config.data.labels_per_class,
                              config.seed if seed is None else int(seed))
  recipe = sim_source.get_recipe(plain)
  transform = transforms.make_transform(plain.get("normalize", transforms.DEFAULT_NORMALIZE), (),
                                        sim_source.normalization_stats(plain, recipe))
  mapper = sim_source.grid_mapper(sim_source.grid_key(recipe, plain))

  def prepare(x):  # The raw pool onto the model grid, then normalised.
    if mapper is not None:
      x = jax.vmap(mapper)(x)
    return jax.vmap(transform)(jax.random.split(jax.random.key(0), x.shape[0]), x)

  normalize = jax.jit(prepare, out_shardings=sharding)
  n = len(pool["label"])
  for start in range(0, n, batch_size):
    images = np.zeros((batch_size,) + pool["image"].shape[1:], np.float32)
    labels = np.zeros((batch_size,), np.int32)
    mask = np.zeros((batch_size,), bool)
    stop = min(start + batch_size, n)
    images[:stop - start] = pool["image"][start:stop]
    labels[:stop - start] = pool["label"][start:stop]
    mask[:stop - start] = True
    yield {"image": normalize(jax.device_put(images, sharding)),
           "label": jax.device_put(labels, sharding), "mask": jax.device_put(mask, sharding)}


def run(config, workdir: str) -> dict:
  start = time.time()
  config = loading.adopt_init_from(config)
  knn_cfg = config.get("knn", {})
  mesh = sharding_lib.make_mesh(config.get("mesh", (("data", -1), ("fsdp", 1))))
  sharding = sharding_lib.batch_sharding(mesh)
  batch_size = int(config.batch_size)
  model = precision.get_model(config.model)
  params = encoder_params(config, model, mesh)
  embed = jax.jit(pretrain.pooled_embedding(model))

  with jax.set_mesh(mesh):
    if data_lib.source_name(config.data) == sim_pool.SOURCE_NAME:
      batches = list(pool_batches(config, batch_size, sharding))
      bank = knn.extract_features(embed, params, iter(batches), len(batches))
    else:
      source, num = eval_input.make_eval_input(
          config.data, split="train", batch_size=batch_size, sharding=sharding,
          seed=config.seed, num_examples=int(knn_cfg.get("num_train_examples", 4096)))
      bank = knn.extract_features(embed, params, source, num)
    test_source, num_test = eval_input.make_eval_input(
        config.data, split="test", batch_size=batch_size, sharding=sharding,
        seed=config.seed, num_examples=int(knn_cfg.get("num_test_examples", 2048)))
    test_x, test_y = knn.extract_features(embed, params, test_source, num_test)
  num_classes = int(config.get("objective", {}).get("num_classes", 0) or
                    max(bank[1].max(), test_y.max()) + 1)
  probs = metrics.knn_predict(bank[0], bank[1], test_x, k=int(knn_cfg.get("k", 20)),
                              temperature=float(knn_cfg.get("temperature", 0.07)),
                              num_classes=num_classes)
  names = class_names(config, num_classes)
  result, details = reports.classification({"probs": probs, "label": test_y}, names)
  summary = {**reports.json_safe(result), **reports.json_details(details), "task": "knn",
             "bank_size": int(len(bank[1])), "k": int(knn_cfg.get("k", 20)),
             "checkpoint": config.get("init_from", "") or None,
             "device_kind": jax.devices()[0].device_kind, "jax_version": jax.__version__,
             "seconds": time.time() - start}
  if jax.process_index() == 0:
    os.makedirs(workdir, exist_ok=True)
    summary["plots"] = reports.classification_plots(names, details,
                                                    common.figure_path(workdir, "knn_"))
    writer_lib.log_pictures(workdir, 0, summary["plots"])
    utils.write_json_atomically(os.path.join(workdir, "config.json"), config.to_dict())
    utils.write_json_atomically(os.path.join(workdir, "summary.json"), summary)
    print(f"kNN (k={summary['k']}, bank {summary['bank_size']}): accuracy "
          f"{result['accuracy']:.4f}, macro AUC {result['auc_macro']:.4f}", flush=True)
  return summary
