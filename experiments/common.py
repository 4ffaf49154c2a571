"""What the CPU-scale studies in experiments/ share."""
import ml_collections

from configs import mae_vit_b


def cpu_pretrain_config(steps: int) -> ml_collections.ConfigDict:
  """MAE pretraining of the runlocal ViT on 32x32 simulated lenses, batch 64: what the
  CPU-scale benchmarks in experiments/ fine-tune from."""
  c = mae_vit_b.get_config("runlocal")
  c.data.image_size = 32
  c.data.recipe_overrides = {"num_pix": 32}
  c.update(batch_size=64, total_steps=steps, log_every=50, checkpoint_every=steps,
           visualize_every=0, progress_bar=False)
  c.optim.update(base_lr=1.5e-3, warmup_steps=max(steps // 10, 1))
  return c
