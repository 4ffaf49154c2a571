r"""MAE vs SimCLR vs BYOL vs DINO: the same backbone, data and budget; frozen-feature
kNN and linear-probe accuracy, the collapse indicator, and training images/s.

  python experiments/bench_ssl.py                       # CPU-sized defaults (~10 min)
  python experiments/bench_ssl.py --steps=2000 --batch_size=256 --backbone=hybrid

Each method's config is its `configs/<method>_vit_b.py:runlocal` (32x32 Model II
lenses simulated on device, classes no_sub / cdm / axion), with the backbone replaced
by the same one for all (the runlocal preset of --backbone) and the same batch size
and number of steps, so every method sees the same number of simulated images.
After training, the encoder named by the config's kNN monitor (DINO: the teacher;
others: the trained encoder) embeds a fixed labelled bank (train split) and query set
(validation split), drawn once and shared by all methods; reported:
  knn_accuracy: 20-NN cosine-weighted vote (lensfm.objectives.metrics.knn_predict), chance = 1/3;
  linear_probe_accuracy: L2-regularised logistic regression (scikit-learn) on
    standardised frozen features;
  embedding_std: spread of the normalised embeddings (1/sqrt(D) healthy, 0 collapsed);
  images_per_sec: training throughput after the compiling step, simulation included
    (DINO's steps also process 2 local views per image, MAE's encoder only 1/4 of the
    tokens, so the cost per image differs by design).
A randomly initialised encoder is evaluated the same way as a baseline.

Results are printed and written to experiments/results/ssl_bench_<backbone>_<device>.json
and .md, naming the device, JAX version, configs and the host's load average (the
numbers of a shared CPU move with it).
"""
import json
import os
import platform
import sys
import time

from absl import app
from absl import flags

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # pylint: disable=g-import-not-at-top
import numpy as np

from lensfm import config_args  # pylint: disable=g-import-not-at-top
from lensfm import data as data_lib
from lensfm.objectives import metrics as metrics_lib
from lensfm.train import trainer as trainer_lib

_METHODS = flags.DEFINE_list("methods", ["mae", "simclr", "byol", "dino"], "Objectives to compare.")
_BACKBONE = flags.DEFINE_enum("backbone", "vit", ["vit", "hybrid", "resnet"],
                              "Backbone for all methods (its runlocal preset).")
_STEPS = flags.DEFINE_integer("steps", 150, "Training steps per method.")
_BATCH = flags.DEFINE_integer("batch_size", 64, "Global batch size.")
_BANK = flags.DEFINE_integer("bank_batches", 16, "Batches in the kNN bank / probe train set.")
_QUERIES = flags.DEFINE_integer("val_batches", 8, "Batches of validation queries.")
_SEED = flags.DEFINE_integer("seed", 0, "Training seed (evaluation data use seed + 1).")
_OUT = flags.DEFINE_string("out_dir", None, "Default experiments/results/.")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def common_model(backbone: str) -> dict:
  """The runlocal preset of `backbone`, from the SimCLR config (all configs share it)."""
  spec = os.path.join(ROOT, "configs", f"simclr_vit_b.py:runlocal,backbone={backbone}")
  return config_args.load(spec).model.to_dict()


def method_config(method: str, backbone: str, steps: int, batch_size: int, seed: int):
  c = config_args.load(os.path.join(ROOT, "configs", f"{method}_vit_b.py:runlocal"))
  c.data.image_size = 32
  c.data.recipe_overrides = {"num_pix": 32}
  c.model = common_model(backbone)
  c.batch_size = batch_size
  c.total_steps = steps  # Schedules (lr, EMA momentum) span the budget.
  c.seed = seed
  c.progress_bar = False
  return c


def features_path(config) -> str:
  evals = config.get("evals", None) or {}
  return evals["knn"].get("features", "params/encoder") if "knn" in evals else "params/encoder"


def draw_eval_sets(config, sharding, seed: int) -> dict[str, list]:
  """Fixed labelled bank (train split) and queries (validation split), clean images."""
  data_config = config.data.copy_and_resolve_references()
  data_config.augment = ""
  sets = {}
  for name, split, n in (("bank", "train", _BANK.value), ("queries", "validation", _QUERIES.value)):
    source = data_lib.make_input(data_config, global_batch_size=config.batch_size,
                                 sharding=sharding, seed=seed, split=split)
    sets[name] = [{k: b[k] for k in ("image", "label", "mask")}
                  for b in (next(source) for _ in range(n))]
  return sets


def linear_probe_accuracy(train_x, train_y, test_x, test_y) -> float:
  from sklearn.linear_model import LogisticRegression  # pylint: disable=g-import-not-at-top
  from sklearn.preprocessing import StandardScaler  # pylint: disable=g-import-not-at-top
  scaler = StandardScaler().fit(train_x)
  probe = LogisticRegression(max_iter=2000, C=1.0).fit(scaler.transform(train_x), train_y)
  return float(probe.score(scaler.transform(test_x), test_y))


def evaluate(trainer, params, eval_sets) -> dict[str, float]:
  model = trainer.model
  embed = jax.jit(lambda p, x: model.apply({"params": p}, x, train=False)["pooled"])
  (bx, by), (qx, qy) = (knn.extract_features(embed, params, iter(eval_sets[n]), len(eval_sets[n]))
                        for n in ("bank", "queries"))
  num_classes = int(max(by.max(), qy.max())) + 1
  probs = metrics_lib.knn_predict(bx, by, qx, k=20, temperature=0.07, num_classes=num_classes)
  return {"knn_accuracy": float(np.mean(probs.argmax(1) == qy)),
          "linear_probe_accuracy": linear_probe_accuracy(bx, by, qx, qy),
          "embedding_std": float(metrics_lib.embedding_std(qx)),
          "embed_dim": int(qx.shape[1]), "num_bank": int(len(by)), "num_queries": int(len(qy))}


