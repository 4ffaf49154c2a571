r"""lensfm's MAE train step against a plain-PyTorch MAE of the same architecture, side by side.

  pip install -e '.[bench]'   # torch, for this benchmark only
  python -m experiments.benchmarks.vs_torch                   # ViT-Ti/8 and S/8, fp32 and bf16
  python -m experiments.benchmarks.vs_torch --variants=Ti/8 --dtypes=float32 --rounds=3

The PyTorch reference is written here in the shape of the official MAE code (pre-norm
blocks, one qkv projection, `scaled_dot_product_attention`, per-image random masking by
argsort + gather, a learned mask token, norm-pix MSE on hidden patches, AdamW with
global-norm clipping) and runs eager with `torch.set_num_threads(--threads)`; bf16 is
`torch.autocast`. lensfm runs its own trainer's jitted, donated step on a fixed batch
(configs/mae_vit_b.py with the same sizes). Both see the same images. Each config
alternates lensfm and PyTorch for `--rounds` rounds of `--steps` steps, so load from
other jobs on the machine hits both alike; the ratio of medians is the result. Output:
experiments/results/vs_torch_<device>.json and .md.
"""
import json
import math
import os
import platform
import statistics
import time

from absl import app
from absl import flags
import jax
import numpy as np

from experiments import results
from experiments.benchmarks import fixed_step
from lensfm import compilation_cache
from lensfm.models import vit

flags.DEFINE_string("variants", "Ti/8,S/8", "ViT variants, comma-separated.")
flags.DEFINE_string("dtypes", "float32,bfloat16", "Compute dtypes, comma-separated.")
flags.DEFINE_integer("batch", 64, "Batch size.")
flags.DEFINE_integer("image_size", 64, "Image side, pixels.")
flags.DEFINE_integer("decoder_width", 128, "MAE decoder width.")
flags.DEFINE_integer("decoder_depth", 2, "MAE decoder depth.")
flags.DEFINE_integer("steps", 5, "Timed steps per round.")
flags.DEFINE_integer("rounds", 4, "Alternating lensfm/PyTorch rounds.")
flags.DEFINE_integer("threads", 2, "PyTorch intra-op threads.")
flags.DEFINE_bool("lensfm_only", False, "Skip PyTorch (flag sweeps).")
flags.DEFINE_string("out", None,
                    "JSON path (default experiments/results/vs_torch_<device>.json).")


# ------------------------------------------------------------------------- PyTorch MAE
def torch_mae(torch, *, width, depth, mlp_dim, num_heads, patch, image_size, channels,
              dec_width, dec_depth, dec_mlp, dec_heads, mask_ratio):
  """An MAE in plain PyTorch, the official code's structure; returns (module, loss_fn)."""
  nn = torch.nn
  F = torch.nn.functional
  grid = image_size // patch
  num_tokens = grid * grid
  keep = max(1, int(round(num_tokens * (1 - mask_ratio))))

  class Block(nn.Module):
    def __init__(self, dim, mlp, heads):
      super().__init__()
      self.heads = heads
      self.norm1, self.norm2 = nn.LayerNorm(dim, eps=1e-6), nn.LayerNorm(dim, eps=1e-6)
      self.qkv, self.proj = nn.Linear(dim, 3 * dim), nn.Linear(dim, dim)
      self.fc1, self.fc2 = nn.Linear(dim, mlp), nn.Linear(mlp, dim)

    def forward(self, x):
      b, n, d = x.shape
      qkv = self.qkv(self.norm1(x)).reshape(b, n, 3, self.heads, d // self.heads)
      q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)
      a = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(b, n, d)
      x = x + self.proj(a)
      return x + self.fc2(F.gelu(self.fc1(self.norm2(x))))

  class MAE(nn.Module):
    def __init__(self):
      super().__init__()
      self.patch_embed = nn.Conv2d(channels, width, patch, patch)
      self.cls = nn.Parameter(torch.randn(1, 1, width) * 0.02)
      self.register_buffer("pos", torch.from_numpy(vit.sincos_2d(grid, grid, width))[None])
      self.blocks = nn.ModuleList(Block(width, mlp_dim, num_heads) for _ in range(depth))
      self.norm = nn.LayerNorm(width, eps=1e-6)
      self.dec_embed = nn.Linear(width, dec_width)
      self.mask_token = nn.Parameter(torch.randn(1, 1, dec_width) * 0.02)
      self.register_buffer("dec_pos", torch.from_numpy(vit.sincos_2d(grid, grid, dec_width))[None])
      self.dec_blocks = nn.ModuleList(Block(dec_width, dec_mlp, dec_heads) for _ in range(dec_depth))
      self.dec_norm = nn.LayerNorm(dec_width, eps=1e-6)
      self.pred = nn.Linear(dec_width, patch * patch * channels)

    def forward(self, images):  # images [B, C, H, W]
      b = images.shape[0]
      x = self.patch_embed(images).flatten(2).transpose(1, 2) + self.pos
      shuffle = torch.argsort(torch.rand(b, num_tokens), dim=1)
      restore = torch.argsort(shuffle, dim=1)
      x = torch.gather(x, 1, shuffle[:, :keep, None].expand(-1, -1, width))
      x = torch.cat([self.cls.expand(b, -1, -1), x], 1)
      for blk in self.blocks:
        x = blk(x)
      x = self.dec_embed(self.norm(x))[:, 1:]
      x = torch.cat([x, self.mask_token.expand(b, num_tokens - keep, -1)], 1)
      x = torch.gather(x, 1, restore[:, :, None].expand(-1, -1, dec_width)) + self.dec_pos
      for blk in self.dec_blocks:
        x = blk(x)
      mask = torch.ones(b, num_tokens)
      mask[:, :keep] = 0
      return self.pred(self.dec_norm(x)), torch.gather(mask, 1, restore)

  def loss_fn(model, images):
    pred, mask = model(images)
    b, c, h, w = images.shape
    target = images.reshape(b, c, grid, patch, grid, patch).permute(0, 2, 4, 3, 5, 1)
    target = target.reshape(b, num_tokens, patch * patch * c)
    mean, var = target.mean(-1, keepdim=True), target.var(-1, keepdim=True, unbiased=False)
    target = (target - mean) / (var + 1e-6).sqrt()
    per_token = ((pred.float() - target) ** 2).mean(-1)
    return (per_token * mask).sum() / mask.sum()

  return MAE(), loss_fn


