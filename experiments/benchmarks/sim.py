"""Simulator throughput: lensfm.sim (JAX) vs. lenstronomy making the same recipe.

For each recipe (default: Model II at 64x64 and Model I at 150x150) it times
  * JAX: the jitted `recipe.sample(key, batch)` (priors + ray tracing + PSF + noise) on
    the default JAX device, after a warm-up call (compile time reported separately);
  * lenstronomy (on the host CPU): the same scenes, made the way the DeepLense scripts
    make them, one image at a time: Model II builds a SimAPI (multi-plane, z_source
    convention 2.5, magnitude -> amplitude) per image and renders it; Model I builds an
    ImageModel per image, renders it and draws the Model I noise with numpy. Scene
    parameters are drawn beforehand by lensfm's sampler and are NOT timed (a small
    advantage to lenstronomy).
and prints / writes experiments/results/sim_throughput_<device>.{json,md} with the
device, JAX version, CPU count, load average and settings. Besides wall-clock images/s it
reports CPU-seconds per image (all threads of this process), which stays meaningful when
other jobs share the CPU; the JAX side may use several cores, lenstronomy uses one.

  python -m experiments.benchmarks.sim                  # CPU-sized defaults
  python -m experiments.benchmarks.sim --seconds=20 --lenstronomy_images=0    # GPU/TPU
"""
import math
import os
import platform
import resource
import time

from absl import app
from absl import flags
import jax
import numpy as np

from experiments import results
from lensfm.sim import lenstronomy_reference as ref
from lensfm.sim import recipes

flags.DEFINE_string('recipes', 'model_ii,model_i', 'Recipes timed.')
flags.DEFINE_integer('batch', None, 'JAX batch size (default: ~0.25M pixels per batch on CPU, '
                     '~32M on accelerators, i.e. 64 / 16 for Model II / I on CPU).')
flags.DEFINE_float('seconds', 10.0, 'JAX timing per recipe.')
flags.DEFINE_integer('lenstronomy_images', 100,
                     'Images lenstronomy makes per recipe (0 skips it).')
flags.DEFINE_string('out', None,
                    'JSON path (default experiments/results/sim_throughput_<device>.json).')


def cpu_seconds():
  """CPU time of this process, all threads (user + system)."""
  usage = resource.getrusage(resource.RUSAGE_SELF)
  return usage.ru_utime + usage.ru_stime


def default_batch(recipe, on_cpu):
  """~0.25M pixels per batch on CPU (cache-sized; measured fastest), ~32M on accelerators."""
  pixels = recipe.num_pix**2 * recipe.num_bands
  budget = 2**18 if on_cpu else 2**25
  return int(max(8, 2**round(math.log2(max(budget / pixels, 1)))))


def time_jax(recipe, batch, seconds, min_iters=3):
  """(images/s wall, CPU s per image, compile+first-call s, iterations) of the sampler."""
  sample = jax.jit(recipe.sample, static_argnums=1)
  start = time.perf_counter()
  jax.block_until_ready(sample(jax.random.key(0), batch))
  compile_s = time.perf_counter() - start
  iters, key = 0, jax.random.key(1)
  start, cpu_start = time.perf_counter(), cpu_seconds()
  # Keys are derived on device inside the loop; only the final block waits.
  while True:
    key, sub = jax.random.split(key)
    out = sample(sub, batch)
    iters += 1
    if iters >= min_iters and iters % min_iters == 0:
      jax.block_until_ready(out)
      if time.perf_counter() - start >= seconds:
        break
  jax.block_until_ready(out)
  elapsed, cpu = time.perf_counter() - start, cpu_seconds() - cpu_start
  return iters * batch / elapsed, cpu / (iters * batch), compile_s, iters


def _model_i_noise(rng, image, exposure):
  """DeepLens.simple_sim's observation, in numpy (image_util.add_poisson/add_background)."""
  poisson = rng.normal(size=image.shape) * np.sqrt(np.abs(image) / exposure)
  background = rng.normal(size=image.shape) * 0.01
  return rng.poisson(np.clip(exposure * (image + poisson + background), 0, None))


def time_lenstronomy(recipe, num_images, seed=0, single_plane=False, warmup=3):
  """(images/s wall, CPU s per image) of lenstronomy making `num_images` scenes (host CPU).

  The first `warmup` scenes are made untimed: lenstronomy compiles some of its functions
  with numba on first use, a one-off cost like JAX's compile (which is timed apart too).

  single_plane=True renders Models II/III with a plain single-plane ImageModel (the
  deflection rescaling folded into the parameters) instead of DeepLense's multi-plane
  SimAPI: lenstronomy's fastest way to the same image.
  """
  params, _ = jax.jit(recipe.sample_params, static_argnums=1)(
      jax.random.key(seed), num_images + warmup)
  params = jax.tree.map(np.asarray, params)
  rng = np.random.default_rng(seed)
  band = ref.simapi_band_kwargs(recipe.inst)
  for i in range(num_images + warmup):
    if i == warmup:
      start, cpu_start = time.perf_counter(), cpu_seconds()
    p = jax.tree.map(lambda a, i=i: a[i], params)
    if recipe.name in ('model_ii', 'model_iii') and single_plane:
      image = ref.render(p, recipe.inst)[..., 0]
      image = image + image
    elif recipe.name in ('model_ii', 'model_iii'):
      image = ref.deeplense_simapi_render(p, dict(band))[..., 0]
      image = image + image   # the published quirk
    elif recipe.name == 'model_i':
      image = _model_i_noise(rng, ref.render(p, recipe.inst)[..., 0], float(p['exposure']))
    else:
      raise ValueError(f'no lenstronomy timing path for {recipe.name}')
    del image
  elapsed, cpu = time.perf_counter() - start, cpu_seconds() - cpu_start
  return num_images / elapsed, cpu / num_images