def train(config):
  """Trains `config.total_steps` steps; returns (trainer, state, timing and last metrics)."""
  trainer = trainer_lib.Trainer(config, "/tmp/lensfm_bench_ssl")
  state = trainer.init_state()
  step_fn = trainer.compile_step()
  train_input = data_lib.make_input(config.data, global_batch_size=config.batch_size,
                                    sharding=trainer.data_sharding, seed=config.seed)
  losses = []
  with jax.set_mesh(trainer.mesh):
    t0 = time.perf_counter()
    state, metrics = step_fn(state, next(train_input))
    jax.block_until_ready(metrics)
    first_step_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    for step in range(2, config.total_steps + 1):
      state, metrics = step_fn(state, next(train_input))
      if step % 25 == 0 or step == config.total_steps:
        losses.append((step, float(metrics["loss"])))
    jax.block_until_ready(metrics)
    elapsed = time.perf_counter() - t0
  metrics = {k: float(v) for k, v in jax.device_get(metrics).items()}
  if metrics["nonfinite_count"]:
    raise FloatingPointError(f"{config.objective.name}: non-finite loss during the benchmark.")
  return trainer, state, {
      "first_step_s": round(first_step_s, 2),
      "images_per_sec": round(config.batch_size * (config.total_steps - 1) / elapsed, 1),
      "train_s": round(elapsed, 1), "loss_curve": losses, "final_metrics": metrics}


def markdown_table(result) -> str:
  rows = ["| method | kNN acc | linear probe acc | embedding std | images/s | final loss |",
          "|---|---|---|---|---|---|"]
  for name, r in result["methods"].items():
    e = r["eval"]
    ips = r.get("images_per_sec", "-")
    loss = r.get("final_metrics", {}).get("loss", float("nan"))
    rows.append(f"| {name} | {e['knn_accuracy']:.3f} | {e['linear_probe_accuracy']:.3f} | "
                f"{e['embedding_std']:.4f} | {ips} | {loss:.4g} |")
  head = (f"SSL benchmark on {result['device_kind']} ({result['num_devices']} device(s)), "
          f"JAX {result['jax_version']}, backbone {result['backbone']} "
          f"({json.dumps(result['model'])}), {result['steps']} steps x batch "
          f"{result['batch_size']}, 32x32 model_ii (3 classes, chance 0.333), bank "
          f"{result['num_bank']} / queries {result['num_queries']}; host load average "
          f"{result['load_average_start']} -> {result['load_average_end']}.\n\n")
  return head + "\n".join(rows) + "\n"


def main(argv):
  del argv
  backbone = _BACKBONE.value
  device = jax.devices()[0]
  result = {"device_kind": device.device_kind, "platform": device.platform,
            "num_devices": jax.device_count(), "jax_version": jax.__version__,
            "host": platform.node(), "cpu_count": os.cpu_count(),
            "load_average_start": [round(v, 1) for v in os.getloadavg()],
            "backbone": backbone, "model": common_model(backbone), "steps": _STEPS.value,
            "batch_size": _BATCH.value, "date": time.strftime("%Y-%m-%d %H:%M:%S"),
            "methods": {}}
  eval_sets = None
  for method in _METHODS.value:
    if method == "mae" and backbone == "resnet":
      print("== mae: skipped, a ResNet has no tokens to drop.", flush=True)
      continue
    config = method_config(method, backbone, _STEPS.value, _BATCH.value, _SEED.value)
    print(f"== {method}: training {config.total_steps} steps", flush=True)
    trainer, state, timing = train(config)
    if eval_sets is None:  # Drawn once, shared by every method (same mesh for all).
      eval_sets = draw_eval_sets(config, trainer.data_sharding, _SEED.value + 1)
      baseline = evaluate(trainer, trainer.init_state()["params"]["encoder"], eval_sets)
      result["methods"]["random_init"] = {"eval": baseline}
      print("random_init", json.dumps(baseline), flush=True)
    path = features_path(config)
    entry = {"config": f"configs/{method}_vit_b.py:runlocal",
             "objective": config.objective.to_dict(),
             "optim": config.optim.to_dict(), "features": path, **timing,
             "eval": evaluate(trainer, knn.state_subtree(state, path), eval_sets)}
    result["methods"][method] = entry
    print(method, json.dumps({k: entry[k] for k in ("images_per_sec", "first_step_s", "eval")}),
          flush=True)
  result["num_bank"] = result["methods"]["random_init"]["eval"]["num_bank"]
  result["num_queries"] = result["methods"]["random_init"]["eval"]["num_queries"]
  result["load_average_end"] = [round(v, 1) for v in os.getloadavg()]

  out_dir = _OUT.value or os.path.join(ROOT, "experiments", "results")
  os.makedirs(out_dir, exist_ok=True)
  stem = f"ssl_bench_{backbone}_{device.device_kind.replace(' ', '_').replace('/', '-')}"
  with open(os.path.join(out_dir, stem + ".json"), "w") as f:
    json.dump(result, f, indent=2)
  table = markdown_table(result)
  with open(os.path.join(out_dir, stem + ".md"), "w") as f:
    f.write(table)
  print(table)
  print(f"Wrote {os.path.join(out_dir, stem)}.json/.md")


if __name__ == "__main__":
  app.run(main)
