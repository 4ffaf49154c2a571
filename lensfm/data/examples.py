r"""Small example datasets in the layouts users bring, to try "your own data" commands.

  python -m lensfm.data.examples --out=examples [--per_class=24] [--sky=toy|realistic]

writes, from lensfm's simulator:
  examples/lenses_fits/{train,test}/{lens,nonlens}/*.fits   a lens / non-lens folder of
      FITS cutouts with a celestial WCS (the pixel scale is read from it);
  examples/gri/catalogue.csv + *.npy   a 3-band (g, r, i) catalogue: path, label, split,
      id, ra, dec, pixel_scale; each image (H, W, 3);
  examples/theta_e/catalogue.csv + *.npy   lenses with their Einstein radius (arcsec) in a
      `theta_e` column, for regression.
Skies (`--sky`):
  toy        the `lensfind` recipe (Euclid VIS-like 0.101"/px, no lens light); the gri
             bands are the one band times per-band colours with independent noise. Toy
             data for the commands' mechanics, not a benchmark.
  realistic  `realistic_euclid_lensfind` for the FITS folder and the Einstein radii,
             `realistic_lsst_lensfind` (g, r, i rendered per band, Moffat seeing, 0.2"/px)
             for the catalogue: lens light, EPL lenses, clumpy sources, arc-like
             contaminants and mergers among the non-lenses, survey noise.
             `--source_mags=22.5,25.5` makes the sources fainter.
Test sets have `--test_per_class` per class (default: as many as for training).
"""
import csv
import os

from absl import app
from absl import flags
import jax
import numpy as np

from lensfm.data import image_files
from lensfm.data import sim_source
from lensfm.sim import catalog

CLASS_DIRS = ("nonlens", "lens")  # The lens-finding recipes' labels 0 and 1.
GRI_COLOURS = (0.6, 1.0, 1.3)  # Toy sky: relative flux in g, r, i (a red-ish arc and lens).
SKIES = {  # What each set is simulated from: (FITS folder and theta_e, gri catalogue).
    "toy": ("lensfind", "lensfind"),
    "realistic": ("realistic_euclid_lensfind", "realistic_lsst_lensfind"),
}
_CHUNK = 128  # Scenes simulated per jitted call (memory stays flat for large sets).


def simulate(num: int, seed: int, recipe_name: str = "lensfind", **overrides) -> dict:
  """`num` scenes of a lens-finding recipe (images [num, H, W, C], labels, theta_e)."""
  recipe = catalog.get(recipe_name, **overrides)
  run = jax.jit(lambda keys: sim_source.simulate(recipe, keys))
  keys = jax.random.split(jax.random.key(seed), num)
  chunks = [run(keys[i:i + _CHUNK]) for i in range(0, num, _CHUNK)]
  return {k: np.concatenate([np.asarray(c[k]) for c in chunks]) for k in chunks[0]}


def balanced(num_per_class: int, seed: int, recipe_name: str, **overrides) -> dict:
  """`num_per_class` scenes of each class (simulated until there are enough)."""
  picked, attempt = {}, 0
  while True:
    scenes = simulate(3 * num_per_class, seed + 1000 * attempt, recipe_name, **overrides)
    for k, v in scenes.items():
      picked[k] = np.concatenate([picked[k], v]) if k in picked else v
    counts = [np.sum(picked["label"] == c) for c in range(len(CLASS_DIRS))]
    if min(counts) >= num_per_class:
      break
    attempt += 1
  chosen = np.concatenate([np.flatnonzero(picked["label"] == c)[:num_per_class]
                           for c in range(len(CLASS_DIRS))])
  return {k: v[chosen] for k, v in picked.items()}


def _wcs_header(size: int, scale_arcsec: float):
  header = image_files.astropy_modules().io.fits.Header()
  header.update(CTYPE1="RA---TAN", CTYPE2="DEC--TAN", CRPIX1=size / 2, CRPIX2=size / 2,
                CRVAL1=150.0, CRVAL2=2.0, CDELT1=-scale_arcsec / 3600,
                CDELT2=scale_arcsec / 3600, CUNIT1="deg", CUNIT2="deg")
  return header


def write_fits_folder(root: str, per_class: int, seed: int = 0, sky: str = "toy",
                      test_per_class: int = 0, **overrides) -> None:
  """{train,test}/{lens,nonlens}/*.fits, with a WCS."""
  fits = image_files.astropy_modules().io.fits
  recipe_name = SKIES[sky][0]
  scale = catalog.PIXEL_SCALES[recipe_name]
  for split, split_seed, count in (("train", seed, per_class),
                                   ("test", seed + 1, test_per_class or per_class)):
    scenes = balanced(count, split_seed, recipe_name, **overrides)
    for i, (image, label) in enumerate(zip(scenes["image"], scenes["label"])):
      name = CLASS_DIRS[label]
      os.makedirs(os.path.join(root, split, name), exist_ok=True)
      hdu = fits.PrimaryHDU(image[..., 0], header=_wcs_header(image.shape[0], scale))
      hdu.writeto(os.path.join(root, split, name, f"{name}_{i:04d}.fits"), overwrite=True)


