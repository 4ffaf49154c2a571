"""What the CPU-scale studies in experiments/studies/ share (a module, not a script)."""
import os
import shutil

import ml_collections

from configs import bench as bench_config
from configs import mae_vit_b
from lensfm.tasks import bench


def cpu_pretrain_config(steps: int) -> ml_collections.ConfigDict:
  """MAE pretraining of the runlocal ViT on 32x32 simulated lenses, batch 64: what the
  CPU-scale studies fine-tune from."""
  c = mae_vit_b.get_config("runlocal")
  c.data.image_size = 32
  c.data.recipe_overrides = {"num_pix": 32}
  c.update(batch_size=64, total_steps=steps, log_every=50, checkpoint_every=steps,
           visualize_every=0, progress_bar=False)
  c.optim.update(base_lr=1.5e-3, warmup_steps=max(steps // 10, 1))
  return c


def lensbench(init_from: str, workdir: str, *, preset: str = "cpu", only: str = "",
              results_stem: str = "", **overrides) -> dict:
  """Runs LensBench (configs/bench.py:preset=PRESET) on a checkpoint, restricted to the
  rows matching `only`; copies BENCH.md / bench.json / plots to RESULTS_STEM.* (a
  results.stem: BENCH.md names the device, JAX version and config)."""
  # The studies compare checkpoints at the fixed budget (the earlier 'cpu' table).
  c = bench_config.get_config(f"preset={ {'cpu': 'cpu_budget'}.get(preset, preset) }")
  c.update(init_from=init_from, only=only, **{"regimes": ("budget",), **overrides})
  summary = bench.run(c, workdir)
  if results_stem:
    os.makedirs(os.path.dirname(results_stem), exist_ok=True)
    for src, suffix in (("BENCH.md", ".md"), ("bench.json", ".json"),
                        ("label_efficiency.png", "_label_efficiency.png"),
                        ("cross_instrument.png", "_cross_instrument.png")):
      shutil.copyfile(os.path.join(workdir, src), results_stem + suffix)
  return summary
