"""Realistic-sky rendering speed: the reference path vs the shortcuts, side by side.

For each realistic recipe it jits `sim_source.simulate(recipe, keys)` (one example per key,
as training draws batches) twice: once traced inside `realistic.reference_rendering()`
(every one of the 160 subhalo slots and the vortex evaluated for every scene, every
lens-finding scene ray-traced, 40 EPL series terms, direct PSF convolution: the rendering
before the shortcuts) and once as recipes render now (halos and vortex summed over the
present ones only, `render.sum_present`; non-lensed scenes skip ray tracing and source
light, `render.map_present`; 28 EPL terms, exact to float32 at the prior's smallest axis
ratio; FFT PSF convolution).
Both make the same examples from the same keys; it reports images/s (wall clock),
CPU-seconds per image (all threads of this process: stays meaningful when other jobs
share the CPU), their ratio, compile times and the largest image difference (relative
to each image's maximum).

  python -m experiments.benchmarks.sim_realistic                     # euclid, its lensfind, lsst
  python -m experiments.benchmarks.sim_realistic --recipes=all --iters=3
"""
import os
import resource
import time

from absl import app
from absl import flags
import jax
import numpy as np

from experiments import results
from lensfm.data import sim_source
from lensfm.sim import realistic

flags.DEFINE_string('recipes', 'realistic_euclid,realistic_euclid_lensfind,realistic_lsst',
                    "Comma-separated realistic recipes, or 'all'.")
flags.DEFINE_integer('batch', 64, 'Examples per simulate call.')
flags.DEFINE_integer('iters', 2, 'Timed calls per recipe and path (after one warm-up).')
flags.DEFINE_string('tag', '', 'Extra tag in the result file name.')


def cpu_seconds():
  usage = resource.getrusage(resource.RUSAGE_SELF)
  return usage.ru_utime + usage.ru_stime


def time_path(recipe, batch, iters, reference):
  """(images/s, CPU s per image, compile s, images of the first timed keys)."""
  simulate = lambda keys: sim_source.simulate(recipe, keys)
  keys = jax.random.split(jax.random.key(0), batch)
  start = time.perf_counter()
  if reference:
    with realistic.reference_rendering():
      compiled = jax.jit(simulate).lower(keys).compile()
  else:
    compiled = jax.jit(simulate).lower(keys).compile()
  jax.block_until_ready(compiled(keys))
  compile_s = time.perf_counter() - start
  start, cpu_start = time.perf_counter(), cpu_seconds()
  for i in range(iters):
    out = jax.block_until_ready(compiled(jax.random.split(jax.random.key(i + 1), batch)))
    if i == 0:
      images = np.asarray(out['image'])
  elapsed, cpu = time.perf_counter() - start, cpu_seconds() - cpu_start
  return iters * batch / elapsed, cpu / (iters * batch), compile_s, images


def main(argv):
  del argv
  args = flags.FLAGS
  names = realistic.names() if args.recipes == 'all' else args.recipes.split(',')
  rows, measured = [], {}
  for name in names:
    recipe = realistic.get(name)
    old = time_path(recipe, args.batch, args.iters, reference=True)
    new = time_path(recipe, args.batch, args.iters, reference=False)
    scale = np.abs(old[3]).max(axis=(1, 2, 3), keepdims=True)
    diff = float((np.abs(new[3] - old[3]) / np.maximum(scale, 1e-30)).max())
    entry = {'image_shape': list(recipe.image_shape), 'supersampling': recipe.supersampling,
             'reference': {'images_per_s': old[0], 'cpu_s_per_image': old[1],
                           'compile_s': old[2]},
             'fast': {'images_per_s': new[0], 'cpu_s_per_image': new[1], 'compile_s': new[2]},
             'speedup_wall': new[0] / old[0], 'speedup_cpu': old[1] / new[1],
             'max_rel_image_difference': diff}
    measured[name] = entry
    rows.append([name, 'x'.join(map(str, recipe.image_shape)), f'{old[0]:.1f}', f'{new[0]:.1f}',
                 f'{new[0] / old[0]:.1f}x', f'{1e3 * old[1]:.1f}', f'{1e3 * new[1]:.1f}',
                 f'{old[1] / new[1]:.1f}x', f'{old[2]:.0f} / {new[2]:.0f}', f'{diff:.1e}'])
    print(rows[-1], flush=True)
  load = os.getloadavg()
  lines = [f'# Realistic-sky rendering: reference vs shortcuts (batch {args.batch}, '
           f'{args.iters} timed calls each, load average {load[0]:.1f})', '']
  lines += results.table(
      ['recipe', 'image', 'ref img/s', 'fast img/s', 'wall ratio', 'ref CPU ms/img',
       'fast CPU ms/img', 'CPU ratio', 'compile s (ref / fast)', 'max image diff'], rows)
  lines += ['', 'Image difference: max |fast - reference| / max |reference| per image, the '
            'same keys. CPU ms/img counts all threads of this process.']
  result = {'batch': args.batch, 'iters': args.iters, 'load_average': list(load),
            'recipes': measured}
  tags = ['sim_realistic'] + ([args.tag] if args.tag else [])
  print(results.write(results.stem(*tags), result, lines))


if __name__ == '__main__':
  app.run(main)
