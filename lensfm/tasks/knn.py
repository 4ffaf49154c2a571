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
from lensfm.data import model_input
from lensfm.data import sim_pool
from lensfm.data import sim_source
from lensfm.evaluators import common
from lensfm.evaluators import knn
from lensfm.objectives import metrics
from lensfm.objectives import reports
from lensfm.tasks import finetune
from lensfm.tasks import pretrain
from lensfm.train import precision
from lensfm.train import sharding as sharding_lib
from lensfm.train import writer as writer_lib
from lensfm import utils


def class_names(config, labels) -> tuple[str, ...]:
  """The data's class names (a simulator recipe's or a dataset's), else the config's, else
  'class_k' for every label seen."""
  names = model_input.describe(config.data).class_names or config.objective.class_names
  return tuple(names) if names else tuple(f"class_{k}" for k in range(int(labels.max()) + 1))


def encoder_params(config, model, start_from, mesh):
  """The checkpoint's encoder, or a randomly initialised one (the no-pretraining baseline)."""
  if start_from is not None:
    params = start_from.encoder_params(channels=config.data.channels)
  else:
    grid = model_input.Grid.of(config.data)
    images = jnp.zeros((1, grid.size, grid.size, grid.channels))
    params = model.init(jax.random.key(config.seed), images)["params"]
  return jax.device_put(params, NamedSharding(mesh, P()))


def pool_batches(config, batch_size, sharding):
  """The labelled pool (raw, at the recipe's pixels) as model batches."""
  plain = sim_pool.sim_config(config.data)
  seed = config.data.get("labels_seed", None)
  pool = sim_pool.draw_pool(plain, config.data.labels_per_class,
                            config.seed if seed is None else int(seed))
  return model_input.array_batches(
      {"image": pool["image"], "label": pool["label"].astype(np.int32)},
      src_scale=sim_source.get_recipe(plain).pixel_scale, grid=model_input.Grid.of(plain),
      normalization=model_input.Normalization.of(plain), batch_size=batch_size,
      sharding=sharding, what="the labelled pool")


def bank_and_test_batches(config, batch_size, sharding):
  """((bank batches, count), (test batches, count)): what kNN embeds."""
  knn_cfg = config.knn
  if data_lib.source_name(config.data) == sim_pool.SOURCE_NAME:
    batches = list(pool_batches(config, batch_size, sharding))
    bank = (iter(batches), len(batches))
  else:
    bank = eval_input.make_eval_input(config.data, split="train", batch_size=batch_size,
                                      sharding=sharding, seed=config.seed,
                                      num_examples=knn_cfg.num_train_examples)
  test = eval_input.make_eval_input(config.data, split="test", batch_size=batch_size,
                                    sharding=sharding, seed=config.seed,
                                    num_examples=knn_cfg.num_test_examples)
  return bank, test


def run(config, workdir: str) -> dict:
  start = time.time()
  config, start_from = finetune.adopted(config)
  knn_cfg = config.knn
  mesh = sharding_lib.make_mesh(config.mesh)
  sharding = sharding_lib.batch_sharding(mesh)
  model = precision.get_model(config.model)
  params = encoder_params(config, model, start_from, mesh)
  embed = jax.jit(pretrain.pooled_embedding(model))
  (bank_source, num_bank), (test_source, num_test) = bank_and_test_batches(
      config, int(config.batch_size), sharding)
  with jax.set_mesh(mesh):
    bank = knn.extract_features(embed, params, bank_source, num_bank)
    test_x, test_y = knn.extract_features(embed, params, test_source, num_test)
  test_source.close()
  if data_lib.source_name(config.data) != sim_pool.SOURCE_NAME:
    bank_source.close()  # A dataset's reader threads; the pool is a list of batches.
  names = class_names(config, np.concatenate([bank[1], test_y]))
  num_classes = len(names)
  probs = metrics.knn_predict(bank[0], bank[1], test_x, k=int(knn_cfg.k),
                              temperature=float(knn_cfg.temperature),
                              num_classes=num_classes)
  result, details = reports.classification({"probs": probs, "label": test_y}, names)
  summary = {**reports.json_safe(result), **reports.json_details(details), "task": "knn",
             "bank_size": int(len(bank[1])), "k": int(knn_cfg.k),
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
