r"""Can a model tell padded images from native ones? (It must not: padding is a shortcut.)

  python -m experiments.studies.padding_shortcut [--train=2000 --test=1000 --steps=400]

Native: simulated Model II lenses with noise (64 px at 0.101"/px, the model grid).
Padded: the same recipe rendered on a smaller field (48 px) and mapped onto the 64 px grid
by `lensfm.data.grid.map_to_grid` (8 px of re-drawn sky on each side). Control: the same
48 px images zero-padded. A small CNN (3 conv layers + dense) is trained to separate
padded from native images (per-image z-scored, as models see them) and scored by ROC AUC
on held-out images. Re-drawn sky should leave it near 0.5; zero padding near 1.

Writes experiments/results/padding_shortcut_<device>.{json,md}.
"""
import time

from absl import app
from absl import flags
import flax.linen as nn
import jax
import numpy as np
import optax

from experiments import results
from lensfm.data import grid
from lensfm.data import transforms
from lensfm.objectives import metrics
from lensfm.sim import recipes

_TRAIN = flags.DEFINE_integer("train", 2000, "Training images per class.")
_TEST = flags.DEFINE_integer("test", 1000, "Test images per class.")
_STEPS = flags.DEFINE_integer("steps", 400, "Classifier training steps (batch 128).")
_SEED = flags.DEFINE_integer("seed", 0, "Seed.")
SIZE, SCALE, SMALL = 64, 0.101, 48


class Probe(nn.Module):
  @nn.compact
  def __call__(self, x):
    for features in (16, 32, 64):
      x = nn.relu(nn.Conv(features, (3, 3), strides=2)(x))
    return nn.Dense(1)(x.reshape(x.shape[0], -1))[:, 0]


def simulate(recipe, key, n):
  sample = jax.jit(lambda k: recipe.sample(k, 100)["image"])
  return np.concatenate([np.asarray(sample(jax.random.fold_in(key, i)))
                         for i in range(-(-n // 100))])[:n]


def make_sets(key, n):
  k_native, k_small, k_pad = jax.random.split(key, 3)
  native = simulate(recipes.get("model_ii", noise=True), k_native, n)
  small = simulate(recipes.get("model_ii", noise=True, num_pix=SMALL), k_small, n)
  pad = jax.jit(jax.vmap(lambda im, k: grid.map_to_grid(im, SCALE, SIZE, SCALE, key=k)))
  padded = np.asarray(pad(small, jax.random.split(k_pad, n)))
  margin = (SIZE - SMALL) // 2
  zeros = np.pad(small, ((0, 0), (margin, margin), (margin, margin), (0, 0)))
  z = jax.jit(jax.vmap(lambda im: transforms.normalize(im, "zscore")))
  return {k: np.asarray(z(v)) for k, v in (("native", native), ("padded", padded),
                                           ("zeros", zeros))}


def auc_of(train_x, train_y, test_x, test_y, steps, seed):
  model = Probe()
  params = model.init(jax.random.key(seed), train_x[:2])
  tx = optax.adam(1e-3)
  opt = tx.init(params)

  @jax.jit
  def step(params, opt, x, y):
    loss = lambda p: optax.sigmoid_binary_cross_entropy(model.apply(p, x), y).mean()
    value, grads = jax.value_and_grad(loss)(params)
    updates, opt = tx.update(grads, opt)
    return optax.apply_updates(params, updates), opt, value

  rng = np.random.default_rng(seed)
  for _ in range(steps):
    idx = rng.integers(0, len(train_x), 128)
    params, opt, _ = step(params, opt, train_x[idx], train_y[idx])
  scores = np.concatenate([np.asarray(jax.jit(model.apply)(params, test_x[i:i + 256]))
                           for i in range(0, len(test_x), 256)])
  seen = rng.permutation(len(train_x))[:1024]  # Both classes (the arrays are sorted).
  train_scores = np.asarray(jax.jit(model.apply)(params, train_x[seen]))
  return (float(metrics.roc_auc(test_y, scores)),
          float(metrics.roc_auc(train_y[seen], train_scores)))


def main(argv):
  del argv
  start = time.time()
  key = jax.random.key(_SEED.value)
  train = make_sets(jax.random.fold_in(key, 0), _TRAIN.value)
  test = make_sets(jax.random.fold_in(key, 1), _TEST.value)
  result = {"device_kind": jax.devices()[0].device_kind, "jax_version": jax.__version__,
            "train_per_class": _TRAIN.value, "test_per_class": _TEST.value,
            "steps": _STEPS.value, "batch_size": 128, "seed": _SEED.value,
            "grid": f"{SIZE} px at {SCALE}\"/px", "small_field_px": SMALL}
  for name in ("padded", "zeros"):
    x = np.concatenate([train["native"], train[name]])
    y = np.concatenate([np.zeros(_TRAIN.value), np.ones(_TRAIN.value)]).astype(np.float32)
    tx_ = np.concatenate([test["native"], test[name]])
    ty = np.concatenate([np.zeros(_TEST.value), np.ones(_TEST.value)])
    test_auc, train_auc = auc_of(x, y, tx_, ty, _STEPS.value, _SEED.value)
    result[f"{name}_test_auc"], result[f"{name}_train_auc"] = test_auc, train_auc
    print(f"{name}: test AUC {test_auc:.3f} (train {train_auc:.3f})", flush=True)
  result["seconds"] = time.time() - start
  lines = results.table(
      ["padding", "classifier test AUC (padded vs native)", "train AUC"],
      [["re-drawn sky (`grid.map_to_grid`)", f"{result['padded_test_auc']:.3f}",
        f"{result['padded_train_auc']:.3f}"],
       ["zeros (control)", f"{result['zeros_test_auc']:.3f}", f"{result['zeros_train_auc']:.3f}"]])
  lines += ["", f"{result['device_kind']}, JAX {result['jax_version']}; {_TRAIN.value}/class "
            f"train, {_TEST.value}/class test, {_STEPS.value} Adam steps of batch 128; "
            f"Model II with noise, {SMALL} px field padded to {SIZE} px at {SCALE}\"/px; "
            f"command: {results.command()}"]
  results.write(results.stem("padding_shortcut"), result, lines)


if __name__ == "__main__":
  app.run(main)
