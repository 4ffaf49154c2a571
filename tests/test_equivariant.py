"""The equivariant transformer and the group-pooled ViT: symmetry, the attention's
factorisation, token dropping and clear errors. Tiny models, 32x32 images."""
import e3nn_jax as e3nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lensfm.data import transforms
from lensfm.models import equivariant as eq
from lensfm.models import get_model
from lensfm.models import group_pooled
from lensfm.models import vit

SIZE, PATCH = 32, 4
GRID = SIZE // PATCH

# Off the pixel grid's symmetries the invariance is approximate. Measured with the tiny
# model below (random init, seed 1) on the 4 scenes below (corners outside the
# inscribed disk zeroed) at 15/30/45/60 degrees, the largest relative change of the
# pooled embedding was
#   0.103 when the image is turned by bilinear resampling (transforms.affine_resample), and
#   0.094 when the scene itself is rendered turned (no resampling),
# so the error is mostly the model's own: a turned scene lands differently on the
# square grid of 4x4 patches (with 2x2 patches the same measurement gives 0.005-0.018;
# a same-sized random ViT with 4x4 patches 0.03-0.05). Bounds ~1.5x the measurement:
RESAMPLED_ANGLE_BOUND = 0.15
RENDERED_ANGLE_BOUND = 0.14
ANGLES_DEG = (15, 30, 45, 60)


def lens_images(n: int, size: int = SIZE, seed: int = 0, angle: float = 0.) -> np.ndarray:
  """Smooth lens-like scenes: an elliptical ring with a bright arc around a galaxy,
  rendered with the sky turned counter-clockwise by `angle` (exact: no resampling)."""
  rng = np.random.default_rng(seed)
  rows, cols = np.mgrid[:size, :size] - (size - 1) / 2
  x0, y0 = cols, -rows  # y up, as in the model.
  xx = np.cos(angle) * x0 + np.sin(angle) * y0  # The scene point that lands on (x0, y0).
  yy = -np.sin(angle) * x0 + np.cos(angle) * y0
  images = []
  for _ in range(n):
    radius, q, phi, arc = (rng.uniform(6, 10), rng.uniform(0.7, 1), rng.uniform(0, np.pi),
                           rng.uniform(-np.pi, np.pi))
    u = np.cos(phi) * xx + np.sin(phi) * yy
    v = -np.sin(phi) * xx + np.cos(phi) * yy
    r = np.sqrt(q * u**2 + v**2 / q)
    brightness = 0.4 + np.exp(2 * np.cos(np.arctan2(yy, xx) - arc) - 2)
    ring = np.exp(-0.5 * ((r - radius) / 1.2)**2) * brightness
    images.append(ring + 1.5 * np.exp(-0.5 * (xx**2 + yy**2) / 2.5**2))
  return np.asarray(images, np.float32)[..., None]


def aperture(images, size: int = SIZE):
  """Zeroes the corners outside the inscribed disk (1-pixel soft edge): a turn by
  resampling fills them by reflection with content the scene does not have."""
  rows, cols = np.mgrid[:size, :size] - (size - 1) / 2
  disk = np.clip(size / 2 - np.hypot(rows, cols), 0., 1.).astype(np.float32)
  return images * disk[:, :, None]


def relative_error(a, b) -> float:
  a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
  return float(np.max(np.linalg.norm(a - b, axis=-1) / np.linalg.norm(a, axis=-1)))


def rotation_z(quarter_turns: int) -> np.ndarray:
  c, s = np.round(np.cos(quarter_turns * np.pi / 2)), np.round(np.sin(quarter_turns * np.pi / 2))
  return np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]], np.float32)


def grid_permutation(transform) -> np.ndarray:
  """perm[t] = the input token that the transformed image's token t holds."""
  return np.asarray(transform(np.arange(GRID * GRID).reshape(GRID, GRID))).reshape(-1)


@pytest.fixture(scope="module")
def tiny():
  model = eq.Model(variant=None, irreps="8x0e + 4x1o + 2x2e", depth=1, num_heads=2,
                   patch_size=PATCH)
  images = jnp.asarray(aperture(lens_images(4)))
  params = jax.jit(model.init)(jax.random.key(1), images)["params"]
  apply = jax.jit(lambda x, keep=None: model.apply({"params": params}, x, keep=keep))
  return model, images, apply


