"""Supervised classification with a softmax head on the backbone's pooled embedding.

Used for substructure classification (no_sub / cdm / axion) and, with the 'lensfind'
recipe and two classes, for lens finding (label 1 = lensed). The backbone sits under
params['encoder'] (so `config.init_from` replaces it with a pretrained one), the head
under params['head'].

Adaptation modes are mostly the optimizer's business: full fine-tuning (optionally
`config.optim.layer_decay`), a linear probe (`config.optim.freeze='^encoder/'`: the
encoder then also runs without gradients, which halves the step's cost), or training
from scratch (no `init_from`). What every mode needs from this file is `feature_norm`:
pooled features share a large common offset and vary little from image to image (frozen
self-supervised features; a GroupNorm ResNet's mean-pooled, per-image-normalised maps),
so a head on them learns slowly or not at all; MAE's linear-probe protocol standardises
each feature first (BatchNorm without affine parameters), which is what
feature_norm='batch' does: batch statistics in training, running statistics (kept in
`extra`, so they are checkpointed) in evaluation. The downstream configs use it in every
mode.

config.objective fields (defaults: `DEFAULTS`):
  name: 'classify'.
  num_classes: number of classes (2 for lens finding). With simulated data it must
    equal the recipe's number of classes.
  class_names: names for reports and plots. Before training (`prepare_config`) the
    data's own classes replace num_classes and class_names: a simulator recipe's, or a
    dataset's (e.g. the folders of a `files` dataset), so a user passes no class list.
  positive_class: the class a binary task searches for (its TPR at fixed FPR, purity
    and completeness); '' = the last class (label 1 of two).
  class_weights: per-class loss weights: '' (none), 'balanced' (inverse class frequency
    in the training data, computed before training and stored), or a list. Unlabelled
    examples (label -1) never count.
  label_key: batch key holding int32 class indices.
  head_hidden: 0 for a linear head; N > 0 for one hidden GELU layer of N units.
  head_zero_init: start the output layer at zero: the first logits are uniform, so the
    initial loss is log(num_classes) whatever the features' scale.
  feature_norm: 'none' or 'batch' (see above; what the configs use).
  feature_norm_momentum: of the running statistics (the first steps average exactly, so
    early evaluations are not biased towards the initial values).
  label_smoothing.
Metrics logged during training: accuracy (on the training batch).
Downstream interface (`base.DownstreamObjective`): `predict(params, extra, images)` ->
{'probs': [B, K]}; `eval_outputs` adds the labels; reports accuracy, per-class and macro
AUC and the confusion matrix (`reports.classification`); the predict CSV has
prob_<class> columns and predicted_class.
"""
import re

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from lensfm import errors
from lensfm.data import model_input
from lensfm.data import sim_source
from lensfm.objectives import base
from lensfm.objectives import reports
from lensfm import utils

FEATURE_NORMS = ("none", "batch")
# What a head on the pooled embedding reads (classify and regress), then classify's own.
HEAD_DEFAULTS = dict(head_hidden=0, head_zero_init=True, feature_norm="none",
                     feature_norm_momentum=0.99)
DEFAULTS = dict(HEAD_DEFAULTS, num_classes=0, class_names=None, label_key="label",
                label_smoothing=0., positive_class="", class_weights="")
WEIGHT_EXAMPLES = 2048  # Training examples counted for class_weights='balanced'.
_EPS = 1e-6


class Head(nn.Module):
  """Linear (hidden=0) or one-hidden-layer MLP head."""
  num_outputs: int
  hidden: int = 0
  zero_init: bool = True

  @nn.compact
  def __call__(self, features):
    x = features.astype(jnp.float32)  # Heads run in float32 whatever the backbone's dtype.
    if self.hidden:
      x = nn.gelu(nn.Dense(self.hidden, name="hidden")(x))
    init = nn.initializers.zeros if self.zero_init else nn.initializers.lecun_normal()
    return nn.Dense(self.num_outputs, kernel_init=init, name="out")(x)


def masked_mean(values, mask):
  """Mean of `values` [B] over examples where mask [B] is true (0 if none)."""
  mask = mask.astype(jnp.float32)
  return jnp.sum(values * mask) / jnp.maximum(jnp.sum(mask), 1.)


def batch_mask(batch) -> jax.Array:
  """Real (not padding) examples; every example when the source adds no mask."""
  if "mask" in batch:
    return batch["mask"]
  return jnp.ones(batch["image"].shape[:1], bool)


