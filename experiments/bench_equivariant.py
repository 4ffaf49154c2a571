r"""What rotation equivariance buys: the equivariant backbone vs. the ViT, each pretrained
with MAE on the same data and budget, then scored by LensBench's label-efficiency rows
(Model II at 10 and 100 labels per class) and rotation-robustness row (the Model II@100
fine-tune on scenes the simulator rendered rotated by random angles), plus the transfer to
Model I and III.

  python experiments/bench_equivariant.py                    # cpu preset, 300 MAE steps
  python experiments/bench_equivariant.py --steps=2000 --preset=accelerator

A thin caller of LensBench (`--config.only='^classify/model_ii/(10|100)/'`). Writes
experiments/results/equivariant_<platform>.{md,json}.
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
_STEPS = flags.DEFINE_integer("steps", 300, "MAE pretraining steps per backbone.")
_BATCH = flags.DEFINE_integer("batch_size", 64, "Pretraining batch size.")
_PRESET = flags.DEFINE_enum("preset", "cpu", ["runlocal", "cpu", "accelerator"], "LensBench preset.")
_WORKDIR = flags.DEFINE_string("workdir", "/tmp/lensfm_equivariant", "Run directories.")
CONFIGS = {"equivariant": "mae_equivariant.py:runlocal", "vit": "mae_vit_b.py:runlocal"}


def pretrain_config(spec: str):
  c = config_args.load(os.path.join(ROOT, "configs", spec))
  c.data.image_size = 32
  c.data.recipe_overrides = {"num_pix": 32}
  c.update(batch_size=_BATCH.value, total_steps=_STEPS.value, checkpoint_every=_STEPS.value,
           visualize_every=0, progress_bar=False)
  c.optim.warmup_steps = max(_STEPS.value // 10, 1)
  return c


def main(argv):
  del argv
  tables = {}
  for name, spec in CONFIGS.items():
    workdir = os.path.join(_WORKDIR.value, name)
    pretrain.run(pretrain_config(spec), workdir)
    summary = common.lensbench(workdir, os.path.join(workdir, "bench"), preset=_PRESET.value,
                               only="^classify/model_ii/(10|100)/(finetune|linear|scratch)/")
    tables[name] = summary["table"]
  stem = os.path.join(RESULTS, f"equivariant_{jax.devices()[0].platform}")
  with open(stem + ".json", "w") as f:
    json.dump({"steps": _STEPS.value, "batch_size": _BATCH.value, "preset": _PRESET.value,
               "device_kind": jax.devices()[0].device_kind, "jax_version": jax.__version__,
               "tables": tables}, f, indent=2)
  fmt = lambda s: "–" if not s or s.get("mean") is None else f"{s['mean']:.3f} ± {s['std']:.3f}"
  lines = [f"MAE-pretrained backbones ({_STEPS.value} steps of batch {_BATCH.value}), LensBench "
           f"{_PRESET.value}, test split.", "",
           "| backbone | row | fine-tuned | linear probe | scratch |", "|---|---|---|---|---|"]
  for name, rows in tables.items():
    for row in rows:
      lines.append(f"| {name} | {row['row']} | " + " | ".join(
          fmt(row.get(m)) for m in ("finetune", "linear", "scratch")) + " |")
  with open(stem + ".md", "w") as f:
    f.write("\n".join(lines) + "\n")
  print("\n".join(lines))


if __name__ == "__main__":
  app.run(main)