def test_rot90_leaves_pooled_unchanged_and_rotates_l1_tokens(tiny):
  model, images, apply = tiny
  out = apply(images)
  assert out["tokens"].shape == (4, GRID * GRID, model.irreps_out.dim)
  assert out["pooled"].shape == (4, model.embed_dim) and model.embed_dim == 14
  l1 = model.irreps_out.slices()[1]  # The 4x1o block: 4 channels of (x, y, z).
  for k in (1, 2, 3):
    turned = apply(jnp.rot90(images, k, axes=(1, 2)))
    assert relative_error(out["pooled"], turned["pooled"]) < 1e-4
    perm = grid_permutation(lambda g: np.rot90(g, k))
    expected = np.asarray(out["tokens"])[:, perm, l1].reshape(4, -1, 4, 3) @ rotation_z(k).T
    got = np.asarray(turned["tokens"])[:, :, l1].reshape(4, -1, 4, 3)
    np.testing.assert_allclose(got, expected, atol=1e-4 * np.abs(expected).max())
    # And every irrep (l = 0, 1, 2) with e3nn's own Wigner matrices.
    wigner = np.asarray(model.irreps_out.D_from_matrix(jnp.asarray(rotation_z(k))))
    full = np.asarray(out["tokens"])[:, perm] @ wigner.T
    np.testing.assert_allclose(turned["tokens"], full, atol=1e-4 * np.abs(full).max())


def test_mirror_is_an_improper_rotation(tiny):
  model, images, apply = tiny
  out = apply(images)
  mirrored = apply(images[:, :, ::-1])  # x -> -x: diag(-1, 1, 1), determinant -1.
  assert relative_error(out["pooled"], mirrored["pooled"]) < 1e-4
  wigner = np.asarray(model.irreps_out.D_from_matrix(jnp.diag(jnp.array([-1., 1., 1.]))))
  expected = np.asarray(out["tokens"])[:, grid_permutation(lambda g: g[:, ::-1])] @ wigner.T
  np.testing.assert_allclose(mirrored["tokens"], expected, atol=1e-4 * np.abs(expected).max())


def test_arbitrary_angle_invariance_error_is_bounded(tiny):
  _, images, apply = tiny
  turn = jax.jit(jax.vmap(lambda im, a: transforms.affine_resample(im, a, jnp.zeros(2)),
                          in_axes=(0, None)))
  pooled = apply(images)["pooled"]
  resampled = {deg: relative_error(
      pooled, apply(aperture(turn(images, np.deg2rad(deg))))["pooled"]) for deg in ANGLES_DEG}
  rendered = {deg: relative_error(
      pooled, apply(aperture(lens_images(4, angle=np.deg2rad(deg))))["pooled"])
              for deg in ANGLES_DEG}
  print(f"pooled relative change: resampled {resampled}, rendered {rendered}")
  assert max(resampled.values()) < RESAMPLED_ANGLE_BOUND, resampled
  assert max(rendered.values()) < RENDERED_ANGLE_BOUND, rendered
  # The rendered scenes are exact: at 90 degrees they are the grid rotation.
  np.testing.assert_array_equal(aperture(lens_images(4, angle=np.pi / 2)),
                                np.rot90(images, 1, axes=(1, 2)))


def test_factorised_attention_equals_per_pair_tensor_products():
  irreps, sh = e3nn.Irreps("4x0e + 2x1o + 2x2e"), eq.harmonic_irreps(2)
  n, heads = 5, 2

  @jax.jit  # One compilation instead of hundreds of op-by-op dispatches.
  def both(key):
    keys = jax.random.split(key, 3)
    v = e3nn.normal(irreps, keys[0], (1, n))
    positions = jax.random.normal(keys[1], (1, n, 3)).at[..., 2].set(0.)
    attn = jax.nn.softmax(jax.random.normal(keys[2], (1, heads, n, n)), -1)
    relative = positions[:, None] - positions[:, :, None]
    harmonics = eq.direction_harmonics(sh, relative)
    aggregated = jnp.einsum("bhijs,bjhd->bihds", attn[..., None] * harmonics[:, None],
                            eq.split_heads(v, heads))
    ours = eq.contract_messages(eq.merge_heads(aggregated, irreps), irreps, sh, irreps)[0]
    # Reference: e3nn's tensor product on every (i, j) pair, then the attention sum.
    pairs = e3nn.tensor_product(v[:, None], e3nn.IrrepsArray(sh, harmonics),
                                filter_ir_out=irreps, irrep_normalization="component",
                                regroup_output=False)
    chunks = []
    for (mul, _), chunk in zip(pairs.irreps, pairs.chunks):
      head_of_channel = np.arange(mul) // (mul // heads)
      chunks.append(jnp.einsum("cij,ijcm->icm", attn[0][head_of_channel], chunk[0]))
    reference = e3nn.from_chunks(pairs.irreps, chunks, (n,))
    return ours.regroup(), reference.regroup()

  ours, reference = both(jax.random.key(0))
  assert ours.irreps == reference.irreps == e3nn.Irreps("8x0e + 10x1o + 10x2e")
  np.testing.assert_allclose(ours.array, reference.array, atol=1e-5)


