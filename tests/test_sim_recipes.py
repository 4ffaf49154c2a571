"""Recipe API: registry errors, shapes/dtypes/labels, class overrides, determinism, jit+vmap."""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lensfm.sim import instrument
from lensfm.sim import priors
from lensfm.sim import recipes

NUM_PIX = 16
BATCH = 12
# LLVM optimisation off: compiles ~3x faster, and these programs are tiny to run.
FAST_COMPILE = {'xla_backend_optimization_level': 0}


@functools.lru_cache(maxsize=None)
def _jitted(recipe, method, static_argnums=()):
  """recipe.<method> jitted once per equal recipe (recipes hash by configuration)."""
  return jax.jit(getattr(recipe, method), static_argnums=static_argnums,
                 compiler_options=FAST_COMPILE)


def _sampler(name, **overrides):
  recipe = recipes.get(name, num_pix=NUM_PIX, **overrides)
  return recipe, _jitted(recipe, 'sample', 1)


@functools.lru_cache(maxsize=None)
def _batch(name, seed):
  recipe, sample = _sampler(name)
  return jax.tree.map(np.asarray, sample(jax.random.key(seed), BATCH))


def test_unknown_recipe_lists_valid_names():
  with pytest.raises(ValueError, match='model_ii') as info:
    recipes.get('model_v')
  assert 'model_v' in str(info.value) and 'randomized' in str(info.value)


def test_unknown_override_is_named_with_the_valid_ones():
  with pytest.raises(ValueError, match='pixel_size') as info:
    recipes.get('model_ii', pixel_size=0.1)
  assert 'num_pix' in str(info.value) and 'classes' in str(info.value)


def test_unknown_class_is_rejected():
  with pytest.raises(ValueError, match='sphere'):
    recipes.get('model_i', classes=('sphere',))


@pytest.mark.parametrize('name', recipes.names())
def test_attributes(name):
  recipe = recipes.get(name, num_pix=NUM_PIX)
  assert recipe.name == name
  assert recipe.image_shape == (NUM_PIX, NUM_PIX, 3 if name == 'model_iv' else 1)
  assert recipe.label_keys == recipes.LABEL_KEYS
  expected = recipes.LENSFIND_CLASSES if name == 'lensfind' else recipes.DEEPLENSE_CLASSES
  assert recipe.class_names == expected


def test_default_image_sizes():
  assert recipes.get('model_i').image_shape == (150, 150, 1)
  assert recipes.get('model_ii').image_shape == (64, 64, 1)
  assert recipes.get('model_iv').image_shape == (64, 64, 3)
  assert recipes.get('randomized', image_size=40).image_shape == (40, 40, 1)


@pytest.mark.parametrize('name', recipes.names())
def test_batch_structure_and_labels(name):
  recipe, _ = _sampler(name)
  out = _batch(name, 0)
  assert set(out) == {'image'} | set(recipes.LABEL_KEYS)
  assert out['image'].shape == (BATCH,) + recipe.image_shape
  assert out['image'].dtype == np.float32 and np.isfinite(out['image']).all()
  assert out['label'].dtype == np.int32 and out['n_subhalos'].dtype == np.int32
  for key in ('axion_mass', 'sub_mass_fraction', 'theta_e'):
    assert out[key].dtype == np.float32 and out[key].shape == (BATCH,)
  labels = out['label']
  assert ((labels >= 0) & (labels < len(recipe.class_names))).all()
  if name == 'lensfind':
    assert (out['theta_e'][labels == 0] == 0).all() and (out['theta_e'][labels == 1] > 0).all()
    assert (out['axion_mass'] == 0).all() and (out['n_subhalos'] == 0).all()
    return
  axion = labels == recipe.class_names.index('axion')
  cdm = labels == recipe.class_names.index('cdm')
  assert ((out['axion_mass'][axion] >= 1e-24) & (out['axion_mass'][axion] <= 1e-22)).all()
  assert (out['axion_mass'][~axion] == 0).all()
  assert (out['n_subhalos'][~cdm] == 0).all()
  assert (out['sub_mass_fraction'][labels == 0] == 0).all()
  assert (out['sub_mass_fraction'][axion] > 0).all()
  assert (out['theta_e'] > 0).all()
  if name in ('model_i', 'model_ii', 'model_iii'):
    assert (out['n_subhalos'][cdm] == 25).all()
    np.testing.assert_allclose(out['sub_mass_fraction'][axion], 0.03, rtol=1e-6)


