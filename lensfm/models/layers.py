"""Dense layers whose low-precision matmuls accumulate in float32, forward and backward.

`Dense` has the parameter tree of `flax.linen.Dense` / `DenseGeneral` (`kernel` of shape
in_shape[axis] + features, `bias` of shape features, float32, initialised alike), and
`LayerNorm` that of `flax.linen.LayerNorm`, so they replace them without touching
checkpoints. With a low-precision dtype (bfloat16) every matmul, the two of the backward
pass included, takes bf16 operands and accumulates in float32; what it writes and what
flows between matmuls are the `Precision`'s choice, which the model's config states.
"""
import dataclasses
import functools
from typing import Any, Callable, Optional, Sequence, Union

import flax.linen as nn
import jax
from jax import lax
import jax.numpy as jnp
import numpy as np


@dataclasses.dataclass(frozen=True)
class Precision:
  """How a model computes; parameters stay float32 and every matmul accumulates in float32.

  dtype: the matmuls' operands (the compute dtype).
  activation_dtype: what flows between matmuls (residual stream, norms, GELU, softmax);
    None: `dtype`.
  dot_output_dtype: what a matmul writes (its bias is added in that dtype); None: `dtype`.
  weight_grad_transpose: a float32 weight gradient is computed as (g^T x)^T when the
    cotangent g is smaller than the input x; None or False: as x^T g (the same
    gradient, another memory layout).
  Models take these as config.model fields of the same names (`PrecisionFields`).
  """
  dtype: Any = "float32"
  activation_dtype: Any = None
  dot_output_dtype: Any = None
  weight_grad_transpose: Optional[bool] = None

  @property
  def compute(self) -> jnp.dtype:
    return jnp.dtype(self.dtype if self.dtype is not None else jnp.float32)

  @property
  def activations(self) -> jnp.dtype:
    return self.compute if self.activation_dtype is None else jnp.dtype(self.activation_dtype)

  @property
  def dot_output(self) -> jnp.dtype:
    return self.compute if self.dot_output_dtype is None else jnp.dtype(self.dot_output_dtype)


class PrecisionFields(nn.Module):
  """The config.model fields of a backbone that computes through `Precision`.

  None leaves a choice to whoever builds the model for a platform
  (`lensfm.train.precision`); a model built without that computes in `dtype` throughout.
  """
  dtype: Any = "float32"
  activation_dtype: Optional[str] = None
  dot_output_dtype: Optional[str] = None
  weight_grad_transpose: Optional[bool] = None

  @property
  def precision(self) -> Precision:
    return Precision(self.dtype, self.activation_dtype, self.dot_output_dtype,
                     self.weight_grad_transpose)


def _axes(axes, ndim: int) -> tuple[int, ...]:
  axes = (axes,) if isinstance(axes, int) else tuple(axes)
  return tuple(a % ndim for a in axes)


def _inverse(perm: Sequence[int]) -> tuple[int, ...]:
  return tuple(int(i) for i in np.argsort(perm))


def _dot(lhs, rhs, contracting: tuple[tuple[int, ...], tuple[int, ...]], out_dtype):
  return lax.dot_general(lhs, rhs, (contracting, ((), ())), preferred_element_type=out_dtype)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3, 4))
def _dot_low_precision(lhs, rhs, contracting, out_dtype, transpose_smaller):
  return _dot(lhs, rhs, contracting, out_dtype)


def _dot_low_precision_fwd(lhs, rhs, contracting, out_dtype, transpose_smaller):
  return _dot(lhs, rhs, contracting, out_dtype), (lhs, rhs)


def _dot_low_precision_bwd(contracting, out_dtype, transpose_smaller, res, g):
  """Both gradient matmuls in the operands' dtype with `out_dtype` outputs (JAX's own
  transpose would multiply the float32 cotangent by a bf16 operand: a float32 dot)."""
  lhs, rhs = res
  lc, rc = contracting
  lhs_kept = [i for i in range(lhs.ndim) if i not in lc]
  rhs_kept = [i for i in range(rhs.ndim) if i not in rc]
  g = g.astype(lhs.dtype)
  g_rhs_part = tuple(range(len(lhs_kept), g.ndim))
  # d lhs: [lhs_kept..., rhs's contracted axes in rhs order] -> lhs's axis order.
  d_lhs = _dot(g, rhs, (g_rhs_part, tuple(rhs_kept)), out_dtype)
  order = lhs_kept + [lc[j] for j in np.argsort(rc)]
  d_lhs = d_lhs.transpose(_inverse(order)).astype(lhs.dtype)
  transpose = transpose_smaller and lhs.dtype == jnp.float32 and g.size < lhs.size
  d_rhs = _weight_grad(lhs, g, lhs_kept, rhs_kept, contracting, out_dtype, transpose)
  return d_lhs, d_rhs.astype(rhs.dtype)