def test_keep_selects_tokens_at_their_positions(tiny):
  model, images, apply = tiny
  full = apply(images)["tokens"]
  order = jnp.asarray(np.stack([np.random.default_rng(i).permutation(GRID * GRID)
                                for i in range(4)]), jnp.int32)
  # All tokens, shuffled: attention is permutation-equivariant, so the same features.
  shuffled = apply(images, order)["tokens"]
  np.testing.assert_allclose(shuffled, jnp.take_along_axis(full, order[..., None], 1), atol=1e-4)
  kept = jax.eval_shape(apply, images, order[:, :16])  # Shapes only: no extra compilation.
  assert kept["tokens"].shape == (4, 16, model.irreps_out.dim)


def test_interface_and_clear_errors():
  model = get_model({"name": "equivariant", "variant": "Ti/4"})
  assert model.dims()["patch_size"] == 4 and model.dims()["depth"] == 6
  assert model.embed_dim == 64 + 32 + 16 and model.token_grid((64, 64)) == (16, 16)
  with pytest.raises(ValueError, match="no 0e scalars"):
    eq.Model(variant=None, irreps="4x1o", depth=1, num_heads=2, patch_size=4).dims()
  with pytest.raises(ValueError, match=r"\['3x1o'\] are not divisible by num_heads=2"):
    eq.Model(variant=None, irreps="4x0e + 3x1o", depth=1, num_heads=2, patch_size=4).dims()
  with pytest.raises(ValueError, match="'Q/4'"):
    eq.Model(variant="Q/4").dims()
  with pytest.raises(ValueError, match="30x30 is not divisible by the patch size 4"):
    eq.Model(variant="Ti/4").token_grid((30, 30))
  with pytest.raises(ValueError, match="patch_window='round'"):
    eq.patch_filters(4, 3, 1, "round")
  with pytest.raises(ValueError, match="geo_divisor=0"):
    eq.geometric_irreps(e3nn.Irreps("8x0e"), 0, 2)
  assert eq.geometric_irreps(e3nn.Irreps("16x0e + 8x1o + 4x2e"), 4, 2) == e3nn.Irreps(
      "4x0e + 2x1o + 2x2e")


@pytest.fixture(scope="module")
def pooled_vits():
  images = jnp.asarray(lens_images(2))
  dims = dict(variant=None, width=16, depth=1, mlp_dim=32, num_heads=2, patch_size=8)
  # Every group wraps the same ViT: one initialisation serves all three.
  params = {"vit": jax.jit(vit.Model(**dims).init)(jax.random.key(0), images)["params"]}
  out = {}
  for group in ("C4", "D4", "C8"):
    model = group_pooled.Model(group=group, **dims)
    assert jax.tree.map(jnp.shape, params) == jax.tree.map(
        jnp.shape, jax.eval_shape(model.init, jax.random.key(0), images)["params"])
    out[group] = jax.jit(lambda x, keep=None, m=model: m.apply({"params": params}, x, keep=keep))
  return images, out


@pytest.mark.parametrize("group", ["C4", "D4"])
def test_group_pooled_is_exactly_invariant(pooled_vits, group):
  images, apply = pooled_vits[0], pooled_vits[1][group]
  out = apply(images)
  grid = 4
  moves = [lambda x: jnp.rot90(x, 1, axes=(1, 2)), lambda x: jnp.rot90(x, 2, axes=(1, 2))]
  if group == "D4":
    moves.append(lambda x: x[:, :, ::-1])
  for move in moves:
    moved = apply(move(images))
    assert relative_error(out["pooled"], moved["pooled"]) < 1e-5
    # Tokens live on the input's grid and move with it.
    perm = np.asarray(move(np.arange(grid * grid).reshape(1, grid, grid, 1))).reshape(-1)
    np.testing.assert_allclose(moved["tokens"], np.asarray(out["tokens"])[:, perm], atol=1e-5)
  if group == "C4":  # A mirror is not in C4.
    assert relative_error(out["pooled"], apply(images[:, :, ::-1])["pooled"]) > 1e-3
  # keep is mapped into every copy: all tokens, shuffled, give the shuffled tokens.
  order = jnp.asarray([np.random.default_rng(i).permutation(grid * grid) for i in range(2)],
                      jnp.int32)
  np.testing.assert_allclose(apply(images, order)["tokens"],
                             jnp.take_along_axis(out["tokens"], order[..., None], 1), atol=1e-5)


def test_group_pooled_c8_turns_and_refuses_keep(pooled_vits):
  images, apply = pooled_vits[0], pooled_vits[1]["C8"]
  pooled = apply(images)["pooled"]
  assert relative_error(pooled, apply(jnp.rot90(images, 1, axes=(1, 2)))["pooled"]) < 1e-5
  with pytest.raises(ValueError, match="group='C8' cannot drop tokens"):
    apply(images, jnp.zeros((2, 3), jnp.int32))
  with pytest.raises(ValueError, match="group='C6'"):
    group_pooled.grid_elements("C6")
