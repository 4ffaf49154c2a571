"""Dense layers whose low-precision matmuls accumulate in float32, forward and backward.

`Dense` has the parameter tree of `flax.linen.Dense` / `DenseGeneral` (`kernel` of shape
in_shape[axis] + features, `bias` of shape features, float32, initialised alike), so it
replaces them without touching checkpoints. With dtype=float32 it is a plain dot. With a
low-precision dtype (bfloat16) every matmul, the two of the backward pass included, takes
bf16 operands and produces float32: on XLA CPU that is the only form that reaches the
AMX/bf16 kernels (a bf16-output dot is done in float32 after converting its inputs), and
on GPUs/TPUs it is what the tensor cores do anyway. The bias is added in float32 before
rounding, so its gradient is a float32 reduction.
"""
import functools
from typing import Any, Callable, Sequence, Union

import flax.linen as nn
import jax
from jax import lax
import jax.numpy as jnp
import numpy as np


def _axes(axes, ndim: int) -> tuple[int, ...]:
  axes = (axes,) if isinstance(axes, int) else tuple(axes)
  return tuple(a % ndim for a in axes)


def _inverse(perm: Sequence[int]) -> tuple[int, ...]:
  return tuple(int(i) for i in np.argsort(perm))


def _dot_f32(lhs, rhs, contracting: tuple[tuple[int, ...], tuple[int, ...]]):
  return lax.dot_general(lhs, rhs, (contracting, ((), ())), preferred_element_type=jnp.float32)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def _low_precision_dot(lhs, rhs, contracting):
  return _dot_f32(lhs, rhs, contracting)


def _low_precision_dot_fwd(lhs, rhs, contracting):
  return _dot_f32(lhs, rhs, contracting), (lhs, rhs)


def _low_precision_dot_bwd(contracting, res, g):
  """Both gradient matmuls in the operands' dtype with float32 outputs (JAX's own
  transpose would multiply the float32 cotangent by a bf16 operand: a float32 dot)."""
  lhs, rhs = res
  lc, rc = contracting
  lhs_kept = [i for i in range(lhs.ndim) if i not in lc]
  rhs_kept = [i for i in range(rhs.ndim) if i not in rc]
  g = g.astype(lhs.dtype)
  g_lhs_part = tuple(range(len(lhs_kept)))
  g_rhs_part = tuple(range(len(lhs_kept), g.ndim))
  # d lhs: [lhs_kept..., rhs's contracted axes in rhs order] -> lhs's axis order.
  d_lhs = _dot_f32(g, rhs, (g_rhs_part, tuple(rhs_kept)))
  order = lhs_kept + [lc[j] for j in np.argsort(rc)]
  d_lhs = d_lhs.transpose(_inverse(order)).astype(lhs.dtype)
  # d rhs: [lhs's contracted axes in lhs order -> rhs axes, rhs_kept...] -> rhs's order.
  d_rhs = _dot_f32(lhs, g, (tuple(lhs_kept), g_lhs_part))
  order = [rc[j] for j in np.argsort(lc)] + rhs_kept
  d_rhs = d_rhs.transpose(_inverse(order)).astype(rhs.dtype)
  return d_lhs, d_rhs


_low_precision_dot.defvjp(_low_precision_dot_fwd, _low_precision_dot_bwd)


def dot_f32_accumulate(x, kernel, axis: tuple[int, ...], dtype) -> jax.Array:
  """x's `axis` contracted with kernel's leading axes; float32 result, `dtype` operands."""
  contracting = (axis, tuple(range(len(axis))))
  x, kernel = x.astype(dtype), kernel.astype(dtype)
  if jnp.dtype(dtype) == jnp.float32:
    return lax.dot_general(x, kernel, (contracting, ((), ())))
  return _low_precision_dot(x, kernel, contracting)


class Dense(nn.Module):
  """Drop-in for nn.Dense (int features, axis=-1) and nn.DenseGeneral (tuples)."""
  features: Union[int, Sequence[int]]
  axis: Union[int, Sequence[int]] = -1
  use_bias: bool = True
  dtype: Any = jnp.float32
  kernel_init: Callable = nn.initializers.lecun_normal()
  bias_init: Callable = nn.initializers.zeros

  @nn.compact
  def __call__(self, x):
    features = (self.features,) if isinstance(self.features, int) else tuple(self.features)
    axis = _axes(self.axis, x.ndim)
    in_shape = tuple(x.shape[a] for a in axis)

    def kernel_init(rng, shape, dtype=jnp.float32):  # Fans as DenseGeneral computes them.
      flat = (int(np.prod(in_shape)), int(np.prod(features)))
      return self.kernel_init(rng, flat, dtype).reshape(shape)

    kernel = self.param("kernel", kernel_init, in_shape + features, jnp.float32)
    y = dot_f32_accumulate(x, kernel, axis, self.dtype)
    if self.use_bias:
      bias = self.param("bias", lambda rng, shape, dtype=jnp.float32: self.bias_init(
          rng, (int(np.prod(features)),), dtype).reshape(shape), features, jnp.float32)
      y = y + bias
    return y.astype(self.dtype)