class TorchStep:
  def __init__(self, torch, dims, images_nhwc, dtype, threads):
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    self.torch = torch
    self.model, self.loss_fn = torch_mae(torch, **dims)
    self.opt = torch.optim.AdamW(self.model.parameters(), lr=1e-4, betas=(0.9, 0.95),
                                 weight_decay=0.05)
    self.images = torch.from_numpy(np.ascontiguousarray(images_nhwc.transpose(0, 3, 1, 2)))
    self.bf16 = dtype == "bfloat16"
    self.loss = None

  def __call__(self):
    torch = self.torch
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.bf16):
      loss = self.loss_fn(self.model, self.images)
    self.opt.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(self.model.parameters(), 1.0)
    self.opt.step()
    self.loss = loss

  def sync(self):
    return float(self.loss.detach())


# ------------------------------------------------------------------------------ timing
def sample_images(batch, image_size, seed=0):
  """Simulated Model II lenses, z-scored per image as lensfm's input does."""
  from lensfm.data import sim_source  # pylint: disable=g-import-not-at-top
  recipe = sim_source.recipe_by_name("model_ii", {"num_pix": image_size})
  keys = jax.random.split(jax.random.key(seed), batch)
  keys = jax.vmap(jax.random.key_data)(keys)
  images = np.asarray(jax.jit(lambda k: sim_source.simulate(recipe, k)["image"])(keys), np.float32)
  images = (images - images.mean((1, 2, 3), keepdims=True)) / (images.std((1, 2, 3), keepdims=True) + 1e-6)
  return images


def cpu_model() -> str:
  try:
    with open("/proc/cpuinfo") as f:
      return next(l.split(":", 1)[1].strip() for l in f if l.startswith("model name"))
  except (OSError, StopIteration):
    return platform.processor() or platform.machine()


