r"""MAE vs SimCLR vs BYOL vs DINO on the same backbone, data and budget, scored by LensBench:
Model II classification with 100 labels per class by linear probe and by fine-tuning (and,
once, the same backbone from scratch), plus the transfer of the fine-tune to Model I, III
and rotated scenes.

  python experiments/bench_ssl.py                        # cpu preset, 300 steps each
  python experiments/bench_ssl.py --steps=2000 --batch_size=256 --backbone=hybrid

Each method's config is its `configs/<method>_vit_b.py:runlocal,backbone=B` (32x32 Model II
lenses simulated on device) with the same batch size and steps. A thin caller of
LensBench (`--config.only='^classify/model_ii/100/'`). Writes
experiments/results/ssl_bench_<backbone>_<platform>.{md,json}.
"""
import json
import os
import sys

from absl import app
from absl import flags

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # pylint: disable=g-import-not-at-top

from experiments import common  # pylint: disable=g-import-not-at-top
from lensfm import config_args
from lensfm.tasks import pretrain

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RESULTS = os.path.join(ROOT, "experiments", "results")
_METHODS = flags.DEFINE_list("methods", ["mae", "simclr", "byol", "dino"], "SSL objectives.")
_BACKBONE = flags.DEFINE_string("backbone", "vit", "vit | hybrid | resnet (MAE: not resnet).")
_STEPS = flags.DEFINE_integer("steps", 300, "Pretraining steps per method.")
_BATCH = flags.DEFINE_integer("batch_size", 64, "Pretraining batch size.")
_PRESET = flags.DEFINE_enum("preset", "cpu", ["runlocal", "cpu", "accelerator"], "LensBench preset.")
_WORKDIR = flags.DEFINE_string("workdir", "/tmp/lensfm_ssl_bench", "Run directories.")


def pretrain_config(method: str):
  arg = "runlocal" + (f",backbone={_BACKBONE.value}" if method != "mae" else "")
  c = config_args.load(os.path.join(ROOT, "configs", f"{method}_vit_b.py:{arg}"))
  c.data.image_size = 32
  c.data.recipe_overrides = {"num_pix": 32}
  c.update(batch_size=_BATCH.value, total_steps=_STEPS.value, checkpoint_every=_STEPS.value,
           visualize_every=0, progress_bar=False, evals={})
  c.optim.warmup_steps = max(_STEPS.value // 10, 1)
  return c


def main(argv):
  del argv
  table = {}
  for i, method in enumerate(_METHODS.value):
    workdir = os.path.join(_WORKDIR.value, method)
    pretrain.run(pretrain_config(method), workdir)
    modes = "(linear|finetune|scratch)" if i == 0 else "(linear|finetune)"
    summary = common.lensbench(workdir, os.path.join(workdir, "bench"), preset=_PRESET.value,
                               only=f"^classify/model_ii/100/{modes}/")
    table[method] = summary["table"]
  stem = os.path.join(RESULTS, f"ssl_bench_{_BACKBONE.value}_{jax.devices()[0].platform}")
  with open(stem + ".json", "w") as f:
    json.dump({"steps": _STEPS.value, "batch_size": _BATCH.value, "preset": _PRESET.value,
               "device_kind": jax.devices()[0].device_kind, "jax_version": jax.__version__,
               "tables": table}, f, indent=2)
  lines = [f"SSL objectives, {_STEPS.value} pretraining steps of batch {_BATCH.value}, "
           f"backbone {_BACKBONE.value}; LensBench {_PRESET.value} (test split, mean ± std "
           "over seeds).", "", "| method | row | fine-tuned | linear probe |", "|---|---|---|---|"]
  for method, rows in table.items():
    for row in rows:
      cells = [row.get(m, {}) for m in ("finetune", "linear")]
      fmt = lambda s: "–" if not s or s.get("mean") is None else f"{s['mean']:.3f} ± {s['std']:.3f}"
      lines.append(f"| {method} | {row['row']} | {fmt(cells[0])} | {fmt(cells[1])} |")
  with open(stem + ".md", "w") as f:
    f.write("\n".join(lines) + "\n")
  print("\n".join(lines))


if __name__ == "__main__":
  app.run(main)
