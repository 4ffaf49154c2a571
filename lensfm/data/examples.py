r"""Small example datasets in the layouts users bring, to try "your own data" commands.

  python -m lensfm.data.examples --out=examples [--per_class=24]

writes, from lensfm's simulator (`lensfind` recipe, Euclid VIS-like 0.101"/px cutouts):
  examples/lenses_fits/{train,test}/{lens,nonlens}/*.fits   a lens / non-lens folder of
      FITS cutouts with a celestial WCS (the pixel scale is read from it);
  examples/gri/catalogue.csv + *.npy   a 3-band (g, r, i) catalogue: path, label, split,
      id, ra, dec; each image (H, W, 3), its bands the scene with per-band colours and
      independent noise;
  examples/theta_e/catalogue.csv + *.npy   lenses with their Einstein radius (arcsec) in a
      `theta_e` column, for regression.
They are toy data for the commands' mechanics, not a benchmark.
"""
import csv
import os

from absl import app
from absl import flags
import jax
import numpy as np

from lensfm.data import image_files
from lensfm.data import sim_source
from lensfm.sim import recipes

CLASS_DIRS = ("nonlens", "lens")  # The lensfind recipe's labels 0 and 1.
GRI_COLOURS = (0.6, 1.0, 1.3)  # Relative flux in g, r, i: a red-ish arc and lens.


def simulate(num: int, seed: int) -> dict:
  """`num` lens-finding scenes (images [num, 64, 64, 1], labels, Einstein radii)."""
  recipe = recipes.get("lensfind")
  out = jax.jit(lambda k: sim_source.simulate(recipe, jax.random.split(k, num)))(
      jax.random.key(seed))
  return {k: np.asarray(v) for k, v in out.items()}


def _wcs_header(size: int, scale_arcsec: float):
  header = image_files.astropy_modules().io.fits.Header()
  header.update(CTYPE1="RA---TAN", CTYPE2="DEC--TAN", CRPIX1=size / 2, CRPIX2=size / 2,
                CRVAL1=150.0, CRVAL2=2.0, CDELT1=-scale_arcsec / 3600,
                CDELT2=scale_arcsec / 3600, CUNIT1="deg", CUNIT2="deg")
  return header


def write_fits_folder(root: str, per_class: int, seed: int = 0) -> None:
  """{train,test}/{lens,nonlens}/*.fits, with a WCS."""
  fits = image_files.astropy_modules().io.fits
  scale = recipes.get("lensfind").pixel_scale
  for split, split_seed in (("train", seed), ("test", seed + 1)):
    scenes = simulate(4 * per_class, split_seed)
    for label, name in enumerate(CLASS_DIRS):
      os.makedirs(os.path.join(root, split, name), exist_ok=True)
      chosen = np.flatnonzero(scenes["label"] == label)[:per_class]
      for i in chosen:
        image = scenes["image"][i, ..., 0]
        hdu = fits.PrimaryHDU(image, header=_wcs_header(image.shape[0], scale))
        hdu.writeto(os.path.join(root, split, name, f"{name}_{i:04d}.fits"), overwrite=True)


def _three_bands(image: np.ndarray, rng) -> np.ndarray:
  noise = 0.02 * float(np.abs(image).max() or 1.0)
  return np.stack([c * image + noise * rng.standard_normal(image.shape)
                   for c in GRI_COLOURS], axis=-1).astype(np.float32)


def write_gri_catalogue(root: str, per_class: int, seed: int = 0) -> None:
  """catalogue.csv (path, label, split, id, ra, dec) and (H, W, 3) .npy cutouts."""
  os.makedirs(root, exist_ok=True)
  rng = np.random.default_rng(seed)
  rows = []
  for split, split_seed in (("train", seed + 2), ("validation", seed + 3), ("test", seed + 4)):
    count = per_class if split == "train" else max(per_class // 2, 2)
    scenes = simulate(4 * count, split_seed)
    for label, name in enumerate(CLASS_DIRS):
      for i in np.flatnonzero(scenes["label"] == label)[:count]:
        path = f"{split}_{name}_{i:04d}.npy"
        np.save(os.path.join(root, path), _three_bands(scenes["image"][i, ..., 0], rng))
        rows.append({"path": path, "label": name, "split": split, "id": f"{split}-{i}",
                     "ra": f"{150 + rng.random():.5f}", "dec": f"{2 + rng.random():.5f}"})
  _write_csv(os.path.join(root, "catalogue.csv"), rows)


def write_theta_e_catalogue(root: str, num: int, seed: int = 0) -> None:
  """catalogue.csv (path, theta_e, split) of lenses only, for regression."""
  os.makedirs(root, exist_ok=True)
  scenes = simulate(3 * num, seed + 5)
  rows = []
  lenses = np.flatnonzero(scenes["label"] == 1)[:num]
  for n, i in enumerate(lenses):
    path = f"lens_{i:04d}.npy"
    np.save(os.path.join(root, path), scenes["image"][i, ..., 0])
    split = "test" if n % 5 == 0 else ("validation" if n % 5 == 1 else "train")
    rows.append({"path": path, "theta_e": f"{scenes['theta_e'][i]:.4f}", "split": split})
  _write_csv(os.path.join(root, "catalogue.csv"), rows)


def _write_csv(path: str, rows: list[dict]) -> None:
  tmp = f"{path}.tmp-{os.getpid()}"
  with open(tmp, "w", newline="") as f:
    writer = csv.DictWriter(f, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
  os.replace(tmp, path)


def write_all(out: str, per_class: int, seed: int = 0) -> None:
  write_fits_folder(os.path.join(out, "lenses_fits"), per_class, seed)
  write_gri_catalogue(os.path.join(out, "gri"), per_class, seed)
  write_theta_e_catalogue(os.path.join(out, "theta_e"), 2 * per_class, seed)


_OUT = flags.DEFINE_string("out", "examples", "Where the example datasets go.")
_PER_CLASS = flags.DEFINE_integer("per_class", 24, "Training cutouts per class.")
_SEED = flags.DEFINE_integer("seed", 0, "Simulator seed.")


def main(argv):
  del argv
  write_all(_OUT.value, _PER_CLASS.value, _SEED.value)
  print(f"Wrote {_OUT.value}/lenses_fits, {_OUT.value}/gri and {_OUT.value}/theta_e.")


if __name__ == "__main__":
  app.run(main)