def test_published_einstein_radii():
  """1e12 Msun -> 1.2815" (luminosity-distance quirk); Models II/III show x0.6343."""
  assert _batch('model_i', 0)['theta_e'] == pytest.approx(1.28149, abs=1e-4)
  assert _batch('model_ii', 0)['theta_e'] == pytest.approx(1.28149 * 0.634315, abs=1e-4)


def _set_up_constant_pairs():
  """(what, jnp function's value, its Python-float *_host twin's) over the recipes' own
  arguments and random ones."""
  from lensfm.sim import cosmology, light  # pylint: disable=g-import-not-at-top
  zs = (recipes.Z_LENS, recipes.Z_SOURCE)
  pairs = [(f'einstein radius of {m}', cosmology.einstein_radius_deeplense(m, *zs),
            cosmology.einstein_radius_deeplense_host(m, *zs))
           for m in (1.0, recipes.MAIN_HALO_MASS, recipes.VORTEX_MASS)]
  pairs.append(('mass of 1.5"', cosmology.mass_from_einstein_radius_deeplense(1.5, *zs),
                cosmology.mass_from_einstein_radius_deeplense_host(1.5, *zs)))
  args = [(20.0, 0.25, 1.0, zp) for zp in (0.0, instrument.EUCLID_VIS.zero_point,
                                           instrument.HST_WFC3_F160W.zero_point)]
  args += [(m, r, n, instrument.EUCLID_VIS.zero_point)
           for mags in recipes.ModelIV.lens_light_mags
           for m, r, n in zip(mags, (0.4, 1.5), (2.3, 1.2))]
  redshifts = [(recipes.Z_LENS, recipes.Z_SOURCE, recipes.Z_SOURCE_CONVENTION)]
  rng = np.random.default_rng(0)
  for _ in range(8):
    args.append((rng.uniform(15, 28), rng.uniform(0.02, 2), rng.uniform(0.3, 6),
                 rng.uniform(20, 30)))
    z_lens = rng.uniform(0.1, 1.0)
    redshifts.append((z_lens, z_lens + rng.uniform(0.1, 3), z_lens + rng.uniform(3.1, 5)))
  pairs += [(f'amplitude of {a}', light.amplitude_from_magnitude(*a),
             light.amplitude_from_magnitude_host(*a)) for a in np.float64(args).tolist()]
  for z in np.float64(redshifts).tolist():
    pairs.append((f'deflection scale at {z}', cosmology.reduced_deflection_scale(*z),
                  cosmology.reduced_deflection_scale_host(*z)))
    pairs.append((f'einstein radius at {z[:2]}', cosmology.einstein_radius_deeplense(1e11, *z[:2]),
                  cosmology.einstein_radius_deeplense_host(1e11, *z[:2])))
  return pairs


def test_set_up_constants_equal_the_jnp_functions_bit_for_bit():
  """Recipes compute their constants with the numpy *_host twins (few compilations); the
  values, and so every simulated image, are exactly those of the jnp functions."""
  for what, want, got in _set_up_constant_pairs():
    assert isinstance(got, float), what
    assert np.float32(got).tobytes() == np.asarray(want, np.float32).tobytes(), (what, want, got)
    assert float(np.float32(got)) == got, what  # A float32 value, as float(jnp) gave.


def test_model_i_is_integer_counts_and_model_iv_is_max_normalised():
  counts = _batch('model_i', 0)['image']
  assert (counts >= 0).all() and (counts == np.round(counts)).all() and counts.max() > 0
  iv = _batch('model_iv', 0)['image']
  assert iv.min() >= 0 and np.allclose(iv.reshape(BATCH, -1).max(-1), 1.0)


def test_model_ii_and_iii_store_image_plus_image():
  """The published quirk: the stored image is twice the noise-free model (no noise)."""
  clean = jnp.linspace(0.0, 1.0, NUM_PIX * NUM_PIX).reshape(NUM_PIX, NUM_PIX, 1)
  recipe = recipes.get('model_iii', num_pix=NUM_PIX)
  np.testing.assert_array_equal(recipe.observe(jax.random.key(0), clean, {}), 2 * clean)
  noisy = _jitted(recipes.get('model_ii', num_pix=NUM_PIX, noise=True), 'observe')
  out = noisy(jax.random.key(0), clean, {'exposure': jnp.float32(2260.0)})
  assert not np.allclose(out, clean) and np.abs(out - clean).max() < 0.5