def _weight_grad(lhs, g, lhs_kept, rhs_kept, contracting, out_dtype, transpose: bool):
  """d rhs = lhs^T g over lhs's kept axes, in rhs's axis order; `transpose`: as (g^T lhs)^T.

  XLA CPU copies a dot's lhs into a transposed layout and fuses that operand's producer
  (a bias add, a GELU) into the copy as a strided, unvectorised loop; in fp32 the smaller
  of x and g is the cheaper one to transpose. bf16 keeps x^T g: there XLA folds g's
  transpose into a transposed-lhs dot that YNNPACK rejects (no bf16 x bf16 -> f32 fallback)."""
  lc, rc = contracting
  g_lhs_part = tuple(range(len(lhs_kept)))
  lhs_contracted_in_rhs = [rc[j] for j in np.argsort(lc)]  # lhs order, named as rhs axes.
  if transpose:
    d_rhs_t = _dot(g, lhs, (g_lhs_part, tuple(lhs_kept)), out_dtype)
    # Stops XLA folding the transpose below back into an x^T g dot (YNNPACK rejects it).
    d_rhs_t = lax.optimization_barrier(d_rhs_t)
    return d_rhs_t.transpose(_inverse(rhs_kept + lhs_contracted_in_rhs))
  d_rhs = _dot(lhs, g, (tuple(lhs_kept), g_lhs_part), out_dtype)
  return d_rhs.transpose(_inverse(lhs_contracted_in_rhs + rhs_kept))


_dot_low_precision.defvjp(_dot_low_precision_fwd, _dot_low_precision_bwd)


def dot_f32_accumulate(x, kernel, axis: tuple[int, ...], precision: Precision) -> jax.Array:
  """x's `axis` contracted with kernel's leading axes: operands in the compute dtype,
  accumulated in float32, written in `precision.dot_output`."""
  contracting = (axis, tuple(range(len(axis))))
  x, kernel = x.astype(precision.compute), kernel.astype(precision.compute)
  return _dot_low_precision(x, kernel, contracting, precision.dot_output,
                            bool(precision.weight_grad_transpose))


class Dense(nn.Module):
  """Drop-in for nn.Dense (int features, axis=-1) and nn.DenseGeneral (tuples)."""
  features: Union[int, Sequence[int]]
  axis: Union[int, Sequence[int]] = -1
  use_bias: bool = True
  precision: Precision = Precision()
  kernel_init: Callable = nn.initializers.lecun_normal()
  bias_init: Callable = nn.initializers.zeros

  @nn.compact
  def __call__(self, x):
    features = (self.features,) if isinstance(self.features, int) else tuple(self.features)
    axis = tuple(sorted(_axes(self.axis, x.ndim)))  # DenseGeneral's kernel axis order.
    in_shape = tuple(x.shape[a] for a in axis)

    def kernel_init(rng, shape, dtype=jnp.float32):  # Fans as DenseGeneral computes them.
      flat = (int(np.prod(in_shape)), int(np.prod(features)))
      return self.kernel_init(rng, flat, dtype).reshape(shape)

    kernel = self.param("kernel", kernel_init, in_shape + features, jnp.float32)
    y = dot_f32_accumulate(x, kernel, axis, self.precision)
    if self.use_bias:
      bias = self.param("bias", lambda rng, shape, dtype=jnp.float32: self.bias_init(
          rng, (int(np.prod(features)),), dtype).reshape(shape), features, jnp.float32)
      y = y + bias.astype(y.dtype)  # On GPUs, a bias the matmul's epilogue can add.
    return y.astype(self.precision.activations)


def gelu(x):
  """tanh-approximate GELU (nn.gelu's default) written as x * sigmoid(2u), which equals
  x * (1 + tanh(u)) / 2: XLA CPU's logistic is a vectorised exp, its tanh is slower."""
  u = np.sqrt(2 / np.pi) * (x + 0.044715 * (x * x * x))
  return x * jax.nn.sigmoid(2 * u)


@functools.partial(jax.custom_vjp, nondiff_argnums=(3,))
def _layer_norm(x, scale, bias, eps):
  return _layer_norm_fwd(x, scale, bias, eps)[0]


def _layer_norm_fwd(x, scale, bias, eps):
  mean = x.mean(-1, keepdims=True)
  var = jnp.maximum((x * x).mean(-1, keepdims=True) - mean * mean, 0.)
  inv = lax.rsqrt(var + eps)
  xhat = (x - mean) * inv
  return xhat * scale + bias, (xhat, inv, scale)


def _layer_norm_bwd(eps, res, g):
  """The textbook LayerNorm gradient, so XLA sees two row reductions and no broadcast
  of `scale` to the activations' shape (its autodiff graph materialised one per norm)."""
  xhat, inv, scale = res
  g = g.astype(jnp.float32)
  batch_axes = tuple(range(g.ndim - 1))
  d_scale = (g * xhat).sum(batch_axes)
  d_bias = g.sum(batch_axes)
  dxhat = g * scale
  dx = inv * (dxhat - dxhat.mean(-1, keepdims=True) - xhat * (dxhat * xhat).mean(-1, keepdims=True))
  del eps
  return dx, d_scale, d_bias


_layer_norm.defvjp(_layer_norm_fwd, _layer_norm_bwd)


class LayerNorm(nn.Module):
  """nn.LayerNorm's parameters (scale, bias over the last axis), statistics in float32."""
  epsilon: float = 1e-6
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    scale = self.param("scale", nn.initializers.ones, (x.shape[-1],), jnp.float32)
    bias = self.param("bias", nn.initializers.zeros, (x.shape[-1],), jnp.float32)
    return _layer_norm(x.astype(jnp.float32), scale, bias, self.epsilon).astype(self.dtype)

