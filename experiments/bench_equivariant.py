r"""What rotation equivariance buys, at CPU scale.

Three backbones of similar size, each trained from scratch with a linear softmax head
on simulated Model II-like lenses (no_sub / cdm / axion, 32x32, recipe 'model_ii'),
with 100 labels per class and with the whole labelled pool:
  equivariant   lensfm/models/equivariant.py ('32x0e + 16x1o + 8x2e', 2 blocks, 4x4 patches)
  vit           lensfm/models/vit.py (width 48, 2 blocks, 4x4 patches, mean pool)
  vit_aug       the same ViT trained with random rot90 + flips (D4 augmentation): the
                usual way to teach a network the symmetry instead of building it in
  group_pooled  lensfm/models/group_pooled.py: the same ViT averaged over C4
No pretraining here (a CPU cannot pretrain in minutes); the downstream fine-tuning code
exists (configs/finetune_equivariant.py) but this script trains its own small
supervised loop so that the four models see identical data, steps and optimizer.

Every image is z-score normalised per image (the configs' default), then its corners
outside the disk inscribed in the frame are zeroed (see `aperture`). Evaluation sets
(450 lenses each):
  test           fresh Model II lenses, as trained;
  rotated        the same lenses turned by a uniform random angle (bilinear, the
                 pipeline's transforms.affine_resample);
  shifted_inst   Model III lenses (the same scenes seen by HST WFC3: 0.08"/px instead
                 of 0.101"/px, PSF FWHM 0.08" instead of 0.16") turned by random angles.
Plus: the trained models' invariance error (relative change of the pooled embedding)
under 90- and 45-degree turns, the same for randomly initialised backbones with 4x4 and
2x2 patches, and images/s (inference, batch 64; training, batch 32).

  python experiments/bench_equivariant.py                  # the run in experiments/results/
  python experiments/bench_equivariant.py --steps=50 --pool_per_class=100   # a quick look

Writes experiments/results/equivariant_<device>.json and .md. The CPU here is shared by
several processes, so images/s are lower bounds; the load average is recorded.
"""
import argparse
import json
import os
import platform
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import flax.linen as nn  # pylint: disable=g-import-not-at-top
import jax
import jax.numpy as jnp
import numpy as np
import optax
from sklearn import metrics as sk_metrics

from lensfm.data import transforms
from lensfm.models import equivariant
from lensfm.models import group_pooled
from lensfm.models import vit
from lensfm.sim import recipes

IMAGE_SIZE = 32
NUM_CLASSES = 3
VIT_DIMS = dict(variant=None, width=48, depth=2, mlp_dim=96, num_heads=4, patch_size=4,
                pool="mean")
MODELS = {
    "equivariant": lambda: equivariant.Model(variant=None, irreps="32x0e + 16x1o + 8x2e",
                                             depth=2, num_heads=4, patch_size=4),
    "vit": lambda: vit.Model(**VIT_DIMS),
    "vit_aug": lambda: vit.Model(**VIT_DIMS),
    "group_pooled": lambda: group_pooled.Model(group="C4", **VIT_DIMS),
}
AUGMENTED = {"vit_aug"}


# -- data ---------------------------------------------------------------------------------


def aperture(images):
  """Zeroes the corners outside the inscribed disk (1-pixel soft edge), on every set:
  a turn by resampling refills the corners by reflection with mirrored arcs, which
  would test the boundary rule rather than the networks (at 32 px the arcs reach the
  frame)."""
  rows, cols = np.mgrid[:IMAGE_SIZE, :IMAGE_SIZE] - (IMAGE_SIZE - 1) / 2
  disk = np.clip(IMAGE_SIZE / 2 - np.hypot(rows, cols), 0., 1.).astype(np.float32)
  return images * disk[:, :, None]


def prepare(images) -> np.ndarray:
  """The configs' default per-image normalisation (z-score), then the aperture: zeroing
  the corners last keeps them at the same level whatever a turn brought into them."""
  return aperture(np.asarray(jax.vmap(transforms.zscore)(jnp.asarray(images))))