def _three_bands(image: np.ndarray, rng) -> np.ndarray:
  if image.shape[-1] == 3:  # Rendered per band already (realistic sky).
    return image.astype(np.float32)
  image = image[..., 0]
  noise = 0.02 * float(np.abs(image).max() or 1.0)
  return np.stack([c * image + noise * rng.standard_normal(image.shape)
                   for c in GRI_COLOURS], axis=-1).astype(np.float32)


def write_gri_catalogue(root: str, per_class: int, seed: int = 0, sky: str = "toy",
                        test_per_class: int = 0, **overrides) -> None:
  """catalogue.csv (path, label, split, id, ra, dec, pixel_scale) and (H, W, 3) .npy
  cutouts."""
  os.makedirs(root, exist_ok=True)
  rng = np.random.default_rng(seed)
  recipe_name = SKIES[sky][1]
  scale = catalog.PIXEL_SCALES[recipe_name]
  rows = []
  held_out = max(per_class // 2, 2)
  for split, split_seed, count in (("train", seed + 2, per_class),
                                   ("validation", seed + 3, held_out),
                                   ("test", seed + 4, test_per_class or held_out)):
    scenes = balanced(count, split_seed, recipe_name, **overrides)
    for i, (image, label) in enumerate(zip(scenes["image"], scenes["label"])):
      name = CLASS_DIRS[label]
      path = f"{split}_{name}_{i:04d}.npy"
      np.save(os.path.join(root, path), _three_bands(image, rng))
      rows.append({"path": path, "label": name, "split": split, "id": f"{split}-{i}",
                   "ra": f"{150 + rng.random():.5f}", "dec": f"{2 + rng.random():.5f}",
                   "pixel_scale": f"{scale:g}"})
  _write_csv(os.path.join(root, "catalogue.csv"), rows)


def write_theta_e_catalogue(root: str, num: int, seed: int = 0, sky: str = "toy",
                            test_num: int = 0, **overrides) -> None:
  """catalogue.csv (path, theta_e, split, pixel_scale) of lenses only, for regression:
  `num` for training, a fifth of that for validation, `test_num` (default a fifth) for
  test."""
  os.makedirs(root, exist_ok=True)
  recipe_name = SKIES[sky][0]
  scale = catalog.PIXEL_SCALES[recipe_name]
  held_out = max(num // 5, 2)
  counts = {"train": num, "validation": held_out, "test": test_num or held_out}
  lenses = balanced(sum(counts.values()), seed + 5, recipe_name, **overrides)
  lens_index = np.flatnonzero(lenses["label"] == CLASS_DIRS.index("lens"))
  splits = np.repeat(list(counts), list(counts.values()))
  rows = []
  for split, i in zip(splits, lens_index):
    path = f"lens_{i:04d}.npy"
    np.save(os.path.join(root, path), lenses["image"][i, ..., 0])
    rows.append({"path": path, "theta_e": f"{lenses['theta_e'][i]:.4f}", "split": split,
                 "pixel_scale": f"{scale:g}"})
  _write_csv(os.path.join(root, "catalogue.csv"), rows)


def _write_csv(path: str, rows: list[dict]) -> None:
  tmp = f"{path}.tmp-{os.getpid()}"
  with open(tmp, "w", newline="") as f:
    writer = csv.DictWriter(f, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
  os.replace(tmp, path)


def write_all(out: str, per_class: int, seed: int = 0, sky: str = "toy",
              test_per_class: int = 0, **overrides) -> None:
  if sky not in SKIES:
    raise ValueError(f"--sky={sky!r}: expected one of {sorted(SKIES)}.")
  write_fits_folder(os.path.join(out, "lenses_fits"), per_class, seed, sky, test_per_class,
                    **overrides)
  write_gri_catalogue(os.path.join(out, "gri"), per_class, seed, sky, test_per_class,
                      **overrides)
  write_theta_e_catalogue(os.path.join(out, "theta_e"), per_class, seed, sky,
                          test_per_class, **overrides)


_OUT = flags.DEFINE_string("out", "examples", "Where the example datasets go.")
_PER_CLASS = flags.DEFINE_integer("per_class", 24, "Training cutouts per class.")
_SEED = flags.DEFINE_integer("seed", 0, "Simulator seed.")
_SKY = flags.DEFINE_enum("sky", "toy", list(SKIES), "Which simulated sky (module docstring).")
_TEST = flags.DEFINE_integer("test_per_class", 0, "Test cutouts per class (0: as for training).")
_MAGS = flags.DEFINE_list("source_mags", [], "Realistic sky: the sources' magnitude range.")


def main(argv):
  del argv
  overrides = {"source_mag_range": tuple(map(float, _MAGS.value))} if _MAGS.value else {}
  write_all(_OUT.value, _PER_CLASS.value, _SEED.value, _SKY.value, _TEST.value, **overrides)
  print(f"Wrote {_OUT.value}/lenses_fits, {_OUT.value}/gri and {_OUT.value}/theta_e.")


if __name__ == "__main__":
  app.run(main)
