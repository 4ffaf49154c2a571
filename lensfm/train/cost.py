"""What a train step costs: its FLOPs (counted on the traced program, or XLA's count), its
peak memory (XLA's buffer assignment), the batch that fits a device, and the MAE step's
matmul count. Used by the benchmarks in experiments/benchmarks/ and their tests.

  flops = jaxpr_matmul_flops(step.trace(state, batch).jaxpr)   # model FLOPs, any backend
  fixed, per_example = line_through([(16, peak_bytes(c16)), (64, peak_bytes(c64))])
  largest_batch(fixed, per_example, device_gb=80)
"""
import math

from lensfm.models import vit
from lensfm.objectives import mae

# Dense peak TFLOP/s per device (vendor spec sheets, no sparsity).
PEAK_TFLOPS = {
    ("NVIDIA H100 80GB HBM3", "bfloat16"): 989.,
    ("NVIDIA H100", "bfloat16"): 989.,
    ("NVIDIA H200", "bfloat16"): 989.,
    ("NVIDIA A100-SXM4-80GB", "bfloat16"): 312.,
    ("NVIDIA A100-SXM4-40GB", "bfloat16"): 312.,
    ("TPU v4", "bfloat16"): 275.,
    ("TPU v5 lite", "bfloat16"): 197.,
    ("TPU v5p", "bfloat16"): 459.,
}
# Share of a device's memory a step may take (the rest: runtime, fragmentation).
HEADROOM = 0.8


def step_flops(compiled, lowered=None) -> float:
  """XLA's FLOPs per step: from the lowered program when given, since on GPU the compiled
  one hands its dots to cuBLAS/cuDNN calls that its cost analysis does not count."""
  analysis = (lowered or compiled).cost_analysis()
  if isinstance(analysis, (list, tuple)):
    analysis = analysis[0]
  return float(analysis.get("flops", float("nan"))) if analysis else float("nan")


def peak_bytes(compiled) -> int | None:
  """XLA's peak memory of a compiled program: arguments + outputs + temporaries - donated
  aliases (None where the backend gives no memory analysis)."""
  mem = compiled.memory_analysis()
  if mem is None:
    return None
  return (mem.argument_size_in_bytes + mem.output_size_in_bytes + mem.temp_size_in_bytes
          - mem.alias_size_in_bytes)


def _dot_flops(eqn) -> float:
  lhs = eqn.invars[0].aval
  (lc, _), _ = eqn.params["dimension_numbers"]
  return 2. * math.prod(eqn.outvars[0].aval.shape) * math.prod(lhs.shape[d] for d in lc)


def _conv_flops(eqn) -> float:
  rhs = eqn.invars[1].aval  # Kernel: out-features times (in / groups) times window.
  spec = eqn.params["dimension_numbers"].rhs_spec
  out_features = rhs.shape[spec[0]]
  return 2. * math.prod(eqn.outvars[0].aval.shape) * math.prod(rhs.shape) / out_features


def _sub_jaxprs(eqn):
  for v in eqn.params.values():
    for j in (v if isinstance(v, (list, tuple)) else [v]):
      if hasattr(j, "eqns"):
        yield j
      elif hasattr(j, "jaxpr") and hasattr(j.jaxpr, "eqns"):
        yield j.jaxpr


def jaxpr_matmul_flops(jaxpr) -> float:
  """Matmul and convolution FLOPs of a (closed) jaxpr: the model FLOPs MFU counts, from the
  program JAX traced, on any backend (a cond counts its costliest branch, a scan its
  length times its body)."""
  jaxpr = getattr(jaxpr, "jaxpr", jaxpr)
  total = 0.
  for eqn in jaxpr.eqns:
    name = eqn.primitive.name
    if name == "dot_general":
      total += _dot_flops(eqn)
    elif name == "conv_general_dilated":
      total += _conv_flops(eqn)
    elif name == "cond":
      total += max(jaxpr_matmul_flops(b) for b in eqn.params["branches"])
    else:
      inner = sum(jaxpr_matmul_flops(j) for j in _sub_jaxprs(eqn))
      total += inner * (eqn.params.get("length", 1) if name == "scan" else 1)
  return total


def line_through(points) -> tuple[float, float]:
  """(bytes at batch 0, bytes per example) of the line through two (batch, bytes): a
  step's peak memory is linear in the batch (state + batch x activations)."""
  (b1, p1), (b2, p2) = points
  per_example = (p2 - p1) / (b2 - b1)
  return p1 - per_example * b1, per_example


def largest_batch(fixed: float, per_example: float, device_gb: float) -> int:
  """The largest batch whose peak stays under HEADROOM of a device of device_gb GB."""
  return max(0, int((HEADROOM * device_gb * 1e9 - fixed) // per_example))


def mae_matmul_gflop_per_image(variant: str, image: int, objective) -> dict:
  """Training GFLOP per image of an MAE ViT's matmuls (3x the forward pass), for a ViT
  variant ('B/8') on image x image inputs and an MAE objective config: linear layers,
  which grow with the tokens, and attention (scores and weighted sum), with tokens^2."""
  d = vit.parse_variant(variant)
  tokens = (image // d["patch_size"]) ** 2
  kept = mae.num_kept(tokens, objective.mask_ratio) + 1  # + the class token
  width, mlp = d["width"], d["mlp_dim"]
  dec_width, dec_mlp, dec_depth = (objective.decoder_width, objective.decoder_mlp_dim,
                                   objective.decoder_depth)
  pixels = d["patch_size"] ** 2
  linear = (d["depth"] * kept * (8 * width**2 + 4 * width * mlp)         # qkv, out, MLP
            + dec_depth * (tokens + 1) * (8 * dec_width**2 + 4 * dec_width * dec_mlp)
            + 2 * kept * pixels * width                                   # patch embedding
            + 2 * kept * width * dec_width + 2 * tokens * dec_width * pixels)  # to/from decoder
  attention = 4 * (d["depth"] * kept**2 * width + dec_depth * (tokens + 1)**2 * dec_width)
  return {"tokens": tokens, "linear": 3 * linear / 1e9, "attention": 3 * attention / 1e9}