def simulate(recipe_name: str, num: int, seed: int, chunk: int = 100, **overrides):
  """(images [num, 32, 32, 1] z-score normalised, inside the aperture; labels [num])."""
  recipe = recipes.get(recipe_name, num_pix=IMAGE_SIZE, **overrides)
  sample = jax.jit(lambda k: recipe.sample(k, chunk))
  images, labels = [], []
  for i in range(-(-num // chunk)):
    out = sample(jax.random.fold_in(jax.random.key(seed), i))
    images.append(prepare(out["image"]))
    labels.append(np.asarray(out["label"]))
  return np.concatenate(images)[:num], np.concatenate(labels)[:num]


def rotate_randomly(images: np.ndarray, seed: int) -> np.ndarray:
  keys = jax.random.split(jax.random.key(seed), len(images))
  turn = jax.jit(jax.vmap(transforms.random_rotate))
  return prepare(turn(keys, jnp.asarray(images)))


def labelled_subset(labels: np.ndarray, per_class: int, seed: int) -> np.ndarray:
  rng = np.random.default_rng(seed)
  picks = [rng.permutation(np.flatnonzero(labels == c))[:per_class] for c in range(NUM_CLASSES)]
  return np.sort(np.concatenate(picks))


# -- training -----------------------------------------------------------------------------


class Classifier(nn.Module):
  backbone: nn.Module

  @nn.compact
  def __call__(self, images, train: bool = False):
    pooled = self.backbone(images, train=train)["pooled"].astype(jnp.float32)
    # Standardised features, as the downstream configs' objective.feature_norm='batch':
    # pooled features barely vary between images, and a head on them raw stays at chance.
    pooled = nn.BatchNorm(use_running_average=not train, use_bias=False, use_scale=False,
                          momentum=0.9, name="feature_norm")(pooled)
    return nn.Dense(NUM_CLASSES, kernel_init=nn.initializers.zeros, name="head")(pooled)


def d4_augment(key, images):
  """Random quarter turn and flips per image (the 'rot90,flip' of the data pipeline)."""
  def one(k, image):
    k1, k2 = jax.random.split(k)
    return transforms.random_flip(k2, transforms.random_rot90(k1, image))
  return jax.vmap(one)(jax.random.split(key, images.shape[0]), images)


def train(name, images, labels, *, steps, batch_size, lr, seed):
  """Returns (model, variables, training images/s, final training loss)."""
  model = Classifier(MODELS[name]())
  variables = jax.jit(model.init)(jax.random.key(seed), jnp.asarray(images[:batch_size]))
  params, stats = variables["params"], variables["batch_stats"]
  schedule = optax.warmup_cosine_decay_schedule(0., lr, max(steps // 10, 1), steps, lr * 1e-2)
  tx = optax.chain(optax.clip_by_global_norm(1.), optax.adamw(schedule, weight_decay=0.05))
  opt_state = tx.init(params)
  augment = name in AUGMENTED

  @jax.jit
  def step(params, stats, opt_state, x, y, key):
    if augment:
      x = d4_augment(key, x)
    def loss_fn(p):
      logits, new = model.apply({"params": p, "batch_stats": stats}, x, train=True,
                                mutable=["batch_stats"])
      loss = optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()
      return loss, new["batch_stats"]
    (loss, stats), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), stats, opt_state, loss

  rng = np.random.default_rng(seed)
  losses, start = [], None
  for i in range(steps):
    idx = rng.choice(len(images), batch_size, replace=len(images) < batch_size)
    params, stats, opt_state, loss = step(params, stats, opt_state, images[idx], labels[idx],
                                          jax.random.key(seed * 100_003 + i))
    if i == 0:
      jax.block_until_ready(loss)
      start = time.perf_counter()  # Steady state: after the compiling first step.
    losses.append(loss)
  jax.block_until_ready(losses[-1])
  per_sec = batch_size * (steps - 1) / (time.perf_counter() - start) if steps > 1 else float("nan")
  variables = {"params": params, "batch_stats": stats}
  return model, variables, per_sec, float(np.mean([float(l) for l in losses[-10:]]))


# -- evaluation ---------------------------------------------------------------------------


def predict(model, variables, images, batch_size=100):
  fn = jax.jit(lambda x: jax.nn.softmax(model.apply(variables, x)))
  return np.concatenate([np.asarray(fn(images[i:i + batch_size]))
                         for i in range(0, len(images), batch_size)])


def classification_metrics(probs, labels):
  return {"accuracy": float(np.mean(probs.argmax(-1) == labels)),
          "auc_macro": float(sk_metrics.roc_auc_score(labels, probs, multi_class="ovr",
                                                      average="macro"))}


def invariance_errors(model, params, images):
  """Median relative change of the pooled embedding when the input turns by 90 (exact
  on the grid) and 45 degrees (bilinear), normalised by the pooled norm and, in
  'vs_spread', by the median distance between different images' embeddings."""
  if isinstance(model, Classifier):
    pooled = jax.jit(lambda x: model.apply({"params": params}, x, method=lambda m, x:
                                           m.backbone(x, train=False)["pooled"]))
  else:  # A bare backbone.
    pooled = jax.jit(lambda x: model.apply({"params": params}, x)["pooled"])
  base = np.asarray(pooled(images), np.float64)
  spread = np.median(np.linalg.norm(base[:, None] - base[None], axis=-1)[np.triu_indices(len(base), 1)])
  turn = jax.vmap(lambda im: transforms.affine_resample(im, jnp.float32(np.pi / 4), jnp.zeros(2)))
  out = {}
  for label, moved in (("rot90", jnp.rot90(images, 1, axes=(1, 2))),
                       ("rot45", jnp.asarray(aperture(np.asarray(turn(images)))))):
    delta = np.linalg.norm(np.asarray(pooled(moved), np.float64) - base, axis=-1)
    out[label] = float(np.median(delta / np.linalg.norm(base, axis=-1)))
    out[f"{label}_vs_spread"] = float(np.median(delta) / spread)
  return out


def init_invariance_by_patch_size(images, seeds=(0, 1, 2)):
  """Randomly initialised backbones (no training): how much of the off-grid error is the
  patch grid's coarseness. Mean over `seeds` of `invariance_errors`."""
  backbones = {
      "equivariant_p4": lambda: equivariant.Model(variant=None, irreps="32x0e + 16x1o + 8x2e",
                                                  depth=2, num_heads=4, patch_size=4),
      "equivariant_p2": lambda: equivariant.Model(variant=None, irreps="32x0e + 16x1o + 8x2e",
                                                  depth=2, num_heads=4, patch_size=2),
      "vit_p4": lambda: vit.Model(**VIT_DIMS),
  }
  out = {}
  for name, make in backbones.items():
    model = make()
    runs = [invariance_errors(model, jax.jit(model.init)(jax.random.key(s), images)["params"],
                              images) for s in seeds]
    out[name] = {k: float(np.mean([r[k] for r in runs])) for k in runs[0]}
  return out


def inference_rate(model, variables, batch=64, repeats=5):
  x = jnp.zeros((batch, IMAGE_SIZE, IMAGE_SIZE, 1))
  fn = jax.jit(lambda x: model.apply(variables, x))
  jax.block_until_ready(fn(x))
  start = time.perf_counter()
  for _ in range(repeats):
    jax.block_until_ready(fn(x))
  return batch * repeats / (time.perf_counter() - start)


def markdown(result) -> str:
  lines = [f"# Equivariant transformer vs ViT vs group pooling ({result['device_kind']}, "
           f"jax {result['jax_version']})", "",
           f"Supervised from scratch, {result['config']['steps']} steps of batch "
           f"{result['config']['batch_size']}, 32x32 Model II-like lenses (3 classes, chance "
           f"accuracy 0.33, AUC 0.5), corners outside the inscribed disk zeroed on every set. "
           f"CPU shared with other jobs (load average {result['load_average'][0]:.1f}): "
           f"images/s are lower bounds. Pooled change = median relative change of the pooled "
           f"embedding; '/ spread' divides by the median distance between different "
           f"images' embeddings (1 = as different as another lens).", "",
           "| model | params | labels | test acc | test AUC | rotated acc | rotated AUC | "
           "shifted-inst acc | shifted-inst AUC |", "|---|---|---|---|---|---|---|---|---|"]
  for run in result["runs"]:
    e = run["eval"]
    lines.append(f"| {run['model']} | {run['params']} | {run['labels']} | "
                 + " | ".join(f"{e[s]['accuracy']:.3f} | {e[s]['auc_macro']:.3f}"
                              for s in ("test", "rotated", "shifted_inst")) + " |")
  lines += ["", "Randomly initialised backbones (mean of 3 seeds), pooled change under a "
            "45-degree turn: the off-grid error is mostly the patch grid's coarseness.", "",
            "| backbone | 45 deg | 45 deg / spread |", "|---|---|---|"]
  for name, inv in result["init_invariance"].items():
    lines.append(f"| {name} | {inv['rot45']:.2g} | {inv['rot45_vs_spread']:.2g} |")
  lines += ["", "| model | params | train img/s | inference img/s | pooled change, 90 deg | "
            "45 deg | 90 deg / spread | 45 deg / spread |", "|---|---|---|---|---|---|---|---|"]
  for run in result["runs"]:
    if run["labels"] != "all":
      continue
    inv = run["invariance"]
    lines.append(f"| {run['model']} | {run['params']} | {run['train_images_per_sec']:.0f} | "
                 f"{run['inference_images_per_sec']:.0f} | {inv['rot90']:.2g} | {inv['rot45']:.2g} | "
                 f"{inv['rot90_vs_spread']:.2g} | {inv['rot45_vs_spread']:.2g} |")
  return "\n".join(lines) + "\n"


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--steps", type=int, default=150)
  parser.add_argument("--batch_size", type=int, default=32)
  parser.add_argument("--lr", type=float, default=2e-3)
  parser.add_argument("--pool_per_class", type=int, default=300,
                      help="Labelled pool ('all labels') per class.")
  parser.add_argument("--few_per_class", type=int, default=100)
  parser.add_argument("--num_eval", type=int, default=450)
  parser.add_argument("--models", default=",".join(MODELS))
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--out_dir", default=os.path.join(
      os.path.dirname(os.path.abspath(__file__)), "results"))
  args = parser.parse_args()
  started = time.time()

  pool_x, pool_y = simulate("model_ii", NUM_CLASSES * args.pool_per_class * 2, seed=1)
  pool = labelled_subset(pool_y, args.pool_per_class, args.seed)  # Exactly balanced.
  pool_x, pool_y = pool_x[pool], pool_y[pool]
  few = labelled_subset(pool_y, args.few_per_class, args.seed)
  test_x, test_y = simulate("model_ii", args.num_eval, seed=2)
  hst_x, hst_y = simulate("model_iii", args.num_eval, seed=3)
  evals = {"test": (test_x, test_y), "rotated": (rotate_randomly(test_x, 4), test_y),
           "shifted_inst": (rotate_randomly(hst_x, 5), hst_y)}
  print(f"data ready in {time.time() - started:.0f}s: pool {len(pool_y)}, few {len(few)}, "
        f"eval {args.num_eval} x {len(evals)}", flush=True)

  init_invariance = init_invariance_by_patch_size(jnp.asarray(test_x[:32]))
  print(json.dumps({"init_invariance": init_invariance}), flush=True)

  runs = []
  for name in args.models.split(","):
    for labels, idx in (("100/class", few), ("all", np.arange(len(pool_y)))):
      t0 = time.time()
      model, variables, train_rate, loss = train(
          name, pool_x[idx], pool_y[idx], steps=args.steps, batch_size=args.batch_size,
          lr=args.lr, seed=args.seed)
      backbone = variables["params"]["backbone"]
      run = {"model": name, "labels": labels, "num_labels": int(len(idx)),
             "params": int(sum(x.size for x in jax.tree.leaves(backbone))),
             "final_train_loss": loss, "train_images_per_sec": train_rate,
             "eval": {s: classification_metrics(predict(model, variables, x), y)
                      for s, (x, y) in evals.items()}}
      if labels == "all":
        run["invariance"] = invariance_errors(model, variables["params"],
                                              jnp.asarray(test_x[:64]))
        run["inference_images_per_sec"] = inference_rate(model, variables)
      run["seconds"] = time.time() - t0
      runs.append(run)
      print(json.dumps(run), flush=True)

  device = jax.devices()[0]
  result = {"device_kind": device.device_kind, "platform": device.platform,
            "jax_version": jax.__version__, "host": platform.node(),
            "load_average": list(os.getloadavg()), "seconds": time.time() - started,
            "config": {**vars(args), "vit_dims": VIT_DIMS,
                       "equivariant_irreps": "32x0e + 16x1o + 8x2e", "group": "C4",
                       "image_size": IMAGE_SIZE, "train_recipe": "model_ii",
                       "shifted_recipe": "model_iii"},
           "init_invariance": init_invariance, "runs": runs}
  os.makedirs(args.out_dir, exist_ok=True)
  stem = os.path.join(args.out_dir, f"equivariant_{device.platform}")
  with open(stem + ".json", "w") as f:
    json.dump(result, f, indent=2)
  with open(stem + ".md", "w") as f:
    f.write(markdown(result))
  print(markdown(result))
  print(f"wrote {stem}.json and .md in {time.time() - started:.0f}s")


if __name__ == "__main__":
  main()