def main(argv):
  del argv
  args = flags.FLAGS  # Read as args.NAME.
  compilation_cache.enable()
  import torch  # pylint: disable=g-import-not-at-top

  load_start = os.getloadavg()
  images = sample_images(args.batch, args.image_size)
  rows = []
  for variant in args.variants.split(","):
    for dtype in args.dtypes.split(","):
      config = fixed_step.mae_config(variant, dtype, args.batch, args.image_size,
                                     args.decoder_width, args.decoder_depth)
      d = vit.parse_variant(variant)
      dims = dict(width=d["width"], depth=d["depth"], mlp_dim=d["mlp_dim"],
                  num_heads=d["num_heads"], patch=d["patch_size"], image_size=args.image_size,
                  channels=images.shape[-1], dec_width=args.decoder_width,
                  dec_depth=args.decoder_depth, dec_mlp=config.objective.decoder_mlp_dim,
                  dec_heads=config.objective.decoder_heads,
                  mask_ratio=config.objective.mask_ratio)
      ours = fixed_step.LensfmStep(config, images)
      theirs = None if args.lensfm_only else TorchStep(torch, dims, images, dtype, args.threads)
      t_ours, t_theirs, loss_theirs = [], [], math.nan
      for _ in range(args.rounds):
        t, loss_ours = fixed_step.time_steps(ours, args.steps)
        t_ours.append(t)
        if theirs is not None:
          t, loss_theirs = fixed_step.time_steps(theirs, args.steps)
          t_theirs.append(t)
      m_ours = statistics.median(t_ours)
      m_theirs = statistics.median(t_theirs) if t_theirs else math.nan
      row = {"variant": variant, "dtype": dtype,
             "lensfm_step_ms": round(1e3 * m_ours, 2), "torch_step_ms": round(1e3 * m_theirs, 2),
             "lensfm_images_per_s": round(args.batch / m_ours, 1),
             "torch_images_per_s": round(args.batch / m_theirs, 1),
             "ratio": round(m_theirs / m_ours, 3),
             "lensfm_rounds_ms": [round(1e3 * t, 2) for t in t_ours],
             "torch_rounds_ms": [round(1e3 * t, 2) for t in t_theirs],
             "lensfm_compile_s": round(ours.compile_s, 2),
             "lensfm_loss": round(loss_ours, 4), "torch_loss": round(loss_theirs, 4),
             "lensfm_gflop_per_step_xla": round(
                 float(ours.compiled.cost_analysis().get("flops", math.nan)) / 1e9, 2)}
      print(json.dumps(row), flush=True)
      rows.append(row)
      del ours, theirs

  by = {(r["variant"], r["dtype"]): r for r in rows}
  for r in rows:
    fp32 = by.get((r["variant"], "float32"))
    if r["dtype"] == "bfloat16" and fp32:
      r["lensfm_bf16_over_fp32"] = round(fp32["lensfm_step_ms"] / r["lensfm_step_ms"], 3)
      r["torch_bf16_over_fp32"] = round(fp32["torch_step_ms"] / r["torch_step_ms"], 3)
  result = {
      "benchmark": "MAE train step, lensfm (jit) vs plain PyTorch (eager), fixed batch",
      "device": jax.devices()[0].device_kind, "platform": jax.devices()[0].platform,
      "cpu": cpu_model(), "cpu_count": os.cpu_count(),
      "load_average_start": load_start, "load_average_end": os.getloadavg(),
      "jax_version": jax.__version__, "torch_version": torch.__version__,
      "torch_threads": args.threads, "xla_flags": os.environ.get("XLA_FLAGS", ""),
      "batch": args.batch, "image_size": args.image_size, "mask_ratio": 0.75,
      "decoder": f"{args.decoder_width} wide x {args.decoder_depth} deep",
      "steps_per_round": args.steps, "rounds": args.rounds, "rows": rows,
      "date": time.strftime("%Y-%m-%d %H:%M:%S"),
  }
  out = args.out or results.stem("vs_torch") + ".json"
  lines = [f"MAE train step, batch {args.batch}, {args.image_size}x{args.image_size}, decoder "
           f"{result['decoder']}; {result['cpu']} ({os.cpu_count()} cores, {result['device']}), "
           f"JAX {jax.__version__}, PyTorch {torch.__version__} ({args.threads} threads); medians "
           f"of {args.rounds} interleaved rounds of {args.steps} steps; load average "
           f"{load_start[0]:.2f} at the start, {result['load_average_end'][0]:.2f} at the end "
           f"({result['date']}).", "",
           "| model | dtype | lensfm images/s | PyTorch images/s | lensfm / PyTorch | "
           "lensfm bf16 / fp32 | PyTorch bf16 / fp32 |",
           "|---|---|---|---|---|---|---|"]
  for r in rows:
    lines.append(f"| ViT-{r['variant']} | {r['dtype']} | {r['lensfm_images_per_s']} | "
                 f"{r['torch_images_per_s']} | {r['ratio']}x | {r.get('lensfm_bf16_over_fp32', '')} | "
                 f"{r.get('torch_bf16_over_fp32', '')} |")
  print(results.write(os.path.splitext(out)[0], result, lines))
  print(f"Wrote {out}")


if __name__ == "__main__":
  app.run(main)
