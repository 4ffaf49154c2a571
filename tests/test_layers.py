"""layers.Dense against nn.DenseGeneral: same parameters, outputs and gradients."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lensfm.models import layers

# (input shape, contracted axes, features): the ViT's MLP, qkv and head-merging layers,
# with inputs wider and narrower than outputs so both weight-gradient forms run.
CASES = [((2, 5, 12), -1, 3), ((2, 5, 3), -1, 12), ((2, 5, 12), -1, (2, 4)),
         ((2, 5, 3, 4), (-2, -1), 7), ((4, 6, 2, 3), (1, 3), (5, 2)),
         ((4, 6, 2, 3), (3, 1), 5)]  # Unsorted axes: DenseGeneral sorts them.


@pytest.mark.parametrize("shape,axis,features", CASES)
@pytest.mark.parametrize("transpose_smaller", [False, True])
def test_dense_matches_dense_general_in_fp32(shape, axis, features, transpose_smaller):
  x = jnp.asarray(np.random.default_rng(0).standard_normal(shape), jnp.float32)
  ours = layers.Dense(features, axis=axis, bias_init=nn.initializers.normal(1.),
                      precision=layers.Precision(weight_grad_transpose=transpose_smaller))
  ref = nn.DenseGeneral(features, axis=axis, bias_init=nn.initializers.normal(1.))
  params = ours.init(jax.random.key(0), x)
  assert (jax.tree.map(jnp.shape, params) ==
          jax.tree.map(jnp.shape, ref.init(jax.random.key(0), x)))

  def loss(module, p, x):
    return jnp.sum(jnp.sin(module.apply(p, x)))

  np.testing.assert_allclose(ours.apply(params, x), ref.apply(params, x), rtol=1e-5, atol=1e-5)
  got = jax.grad(loss, (1, 2))(ours, params, x)
  want = jax.grad(loss, (1, 2))(ref, params, x)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5), got, want)