class DownstreamMixin:
  """What every downstream objective shares: recognising a linear probe (every encoder
  parameter frozen by config.optim.freeze), so the forward pass can skip the encoder's
  backward pass."""

  def _init_downstream(self, config):
    pattern = config.get("optim", {}).get("freeze", None)
    self._freeze = re.compile(pattern) if pattern else None

  def encoder_frozen(self, encoder_params) -> bool:
    if self._freeze is None:
      return False
    paths = [utils.path_to_str(p) for p, _ in
             jax.tree_util.tree_leaves_with_path(encoder_params)]
    return all(self._freeze.search(f"encoder/{p}") for p in paths)

  def maybe_stop_encoder_gradient(self, params):
    """(params, train flag): frozen encoders get no gradient and run in eval mode."""
    if self.encoder_frozen(params["encoder"]):
      return {**params, "encoder": jax.lax.stop_gradient(params["encoder"])}, False
    return params, True


class HeadObjective(DownstreamMixin, base.DownstreamObjective):
  """A head on the pooled embedding, with optional feature standardisation (classify,
  regress). Subclasses set `self.head` in __init__ after `_init_head`."""

  def _init_head(self, config, num_outputs: int):
    cfg = utils.with_defaults(config.objective, HEAD_DEFAULTS)
    self._init_downstream(config)
    self.feature_norm = cfg.feature_norm or "none"
    if self.feature_norm not in FEATURE_NORMS:
      raise errors.UserError(f"config.objective.feature_norm={self.feature_norm!r} is not one of "
                             f"{FEATURE_NORMS}.")
    self.momentum = float(cfg.feature_norm_momentum)
    self.head = Head(num_outputs, cfg.head_hidden, cfg.head_zero_init)

  def features(self, params, images, train=False):
    out = self.model.apply({"params": params["encoder"]}, images, train=train)
    return out["pooled"].astype(jnp.float32)

  def init(self, rng, batch):
    encoder_rng, head_rng = jax.random.split(rng)
    encoder = self.model.init(encoder_rng, batch["image"])["params"]
    features = self.features({"encoder": encoder}, batch["image"])
    params = {"encoder": encoder, "head": self.head.init(head_rng, features)["params"]}
    extra = {}
    if self.feature_norm == "batch":
      dim = features.shape[-1]
      extra = {"feature_mean": jnp.zeros((dim,)), "feature_var": jnp.ones((dim,)),
               "feature_count": jnp.zeros(())}
    return params, extra

  def normalized_features(self, params, extra, images, *, train=False, mask=None):
    """(features for the head, updated extra). In training, batch statistics over the
    real examples normalise the features and update the running ones."""
    features = self.features(params, images, train=train)
    if self.feature_norm == "none":
      return features, extra
    if mask is None:  # Evaluation: the running statistics.
      return ((features - extra["feature_mean"]) * jax.lax.rsqrt(extra["feature_var"] + _EPS),
              extra)
    w = mask.astype(jnp.float32)[:, None]
    n = jnp.maximum(w.sum(), 1.)
    mean = (features * w).sum(0) / n
    var = (jnp.square(features - mean) * w).sum(0) / n
    count = extra["feature_count"]
    m = jnp.minimum(count / (count + 1.), self.momentum)  # Exact average at first.
    stats = jax.lax.stop_gradient((mean, var))
    extra = {"feature_mean": m * extra["feature_mean"] + (1 - m) * stats[0],
             "feature_var": m * extra["feature_var"] + (1 - m) * stats[1],
             "feature_count": count + 1.}
    return (features - mean) * jax.lax.rsqrt(var + _EPS), extra

  def head_outputs(self, params, extra, images, *, train=False, mask=None):
    """(head outputs float32, updated extra)."""
    features, extra = self.normalized_features(params, extra, images, train=train, mask=mask)
    return self.head.apply({"params": params["head"]}, features).astype(jnp.float32), extra

  def train_outputs(self, params, extra, batch):
    """Head outputs for a training batch, (frozen encoder: no encoder gradient)."""
    params, train = self.maybe_stop_encoder_gradient(params)
    return self.head_outputs(params, extra, batch["image"], train=train,
                             mask=batch_mask(batch))


def balanced_class_weights(training_batches, num_classes: int, num_examples: int) -> list:
  """Inverse class frequencies over `num_examples` training examples, mean 1 over the
  classes present."""
  counts = np.zeros(num_classes)
  for batch in training_batches(num_examples):
    labels = np.asarray(jax.device_get(batch["label"]))[np.asarray(jax.device_get(
        batch["mask"])) if "mask" in batch else slice(None)]
    counts += np.bincount(labels[labels >= 0], minlength=num_classes)[:num_classes]
  present = counts > 0
  weights = np.where(present, counts.sum() / np.maximum(counts, 1) / max(present.sum(), 1), 0.)
  return [float(w) for w in weights]