def test_sample_is_observe_of_render_of_sample_params():
  """The documented key split: sample(key) == observe(render(sample_params(key_params)))."""
  recipe, _ = _sampler('model_ii')
  k_params, _ = jax.random.split(jax.random.key(0))
  params, labels = _jitted(recipe, 'sample_params', 1)(k_params, BATCH)
  out = _batch('model_ii', 0)
  clean = _jitted(recipe, 'render_batch')(params)
  np.testing.assert_allclose(out['image'], 2 * clean, rtol=1e-6)
  np.testing.assert_array_equal(out['label'], labels['label'])


@pytest.mark.parametrize('name', recipes.names())
def test_reproducible_by_seed(name):
  _, sample = _sampler(name)
  again = jax.tree.map(np.asarray, sample(jax.random.key(0), BATCH))
  first, other = _batch(name, 0), _batch(name, 1)
  for key in first:
    np.testing.assert_array_equal(first[key], again[key])
  assert not np.array_equal(first['image'], other['image'])


@pytest.mark.parametrize('name,classes',
                         [('model_ii', ('cdm',)), ('model_ii', ('no_sub', 'axion'))])
def test_classes_override_fixes_the_classes(name, classes):
  recipe, sample = _sampler(name, classes=classes)
  out = sample(jax.random.key(2), BATCH)
  allowed = [recipe.class_names.index(c) for c in classes]
  assert np.isin(np.asarray(out['label']), allowed).all()
  if classes == ('cdm',):
    assert (np.asarray(out['n_subhalos']) == 25).all()


def test_vmap_over_keys_and_one_compile_for_mixed_classes():
  """A vmapped, jitted sampler makes fixed-shape batches mixing every class."""
  recipe = recipes.get('model_iii', num_pix=NUM_PIX)
  traces = []

  def many(keys):
    traces.append(1)
    return jax.vmap(lambda k: recipe.sample(k, 4))(keys)

  fn = jax.jit(many, compiler_options=FAST_COMPILE)
  out = fn(jax.random.split(jax.random.key(0), 3))
  fn(jax.random.split(jax.random.key(1), 3))
  assert out['image'].shape == (3, 4, NUM_PIX, NUM_PIX, 1)
  assert len(np.unique(np.asarray(out['label']))) == 3
  assert len(traces) == 1


def test_randomized_priors_vary():
  out = _batch('randomized', 0)
  assert out['theta_e'].std() > 0.05
  assert ((out['theta_e'] >= 0.8) & (out['theta_e'] <= 1.8)).all()


def test_power_law_and_poisson_samplers():
  key = jax.random.key(0)
  u = jax.random.uniform(key, (200000,))
  m = np.asarray(jax.jit(priors.power_law, static_argnums=(1, 2))(u, 1e6, 1e10, -0.9))
  assert m.min() >= 1e6 * 0.999 and m.max() <= 1e10 * 1.001
  # Mean of m^-0.9 on [a, b]: (p/(p+1)) (b^(p+1) - a^(p+1)) / (b^p - a^p), p = 0.1.
  a, b, p = 1e6, 1e10, 0.1
  expected = p / (p + 1) * (b**(p + 1) - a**(p + 1)) / (b**p - a**p)
  assert m.mean() == pytest.approx(expected, rel=0.02)
  counts = jax.jit(jax.vmap(lambda x: priors.poisson_inverse_cdf(x, 20.0, 64)))(u[:20000])
  assert float(counts.mean()) == pytest.approx(20.0, rel=0.02)
  assert float(counts.var()) == pytest.approx(20.0, rel=0.05)


