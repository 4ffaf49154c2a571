"""Realistic-sky recipes (lensfm.sim.realistic): every recipe's contract, and two of them
rendered (multi-band HSC with substructure classes; Euclid lens finding) at small sizes."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lensfm.sim import realistic
from lensfm.sim import recipes

FAST_COMPILE = {'xla_backend_optimization_level': 0}
SMALL = {'num_pix': 16, 'supersampling': 1}


@pytest.mark.parametrize('name', realistic.names())
def test_contract(name):
  recipe = realistic.get(name, num_pix=20)
  assert recipe.name == name and recipe.label_keys == recipes.LABEL_KEYS
  bands = realistic.surveys.SURVEYS[recipe.survey]
  assert recipe.image_shape == (20, 20, len(bands))
  assert recipe.pixel_scale == realistic.PIXEL_SCALES[name]
  expected = recipes.LENSFIND_CLASSES if name.endswith('_lensfind') else recipes.DEEPLENSE_CLASSES
  assert recipe.class_names == expected
  assert recipe == realistic.get(name, num_pix=20) and recipe != realistic.get(name, num_pix=24)


def test_get_rejects_unknown_names_and_overrides():
  with pytest.raises(ValueError, match='realistic_euclid'):
    realistic.get('realistic_kids')
  with pytest.raises(ValueError, match='sigma_sub'):
    realistic.get('realistic_lsst', sigma_subs=0.1)


def _scenes_per_class(recipe, keys):
  """Each scene key [N] rendered as every class (noise-free): images [N, classes, H, W, C]
  and labels [N, classes]."""
  labels = jnp.arange(len(recipe.class_names))

  def per_class(key):
    params, out = jax.vmap(recipe.scene, in_axes=(None, 0))(key, labels)
    return jax.vmap(recipe.render)(params), out

  clean, labels_out = jax.jit(jax.vmap(per_class), compiler_options=FAST_COMPILE)(keys)
  return np.asarray(clean), jax.tree.map(np.asarray, labels_out)


def test_hsc_renders_five_bands_and_the_classes_differ():
  recipe = realistic.get('realistic_hsc', max_subhalos=16, **SMALL)
  clean, labels = _scenes_per_class(recipe, jax.random.key(3)[None])
  clean, labels = clean[0], jax.tree.map(lambda v: v[0], labels)
  assert clean.shape == (3, 16, 16, 5) and np.isfinite(clean).all() and clean.min() > -1e-6
  no_sub, cdm, axion = clean
  assert not np.allclose(no_sub, cdm) and not np.allclose(no_sub, axion)
  assert labels['n_subhalos'][1] > 0 and labels['n_subhalos'][[0, 2]].tolist() == [0, 0]
  assert labels['axion_mass'][2] > 0 and labels['sub_mass_fraction'][0] == 0
  assert (labels['theta_e'] > 0).all()
  # Lens light is red: more flux in i than in g.
  assert clean[0, ..., 2].sum() > clean[0, ..., 0].sum()
  noisy = jax.jit(recipe.observe, compiler_options=FAST_COMPILE)(
      jax.random.key(0), jnp.asarray(no_sub), None)
  assert np.isfinite(noisy).all() and not np.allclose(noisy, no_sub)


def test_euclid_lensfind_lensed_and_negatives():
  recipe = realistic.get('realistic_euclid_lensfind', **SMALL)
  clean, labels = _scenes_per_class(recipe, jax.random.split(jax.random.key(1), 6))
  assert clean.shape == (6, 2, 16, 16, 1) and np.isfinite(clean).all()
  assert (labels['theta_e'][:, 0] == 0).all() and (labels['theta_e'][:, 1] > 0).all()
  # The lensed scene adds the lensed source to the same lens galaxy: images differ.
  assert all(not np.allclose(clean[i, 0], clean[i, 1]) for i in range(6))


def test_lensfind_negatives_cover_every_kind():
  """Scenes only (no rendering): each negative kind has the components it promises."""
  recipe = realistic.get('realistic_lsst_lensfind', num_pix=20)
  keys = jax.random.split(jax.random.key(7), 64)
  params, labels = jax.tree.map(np.asarray, jax.jit(jax.vmap(recipe.scene, in_axes=(0, None)),
                                                    compiler_options=FAST_COMPILE)(keys, 0))
  kind = params['negative_kind']
  assert set(kind.tolist()) == set(range(len(realistic.NEGATIVE_KINDS)))
  assert (params['source']['amp'] == 0).all() and (params['deflection_scale'] == 0).all()
  assert (labels['theta_e'] == 0).all()
  neighbours = params['neighbours']['amp'].sum(axis=(1, 2)) > 0
  ring = params['ring']['amp'].sum(axis=1) > 0
  assert not neighbours[kind == 0].any() and not ring[kind == 0].any()     # alone
  assert not ring[kind == 1].any()                                          # neighbours
  assert (neighbours ^ ring)[kind == 2].all()                               # arcs or a ring
  arcs = (kind == 2) & neighbours
  e = np.hypot(params['neighbours']['e1'], params['neighbours']['e2'])
  assert (e[arcs][:, 0] > 0.5).all()                                        # thin: q < 0.33
  merger = kind == 3
  assert (params['neighbours']['n_sersic'][merger][:, 1] == 1.0).all()   # elliptical's envelope
  companion = params['neighbours']
  sep = np.hypot(companion['center_x'][merger][:, 0] - params['epl']['center_x'][merger],
                 companion['center_y'][merger][:, 0] - params['epl']['center_y'][merger])
  assert ((sep > 0.45) & (sep < 1.55)).all()
