r"""MAE vs SimCLR vs BYOL vs DINO on the same backbone, data and budget, scored by LensBench:
Model II classification with 100 labels per class by linear probe and by fine-tuning (and,
once, the same backbone from scratch), plus the transfer of the fine-tune to Model I, III
and rotated scenes.

  python -m experiments.studies.compare_ssl              # cpu preset, 300 steps each
  python -m experiments.studies.compare_ssl --steps=2000 --batch_size=256 --backbone=hybrid

Each method's config is its `configs/<method>_vit_b.py:runlocal,backbone=B` (32x32 Model II
lenses simulated on device) with the same batch size and steps. A thin caller of
LensBench (`--config.only='^classify/model_ii/100/'`). Writes
experiments/results/ssl_bench_<backbone>_<device>.{md,json}.
"""
import os

from absl import app
from absl import flags

from configs import byol_vit_b
from configs import dino_vit_b
from configs import mae_vit_b
from configs import simclr_vit_b
from experiments import results
from experiments.studies import common
from lensfm.tasks import pretrain

CONFIGS = {"mae": mae_vit_b, "simclr": simclr_vit_b, "byol": byol_vit_b, "dino": dino_vit_b}
_METHODS = flags.DEFINE_list("methods", ["mae", "simclr", "byol", "dino"], "SSL objectives.")
_BACKBONE = flags.DEFINE_string("backbone", "vit", "vit | hybrid | resnet (MAE: not resnet).")
_STEPS = flags.DEFINE_integer("steps", 300, "Pretraining steps per method.")
_BATCH = flags.DEFINE_integer("batch_size", 64, "Pretraining batch size.")
_PRESET = flags.DEFINE_enum("preset", "cpu", ["runlocal", "cpu", "accelerator"], "LensBench preset.")
_WORKDIR = flags.DEFINE_string("workdir", "/tmp/lensfm_ssl_bench", "Run directories.")


def pretrain_config(method: str):
  arg = "runlocal" + (f",backbone={_BACKBONE.value}" if method != "mae" else "")
  c = CONFIGS[method].get_config(arg)
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
  result = {"steps": _STEPS.value, "batch_size": _BATCH.value, "preset": _PRESET.value,
            "tables": table}
  lines = [f"SSL objectives, {_STEPS.value} pretraining steps of batch {_BATCH.value}, "
           f"backbone {_BACKBONE.value}; LensBench {_PRESET.value} (test split, mean ± std "
           "over seeds).", "", "| method | row | fine-tuned | linear probe |", "|---|---|---|---|"]
  for method, rows in table.items():
    for row in rows:
      cells = [row.get(m, {}) for m in ("finetune", "linear")]
      fmt = lambda s: "–" if not s or s.get("mean") is None else f"{s['mean']:.3f} ± {s['std']:.3f}"
      lines.append(f"| {method} | {row['row']} | {fmt(cells[0])} | {fmt(cells[1])} |")
  print(results.write(results.stem("ssl_bench", _BACKBONE.value), result, lines))


if __name__ == "__main__":
  app.run(main)
