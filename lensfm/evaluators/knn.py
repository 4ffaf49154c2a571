"""The `evals` hook type='knn': k-nearest-neighbour accuracy of a backbone's embeddings
and their spread (`metrics.embedding_std`, near 0 means collapse), on labelled data.

  Evaluator(eval_config, *, embed_fn, data_config, batch_size, seed, data_sharding)
    embed_fn(params, images) -> [B, D] pooled embeddings (jitted here);
    data_config, batch_size, seed: the run's, which eval_config may override.
  extract_features(apply_fn, params, input_iter, num_batches) -> (features [N, D] float32,
      labels [N] int32): embeds `num_batches` batches, dropping padded examples (also
      the kNN task's).

config.evals.<name> fields for type='knn' (defaults: `DEFAULTS`):
  every: steps between evaluations (the trainer also evaluates at the end).
  k, temperature: of `metrics.knn_predict`.
  num_train_batches, num_val_batches: batches in the kNN bank and the queries.
  batch_size: examples per batch (None: config.batch_size).
  train_split, val_split: splits given to `make_input`.
  data: overrides of config.data for the evaluation inputs (e.g. another recipe or
    TFDS data set); `augment` defaults to '' so the bank holds clean images.
  seed: of the evaluation inputs (None: config.seed).
  label_key: integer class key of the batches.
  num_classes: None for max label + 1 over bank and queries.
  features: where in the train state the encoder parameters are,
    e.g. 'extra/teacher/encoder' to evaluate DINO's teacher or
    'extra/target/encoder' for BYOL's target network.
The images are drawn once and kept on device, so every evaluation of a run embeds the
same images and the accuracies are comparable from step to step.
"""
from typing import Any, Callable, Iterator, Optional

import jax
import numpy as np

from lensfm import data as data_lib
from lensfm.objectives import metrics
from lensfm.train import sharding as sharding_lib
from lensfm import utils

DEFAULTS = dict(k=20, temperature=0.07, num_train_batches=8, num_val_batches=4,
                batch_size=None, train_split="train", val_split="validation", data=None,
                seed=None, label_key="label", num_classes=None, features="params/encoder")


def extract_features(apply_fn: Callable[[Any, jax.Array], jax.Array], params,
                     input_iter: Iterator[dict], num_batches: int,
                     label_key: str = "label") -> tuple[np.ndarray, np.ndarray]:
  """Embeds `num_batches` batches with apply_fn(params, images) -> [B, D].

  Examples whose batch['mask'] is False (padding of the last eval batch) are dropped.
  """
  features, labels = [], []
  for i in range(num_batches):
    try:
      batch = next(input_iter)
    except StopIteration:
      if i == 0:
        raise ValueError("extract_features: the input gave no batches.") from None
      break
    if label_key not in batch:
      raise KeyError(f"extract_features: batches have no {label_key!r} key; they have "
                     f"{sorted(batch)}.")
    feats, labs = jax.device_get((apply_fn(params, batch["image"]), batch[label_key]))
    valid = np.asarray(jax.device_get(batch["mask"]), bool) if "mask" in batch else None
    feats, labs = np.asarray(feats, np.float32), np.asarray(labs, np.int32)
    if valid is not None:
      feats, labs = feats[valid], labs[valid]
    features.append(feats)
    labels.append(labs)
  return np.concatenate(features), np.concatenate(labels)


def state_subtree(state, path: str):
  """'params/encoder' -> state['params']['encoder'], with a clear error if absent."""
  node = state
  for part in path.split("/"):
    if not isinstance(node, dict) or part not in node:
      have = sorted(node) if isinstance(node, dict) else type(node).__name__
      raise KeyError(f"kNN evaluator: features={path!r} is not in the train state "
                     f"(at {part!r} found {have}).")
    node = node[part]
  return node


class Evaluator:
  """kNN accuracy and embedding spread on a labelled validation set (module docstring)."""

  def __init__(self, eval_config, *, embed_fn, data_config, batch_size: int, seed: int,
               data_sharding):
    self.config = eval_config
    self.data_sharding = data_sharding
    cfg = utils.with_defaults(eval_config, DEFAULTS)
    self.k = int(cfg.k)
    self.temperature = float(cfg.temperature)
    self.label_key = cfg.label_key
    self.features_path = cfg.features
    self.num_classes = cfg.num_classes
    self.batch_size = int(cfg.batch_size or batch_size)
    dp = sharding_lib.data_parallel_size(data_sharding.mesh)
    if self.batch_size % dp:
      raise ValueError(f"evals knn: batch_size={self.batch_size} must be divisible by the "
                       f"{dp} devices of the mesh's data axes.")
    self.num_batches = {"train": int(cfg.num_train_batches), "val": int(cfg.num_val_batches)}
    self.splits = {"train": cfg.train_split, "val": cfg.val_split}
    data_config = data_config.copy_and_resolve_references()
    with data_config.unlocked():
      data_config.augment = ""
      for key, value in dict(cfg.data or {}).items():
        data_config[key] = value
    self.data_config = data_config
    self.seed = seed if cfg.seed is None else int(cfg.seed)
    # Compiled once: every evaluation embeds batches of the same shape and sharding.
    self._embed = jax.jit(embed_fn)
    self._batches: Optional[dict[str, list]] = None

  def _draw_batches(self) -> dict[str, list]:
    batches = {}
    for part, split in self.splits.items():
      source = data_lib.make_input(self.data_config, global_batch_size=self.batch_size,
                                   sharding=self.data_sharding, seed=self.seed,
                                   split=split, single_pass=True)
      keep = ("image", self.label_key, "mask")
      # At most one pass: a small split gives fewer batches, never repeated examples.
      count = min(self.num_batches[part], getattr(source, "num_batches", None) or
                  self.num_batches[part])
      batches[part] = [{k: v for k, v in next(source).items() if k in keep}
                       for _ in range(count)]
    return batches

  def run(self, state, step) -> dict[str, float]:
    del step
    if self._batches is None:
      self._batches = self._draw_batches()
    params = state_subtree(state, self.features_path)
    feats = {part: extract_features(self._embed, params, iter(batches),
                                    len(batches), self.label_key)
             for part, batches in self._batches.items()}
    (train_x, train_y), (val_x, val_y) = feats["train"], feats["val"]
    num_classes = self.num_classes or int(max(train_y.max(), val_y.max())) + 1
    probs = metrics.knn_predict(train_x, train_y, val_x, k=self.k, temperature=self.temperature,
                        num_classes=num_classes)
    return {"knn_accuracy": float(np.mean(probs.argmax(axis=1) == val_y)),
            "embedding_std": float(metrics.embedding_std(val_x))}
