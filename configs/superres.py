r"""Super-resolution (x2 or x4) with a pixel-shuffle decoder on a pretrained encoder.

Data: simulated Model II-like lenses (recipe `model_ii`, 64x64 HR, made on the
accelerator); the LR image is made on device by averaging scale x scale pixel blocks
(the same sky seen with `scale` times larger pixels; `objective.lr_blur_sigma` adds a
worse PSF). The encoder sees the LR image (its patch size must divide 64 / scale), the
decoder predicts a residual over bicubic interpolation. PSNR and SSIM are always
reported next to bicubic's (psnr_bicubic, ssim_bicubic, psnr_gain_db).

  python -m lensfm.main --config=configs/superres.py:scale=2 \
      --config.init_from=workdirs/mae_vit_b --workdir=workdirs/sr_x2
Modes `:mode=finetune|linear|scratch|resnet` (linear: frozen encoder, only the decoder
trains). On a laptop CPU (a minute or two, 32x32 HR; needs configs/mae_vit_b.py:runlocal):
  python -m lensfm.main --config=configs/superres.py:runlocal \
      --config.init_from=/tmp/lensfm_mae --workdir=/tmp/lensfm_sr
  python -m lensfm.main --config=configs/evaluate.py --config.checkpoint=/tmp/lensfm_sr \
      --workdir=/tmp/lensfm_sr_eval       # summary.json + sr_triptych.png (LR, SR, HR)

What it should reach (accelerator scale): x2 PSNR at least 10 dB above
bicubic. Not yet measured on an accelerator; see experiments/results/downstream_* for the
CPU-scale runs.
"""
from configs import common
from lensfm.config_args import parse_arg
import ml_collections


def get_config(arg=None):
  arg = parse_arg(arg, variant="B/8", runlocal=False, mode="finetune", scale=2)
  c = ml_collections.ConfigDict()
  c.task = "finetune"
  c.seed = 0
  c.init_from = ""

  # Flips and quarter turns keep an image's block structure, so LR stays aligned.
  c.data = common.sim_data("model_ii", runlocal=arg.runlocal)
  c.model = dict(name="vit", variant=arg.variant, pool="cls", dtype="bfloat16", remat=False)
  c.objective = dict(name="superres", scale=arg.scale, lr_blur_sigma=0., lr_normalize=True,
                     decoder_features=32, decoder_depth=2, loss="mse")

  c.batch_size = 256
  c.total_steps = 20_000
  c.optim = common.adamw(1e-3, 1_000, min_lr=1e-6, weight_decay=0.0, layer_decay=0.75,
                         freeze="")
  c.evals = dict(val=dict(type="downstream", every=2_000, split="validation",
                          num_examples=1024, plots_dir="plots"))
  common.downstream_loop(c, runlocal=arg.runlocal)

  if arg.runlocal:
    c.model = common.runlocal_vit()
    c.batch_size = 64
    c.total_steps = 150
    c.optim.update(base_lr=2e-3, warmup_steps=15)
    c.evals.val.update(every=50, num_examples=256)
  common.apply_mode(c, arg.mode, arg.runlocal, allowed=("finetune", "linear", "scratch",
                                                        "resnet"),
                    standardize_features=False)  # The SR decoder reads tokens, not features.
  return c