def test_poisson_sampler_matches_the_poisson_distribution():
  """Inversion (rate < 10) and PTRS (rate >= 10) branches, and leftovers at index 0."""
  stats = pytest.importorskip('scipy.stats')
  rates = np.array([0.3, 4.0, 9.99, 10.0, 17.0, 300.0], np.float32)
  n = 20000
  lam = jnp.asarray(np.repeat(rates, n))
  poisson = jax.jit(instrument.poisson, compiler_options=FAST_COMPILE)
  draws = np.asarray(poisson(jax.random.key(0), lam)).reshape(len(rates), n)
  assert (draws == np.round(draws)).all() and draws.min() >= 0
  for rate, x in zip(rates, draws):
    assert x.mean() == pytest.approx(float(rate), abs=float(4 * np.sqrt(rate / n)))
    ks = np.arange(int(rate + 8 * np.sqrt(rate) + 8))
    observed = np.bincount(x.astype(int), minlength=len(ks))[:len(ks)]
    expected = stats.poisson.pmf(ks, rate) * n
    keep = expected > 5
    chi2 = ((observed[keep] - expected[keep])**2 / expected[keep]).sum()
    assert stats.chi2.sf(chi2, keep.sum() - 1) > 1e-3, (rate, chi2)
  odd = poisson(jax.random.key(1), jnp.array([np.nan, np.inf, 50.0, 0.0]))
  assert np.isfinite(np.asarray(odd)).all()


def test_poisson_redraw_passes_keep_the_distribution(monkeypatch):
  """Rows with more rejections than one re-draw pass takes (forced: M / 64 per pass)."""
  stats = pytest.importorskip('scipy.stats')
  monkeypatch.setattr(instrument, '_LEFTOVER_FRACTION', 64)
  rate, n = 10.0, 40000    # PTRS accepts least at rate 10: ~10% of 40000 >> 40000 / 64
  x = np.asarray(jax.jit(instrument.poisson, compiler_options=FAST_COMPILE)(
      jax.random.key(3), jnp.full((n,), rate)))
  assert x.mean() == pytest.approx(float(rate), abs=float(4 * np.sqrt(rate / n)))
  ks = np.arange(40)
  observed = np.bincount(x.astype(int), minlength=len(ks))[:len(ks)]
  expected = stats.poisson.pmf(ks, rate) * n
  keep = expected > 5
  chi2 = ((observed[keep] - expected[keep])**2 / expected[keep]).sum()
  assert stats.chi2.sf(chi2, keep.sum() - 1) > 1e-3, chi2


def test_poisson_draws_do_not_depend_on_the_batch():
  """vmap over images (as the recipes do) == one call per image, even nested."""
  keys = jax.random.split(jax.random.key(4), 6)
  lam = jnp.asarray(np.random.default_rng(0).exponential(30.0, (6, 12, 12)), jnp.float32)
  one_by_one = np.stack([np.asarray(instrument.poisson(k, l)) for k, l in zip(keys, lam)])
  batched = jax.jit(jax.vmap(instrument.poisson), compiler_options=FAST_COMPILE)(keys, lam)
  nested = jax.jit(jax.vmap(jax.vmap(instrument.poisson)), compiler_options=FAST_COMPILE)(
      keys.reshape(2, 3), lam.reshape(2, 3, 12, 12))
  np.testing.assert_array_equal(np.asarray(batched), one_by_one)
  np.testing.assert_array_equal(np.asarray(nested).reshape(6, 12, 12), one_by_one)
  shared_key = jax.vmap(instrument.poisson, in_axes=(None, 0))(keys[0], lam)
  np.testing.assert_array_equal(np.asarray(shared_key[0]), one_by_one[0])
  # Raw uint32 keys (what the on-device sources split), nested as in sim_source.simulate.
  raw = jax.random.key_data(keys)
  raw_nested = jax.jit(jax.vmap(jax.vmap(instrument.poisson)), compiler_options=FAST_COMPILE)(
      raw.reshape(2, 3, -1), lam.reshape(2, 3, 12, 12))
  np.testing.assert_array_equal(np.asarray(raw_nested).reshape(6, 12, 12), one_by_one)


def test_every_recipe_declares_its_pixel_scale():
  assert set(recipes.PIXEL_SCALES) == set(recipes.names())
  for name, scale in recipes.PIXEL_SCALES.items():
    assert recipes.get(name).pixel_scale == scale, name
  assert (recipes.PIXEL_SCALES['model_i'], recipes.PIXEL_SCALES['model_ii'],
          recipes.PIXEL_SCALES['model_iii']) == (0.05, 0.101, 0.08)