class Objective(HeadObjective):
  """See the module docstring."""
  task = "classification"

  @classmethod
  def prepare_config(cls, config, training_batches):
    """The data's classes (and balanced class weights, if asked) into config.objective."""
    names = model_input.describe(config.data).class_names
    if names and tuple(utils.with_defaults(config.objective, DEFAULTS).class_names or ()) != names:
      if jax.process_index() == 0:
        print(f"Classes from the data: {list(names)}.", flush=True)
      config.objective.num_classes = len(names)
      config.objective.class_names = tuple(names)
    if utils.with_defaults(config.objective, DEFAULTS).class_weights == "balanced":
      objective = config.objective.to_dict()  # A list replaces the string: a new dict.
      objective["class_weights"] = balanced_class_weights(
          training_batches, int(objective["num_classes"]), WEIGHT_EXAMPLES)
      config.objective = objective
    return config

  def __init__(self, config, model):
    super().__init__(config, model)
    cfg = utils.with_defaults(config.objective, DEFAULTS)
    self.num_classes = int(cfg.num_classes or 0)
    if self.num_classes < 2:
      raise errors.UserError(f"config.objective.num_classes={cfg.num_classes!r}; "
                             "expected an integer >= 2.")
    self._init_head(config, self.num_classes)
    self.label_key = cfg.label_key
    self.label_smoothing = float(cfg.label_smoothing)
    sim_names = sim_source.recipe_class_names(config.data)
    if sim_names is not None and len(sim_names) != self.num_classes:
      raise errors.UserError(
          f"config.objective.num_classes={self.num_classes}, but simulator recipe "
          f"{config.data.recipe!r} has {len(sim_names)} classes {list(sim_names)}.")
    names = tuple(cfg.class_names or sim_names or
                  [f"class_{k}" for k in range(self.num_classes)])
    if len(names) != self.num_classes:
      raise errors.UserError(f"config.objective.class_names={list(names)} has {len(names)} names "
                             f"for num_classes={self.num_classes}.")
    self.class_names = names
    positive = cfg.positive_class or names[-1]
    if positive not in names:
      raise errors.UserError(f"config.objective.positive_class={positive!r} is not one of the "
                             f"classes {list(names)}.")
    self.positive = names.index(positive)
    weights = cfg.class_weights or None
    if isinstance(weights, str):
      raise errors.UserError(f"config.objective.class_weights={weights!r}; expected '', "
                             "'balanced' (resolved before training) or one weight per class.")
    if weights is not None and len(weights) != self.num_classes:
      raise errors.UserError(f"config.objective.class_weights has {len(weights)} values for "
                             f"{self.num_classes} classes.")
    self.class_weights = None if weights is None else jnp.asarray(weights, jnp.float32)

  def loss(self, params, extra, batch, rng, step):
    del rng, step
    logits, extra = self.train_outputs(params, extra, batch)
    labels = batch[self.label_key]
    targets = optax.smooth_labels(jax.nn.one_hot(labels, self.num_classes),
                                  self.label_smoothing)
    mask = batch_mask(batch) & (labels >= 0)  # -1: an unlabelled example.
    losses = optax.softmax_cross_entropy(logits, targets)
    if self.class_weights is not None:
      losses = losses * self.class_weights[jnp.maximum(labels, 0)]
    loss = masked_mean(losses, mask)
    correct = (jnp.argmax(logits, -1) == labels).astype(jnp.float32)
    return loss, ({"accuracy": masked_mean(correct, mask)}, extra)

  # -- downstream interface ------------------------------------------------------------
  def predict(self, params, extra, images):
    logits, _ = self.head_outputs(params, extra, images)
    return {"probs": jax.nn.softmax(logits, -1)}

  def eval_outputs(self, params, extra, batch):
    return {**self.predict(params, extra, batch["image"]), "label": batch[self.label_key]}

  def summarize(self, outputs):
    return reports.classification(outputs, self.class_names, self.positive)

  def plots(self, result, details, pictures, path):
    del result, pictures
    return reports.classification_plots(self.class_names, details, path)

  def output_columns(self) -> list[str]:
    return [f"prob_{n}" for n in self.class_names] + ["predicted_class"]

  def output_rows(self, outputs, names=None, directory=None) -> list[list]:
    del names, directory
    probs = outputs["probs"]
    return [[f"{p:.6g}" for p in row] + [self.class_names[int(row.argmax())]] for row in probs]
