"""lensfm.data.transforms: normalisations and lensing-safe augmentations."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lensfm.data import transforms


def _image(size=9, channels=2, seed=0):
  return jnp.asarray(np.random.RandomState(seed).rand(size, size, channels),
                     jnp.float32)


def test_minmax_maps_each_image_to_unit_range():
  image = _image() * 7.0 - 3.0
  out = transforms.minmax(image)
  assert float(out.min()) == pytest.approx(0.0, abs=1e-6)
  assert float(out.max()) == pytest.approx(1.0, abs=1e-6)
  assert float(jnp.abs(transforms.minmax(jnp.ones((4, 4, 1)))).max()) == 0.0


def test_zscore_gives_each_image_zero_mean_and_unit_variance():
  image = _image() * 7.0 - 3.0
  out = np.asarray(transforms.normalize(image, "zscore"))
  assert out.mean() == pytest.approx(0.0, abs=1e-5)
  assert out.std() == pytest.approx(1.0, abs=1e-5)
  # One statistic over all channels: the colour ratios of a multi-band image survive.
  np.testing.assert_allclose(out, (image - image.mean()) / image.std(), atol=1e-5)
  assert float(jnp.abs(transforms.zscore(jnp.ones((4, 4, 1)))).max()) == 0.0
  assert transforms.DEFAULT_NORMALIZE == "zscore"


def test_asinh_maps_peak_to_one_and_keeps_sign_and_order():
  image = _image() - 0.5
  out = transforms.asinh_stretch(image)
  assert float(jnp.abs(out).max()) == pytest.approx(1.0, abs=1e-5)
  assert np.array_equal(np.sign(out), np.sign(image))
  flat_in, flat_out = np.ravel(image), np.ravel(out)
  order = np.argsort(flat_in)
  assert np.all(np.diff(flat_out[order]) >= 0)


def test_standardize_uses_per_channel_statistics():
  image = _image()
  stats = transforms.image_statistics(image[None])
  out = transforms.normalize(image, "standardize", stats)
  np.testing.assert_allclose(out.mean(axis=(0, 1)), 0.0, atol=1e-5)
  np.testing.assert_allclose(out.std(axis=(0, 1)), 1.0, atol=1e-4)


@pytest.mark.parametrize("method", transforms.NORMALIZATIONS)
def test_denormalize_returns_the_units_the_image_came_in(method):
  image = _image() * 7.0 - 3.0
  stats = transforms.image_statistics(image[None]) if method == "standardize" else None
  normalized = transforms.normalize(image, method, stats)
  np.testing.assert_allclose(transforms.denormalize(normalized, image, method, stats), image,
                             rtol=1e-4, atol=1e-4)


def test_normalize_errors_are_clear():
  with pytest.raises(ValueError, match="not one of"):
    transforms.normalize(_image(), "zscore_per_band")
  with pytest.raises(ValueError, match="statistics"):
    transforms.normalize(_image(), "standardize")


def test_rotate_by_quarter_turn_equals_rot90_and_shift_moves_pixels():
  image = _image()
  quarter = transforms.affine_resample(image, jnp.float32(np.pi / 2),
                                       jnp.zeros(2))
  np.testing.assert_allclose(quarter, jnp.rot90(image, 1, axes=(0, 1)),
                             atol=1e-5)
  down = transforms.affine_resample(image, jnp.float32(0.0),
                                    jnp.array([1.0, 0.0]))
  np.testing.assert_allclose(down[1:], image[:-1], atol=1e-6)


def test_d4_augmentations_permute_pixels_exactly():
  image = _image()
  for seed in range(6):
    key = jax.random.PRNGKey(seed)
    out = transforms.random_flip(key, transforms.random_rot90(key, image))
    np.testing.assert_array_equal(np.sort(np.ravel(out)),
                                  np.sort(np.ravel(image)))


def test_blur_with_zero_sigma_is_identity_and_preserves_flux():
  image = _image(size=16)
  np.testing.assert_allclose(transforms.gaussian_blur(image, 0.0), image,
                             atol=1e-6)
  point = jnp.zeros((17, 17, 1)).at[8, 8, 0].set(1.0)
  blurred = transforms.gaussian_blur(point, jnp.float32(1.0))
  assert float(blurred.sum()) == pytest.approx(1.0, abs=1e-5)
  assert float(blurred[8, 8, 0]) < 0.2


@pytest.mark.parametrize("name", transforms.AUGMENTATIONS)
def test_each_augmentation_keeps_shape_is_keyed_and_finite(name):
  transform = jax.jit(transforms.make_transform("none", name))
  image = _image(size=12, channels=3)
  a = transform(jax.random.PRNGKey(0), image)
  b = transform(jax.random.PRNGKey(0), image)
  assert a.shape == image.shape and a.dtype == jnp.float32
  assert bool(jnp.all(jnp.isfinite(a)))
  np.testing.assert_array_equal(a, b)
  outs = [transform(jax.random.PRNGKey(s), image) for s in range(1, 5)]
  assert any(not np.array_equal(o, a) for o in outs)


def test_batch_transform_uses_one_key_per_example():
  fn = jax.jit(transforms.make_batch_transform("minmax", "rot90,flip,noise"))
  images = jnp.stack([_image(size=8, channels=1)] * 4)
  out = fn(jax.random.PRNGKey(3), images)
  assert out.shape == images.shape
  assert not all(np.array_equal(out[0], out[i]) for i in range(1, 4))


def test_transforms_run_on_host_numpy():
  cpu = jax.devices("cpu")[0]
  image = jax.device_put(np.asarray(_image()), cpu)
  out = transforms.make_transform("asinh", "rotate")(
      jax.device_put(jax.random.PRNGKey(0), cpu), image)
  assert out.devices() == {cpu}


def test_parse_augment():
  assert transforms.parse_augment("") == ()
  assert transforms.parse_augment(" rot90, flip ,") == ("rot90", "flip")
  with pytest.raises(ValueError, match="unknown augmentations"):
    transforms.parse_augment("rot90,mixup")


@pytest.mark.parametrize("method", ["zscore", "minmax", "asinh", "standardize", "none"])
def test_normalize_like_is_normalize_and_denormalize_inverts_it(method):
  """normalize_like(image, image) is normalize(image); an LR image normalised by its HR
  image's map comes back with denormalize."""
  rng = np.random.default_rng(0)
  hr = (rng.random((8, 8, 1)) * 3 + 1).astype(np.float32)
  lr = hr[::2, ::2] * 1.1
  stats = {"mean": [1.5], "std": [0.7]} if method == "standardize" else None
  np.testing.assert_allclose(transforms.normalize_like(hr, hr, method, stats),
                             transforms.normalize(hr, method, stats), atol=1e-6)
  back = transforms.denormalize(transforms.normalize_like(lr, hr, method, stats), hr, method,
                                stats)
  np.testing.assert_allclose(back, lr, rtol=1e-5, atol=1e-5)