def main(argv):
  del argv
  args = flags.FLAGS  # Read as args.NAME.

  device = jax.devices()[0]
  on_cpu = device.platform == 'cpu'
  measured = {
      'device_kind': device.device_kind, 'platform': device.platform,
      'num_devices': jax.device_count(), 'jax_version': jax.__version__,
      'cpu_count': os.cpu_count(), 'host': platform.processor() or platform.machine(),
      'python': platform.python_version(),
      'jax_seconds_per_recipe': args.seconds, 'lenstronomy_images': args.lenstronomy_images,
      'load_average_start': os.getloadavg(), 'recipes': {},
  }
  try:
    import lenstronomy  # pylint: disable=import-outside-toplevel
    measured['lenstronomy_version'] = lenstronomy.__version__
  except ImportError:
    args.lenstronomy_images = 0

  for name in args.recipes.split(','):
    recipe = recipes.get(name)
    batch = args.batch or default_batch(recipe, on_cpu)
    row = {'image_shape': recipe.image_shape, 'noise': recipe.noise, 'batch_size': batch}
    rate, cpu_per_image, compile_s, iters = time_jax(recipe, batch, args.seconds)
    row.update(jax_images_per_s=rate, jax_cpu_s_per_image=cpu_per_image,
               jax_compile_s=compile_s, jax_iterations=iters)
    print(f'{name} {recipe.image_shape}: JAX {rate:,.0f} images/s on {device.device_kind} '
          f'(batch {batch}, {iters} batches, {cpu_per_image * 1e3:.2f} CPU-ms/image, '
          f'compile {compile_s:.1f}s)', flush=True)
    if args.lenstronomy_images:
      lrate, lcpu = time_lenstronomy(recipe, args.lenstronomy_images)
      row.update(lenstronomy_images_per_s=lrate, lenstronomy_cpu_s_per_image=lcpu,
                 speedup_wall=rate / lrate, speedup_cpu_time=lcpu / cpu_per_image)
      print(f'{name}: lenstronomy {lrate:,.1f} images/s ({lcpu * 1e3:.1f} CPU-ms/image) -> '
            f'JAX/lenstronomy = {rate / lrate:,.1f}x wall-clock, '
            f'{lcpu / cpu_per_image:,.1f}x per CPU-second', flush=True)
      if name in ('model_ii', 'model_iii'):
        srate, scpu = time_lenstronomy(recipe, args.lenstronomy_images, single_plane=True)
        row.update(lenstronomy_single_plane_images_per_s=srate,
                   lenstronomy_single_plane_cpu_s_per_image=scpu,
                   speedup_wall_vs_single_plane=rate / srate,
                   speedup_cpu_time_vs_single_plane=scpu / cpu_per_image)
        print(f'{name}: lenstronomy single-plane ImageModel {srate:,.1f} images/s '
              f'({scpu * 1e3:.1f} CPU-ms/image) -> {rate / srate:,.1f}x wall-clock, '
              f'{scpu / cpu_per_image:,.1f}x per CPU-second', flush=True)
    measured['recipes'][name] = row
  measured['load_average_end'] = os.getloadavg()

  out = args.out or results.stem('sim_throughput') + '.json'
  lines = [f'Simulator throughput, JAX ({device.device_kind}) vs lenstronomy (one host core, '
           f'{args.lenstronomy_images} images per recipe); images/s wall clock.', '']
  lines += results.table(
      ['recipe', 'image', 'JAX batch', 'JAX images/s', 'lenstronomy images/s',
       'single-plane images/s', 'JAX / lenstronomy (wall, CPU s)'],
      [[name, 'x'.join(map(str, r['image_shape'])), r['batch_size'],
        f"{r['jax_images_per_s']:,.0f}", f"{r.get('lenstronomy_images_per_s', math.nan):,.1f}",
        f"{r.get('lenstronomy_single_plane_images_per_s', math.nan):,.1f}",
        f"{r.get('speedup_wall', math.nan):,.1f}x, {r.get('speedup_cpu_time', math.nan):,.1f}x"]
       for name, r in measured['recipes'].items()])
  results.write(os.path.splitext(out)[0], measured, lines)
  print(f'wrote {out}')


if __name__ == '__main__':
  app.run(main)
