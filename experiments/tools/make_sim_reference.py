"""Regenerates tests/data/sim_reference/: lenstronomy renderings of one scene per recipe.

Each `<recipe>.npz` holds the scene parameters (flattened 'params/...' keys, as the
recipe's `sample_params` drew them with a fixed key and class), the recipe overrides,
and lenstronomy's noise-free image of that scene ('lenstronomy', [H, W, C] float32).
Models II/III also store 'simapi': the image made the way DeepLense made it (SimAPI,
multi-plane, z_source_convention = 2.5, magnitude-based brightness), which pins the
reduced-deflection quirk. tests/test_sim_render.py renders the same parameters with
lensfm.sim and compares, without needing lenstronomy.

  python -m experiments.tools.make_sim_reference [--out=tests/data/sim_reference]
"""
import json
import os

from absl import app
from absl import flags
import jax
import numpy as np

from experiments import results
from lensfm.sim import lenstronomy_reference as ref
from lensfm.sim import recipes

_OUT = flags.DEFINE_string('out', os.path.join(results.ROOT, 'tests', 'data', 'sim_reference'),
                           'Where the .npz files go.')

# (recipe, overrides, class rendered). One substructure-bearing class per recipe where
# lenstronomy can express it (the randomized axion vortex is a line mass it lacks).
CASES = (
    ('model_i', {'num_pix': 64}, 'cdm'),
    ('model_ii', {}, 'axion'),
    ('model_iii', {}, 'cdm'),
    ('model_iv', {}, 'cdm'),
    ('randomized', {}, 'cdm'),
    ('lensfind', {}, 'lensed'),
)
SEED = 20240607


def reference_case(name, overrides, class_name, seed=SEED):
  """(params, lenstronomy image, simapi image or None) for one recipe."""
  recipe = recipes.get(name, **overrides)
  label = recipe.class_names.index(class_name)
  params, _ = recipe.sample_params(jax.random.key(seed), 1, labels=np.array([label]))
  params = jax.tree.map(lambda a: np.asarray(a[0]), params)
  image = ref.render(params, recipe.inst).astype(np.float32)
  simapi = None
  if name in ('model_ii', 'model_iii'):
    simapi = ref.deeplense_simapi_render(params, ref.simapi_band_kwargs(recipe.inst))
    simapi = simapi.astype(np.float32)
  return params, image, simapi


def main(argv):
  del argv
  os.makedirs(_OUT.value, exist_ok=True)
  for name, overrides, class_name in CASES:
    params, image, simapi = reference_case(name, overrides, class_name)
    arrays = {f'params/{k}': v for k, v in ref.flatten_params(params).items()}
    arrays['lenstronomy'] = image
    if simapi is not None:
      arrays['simapi'] = simapi
    arrays['meta'] = np.asarray(json.dumps({'recipe': name, 'overrides': overrides,
                                            'class': class_name, 'seed': SEED}))
    path = os.path.join(_OUT.value, f'{name}.npz')
    np.savez_compressed(path, **arrays)
    print(f'{path}: image {image.shape}, peak {image.max():.4g}, '
          f'{os.path.getsize(path) / 1024:.1f} KiB')


if __name__ == '__main__':
  app.run(main)
