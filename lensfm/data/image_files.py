"""Reading a user's own images: .npy and FITS files, one image per file.

`expand_inputs` turns a file, a directory (its .npy/.fits/.fit/.fits.gz files, sorted)
or a glob pattern (or a comma-separated list of them) into a sorted list of paths.
`read_image` returns float32 [H, W, C] or raises `UnreadableImage` saying what is wrong
with the file: unreadable or truncated, not an image array, NaN or infinite pixels
(unless `allow_nonfinite`), or (when `size` is given) a shape that is not `size`.
`read_image_and_scale` also returns the pixel scale (arcsec/pixel) a FITS file's WCS
declares (None for .npy or no WCS). `suspicious` says what makes a readable image a
doubtful input (non-finite pixels, all zero, constant).

Accepted layouts for a model of H x W pixels and C channels: (H, W) when C = 1,
(H, W, C) and (C, H, W). Pickled .npy files are refused unless `allow_pickle` (pickles
can run code); DeepLense axion files, pickled [image, mass], then give their image.
FITS: the first HDU holding an array of 2 or more dimensions (or `hdu` if given),
read with astropy; big-endian data are converted to native float32.

For the `files` dataset builder: `read_any` also reads PNG/JPEG pictures (grey: 1 band,
else RGB) and tile-compressed FITS (.fz), and stacks several FITS extensions as bands
(`parse_hdu`: an index or EXTNAME, a list of them, or 'all'); `hwc_shape` / `to_bands`
lay an array of any band count out as (H, W, C). `read_image` keeps the rules above.
"""
import glob
import os
from typing import Optional

import numpy as np
from PIL import Image

from lensfm import errors

NPY_MAGIC = b"\x93NUMPY"
EXTENSIONS = (".npy", ".fits", ".fit", ".fts", ".fits.gz", ".fit.gz")


class UnreadableImage(errors.UserError):
  """A file that cannot be used as an input image; the message names the file."""


def is_image_file(path: str) -> bool:
  return path.lower().endswith(EXTENSIONS)


def expand_inputs(inputs) -> list[str]:
  """Paths from a file, directory or glob (or a comma-separated list / sequence of them)."""
  if isinstance(inputs, str):
    specs = [s.strip() for s in inputs.split(",") if s.strip()]
  else:
    specs = [str(s) for s in inputs]
  if not specs:
    raise errors.UserError("No input images given (config.inputs is empty); give a file, a "
                     "directory or a glob such as 'images/*.fits'.")
  paths = []
  for spec in specs:
    spec = os.path.expanduser(spec)
    if os.path.isdir(spec):
      found = sorted(os.path.join(spec, f) for f in os.listdir(spec) if is_image_file(f))
      if not found:
        raise errors.MissingFileError(f"Directory {spec} holds no {'/'.join(EXTENSIONS)} files.")
    elif os.path.isfile(spec):
      found = [spec]
    else:
      found = sorted(p for p in glob.glob(spec, recursive=True) if os.path.isfile(p))
      if not found:
        raise errors.MissingFileError(f"config.inputs: {spec!r} is not a file or directory "
                                      "and matches no files.")
    paths += found
  return list(dict.fromkeys(paths))  # Drop duplicates, keep the order.


def _read_npy(path: str, allow_pickle: bool) -> np.ndarray:
  try:
    with open(path, "rb") as f:
      magic = f.read(len(NPY_MAGIC))
  except OSError as e:
    raise UnreadableImage(f"{path}: cannot be read ({e}).") from None
  if magic != NPY_MAGIC:  # Checked first, so a non-.npy file is never unpickled.
    raise UnreadableImage(f"{path}: is not a .npy file (no NumPy magic string); expected a "
                          "file written by np.save.")
  try:
    array = np.load(path, allow_pickle=allow_pickle)
  except ValueError as e:
    if "allow_pickle" in str(e):
      raise UnreadableImage(f"{path}: is a pickled .npy file; pickles can run code, so they "
                            "are read only with config.allow_pickle=True (for files you "
                            "trust).") from None
    raise UnreadableImage(f"{path}: cannot be read as .npy ({e}).") from None
  except Exception as e:  # pylint: disable=broad-except  (truncated, not .npy, EOF...)
    raise UnreadableImage(f"{path}: cannot be read as .npy ({type(e).__name__}: {e}).") from None
  if array.dtype == object:
    # DeepLense axion files: [image, axion_mass].
    if array.shape == (2,) and np.asarray(array[0]).ndim >= 2:
      array = np.asarray(array[0])
    else:
      raise UnreadableImage(f"{path}: holds an object array of shape {array.shape}, not an "
                            "image.")
  return array


def astropy_modules():
  """astropy, imported at the first FITS file: importing it costs every run ~1 s."""
  import astropy.io.fits  # pylint: disable=g-import-not-at-top
  import astropy.wcs.utils  # pylint: disable=g-import-not-at-top
  return astropy


def wcs_pixel_scale(header) -> Optional[float]:
  """Arcsec/pixel from a FITS header's celestial WCS (CD or CDELT/PC; the geometric mean
  of the two axes), or None if it has none."""
  astropy = astropy_modules()
  try:
    celestial = astropy.wcs.WCS(header, naxis=2).celestial
    if not celestial.has_celestial:
      return None
    scales = astropy.wcs.utils.proj_plane_pixel_scales(celestial)  # degrees
  except Exception:  # pylint: disable=broad-except  (malformed WCS: treat as absent)
    return None
  scale = float(np.sqrt(abs(scales[0] * scales[1]))) * 3600.0
  return scale if np.isfinite(scale) and scale > 0 else None


def _read_fits(path: str, hdu: Optional[int]) -> tuple[np.ndarray, Optional[float]]:
  try:
    with astropy_modules().io.fits.open(path, memmap=False) as hdus:
      if hdu is not None:
        if hdu >= len(hdus):
          raise UnreadableImage(f"{path}: has {len(hdus)} HDUs; config.hdu={hdu} does not "
                                "exist.")
        chosen = hdus[hdu]
      else:
        chosen = next((h for h in hdus if h.data is not None and
                       getattr(h.data, "ndim", 0) >= 2), None)
      if chosen is None or chosen.data is None:
        raise UnreadableImage(f"{path}: has no image HDU (no array of 2 or more dimensions).")
      # astype also makes big-endian data native.
      return np.asarray(chosen.data).astype(np.float32), wcs_pixel_scale(chosen.header)
  except UnreadableImage:
    raise
  except Exception as e:  # pylint: disable=broad-except  (astropy raises many types)
    raise UnreadableImage(f"{path}: cannot be read as FITS ({type(e).__name__}: {e}).") from None


def to_hwc(array: np.ndarray, path: str, size: Optional[int], channels: int,
           allow_nonfinite: bool = False) -> np.ndarray:
  """(H, W), (H, W, C) or (C, H, W) -> float32 (H, W, C), checked against the model."""
  array = np.asarray(array)
  if not (np.issubdtype(array.dtype, np.floating) or np.issubdtype(array.dtype, np.integer)):
    raise UnreadableImage(f"{path}: has dtype {array.dtype}; expected real numbers.")
  array = np.squeeze(array) if array.ndim > 3 else array
  if array.ndim == 2 and channels == 1:
    image = array[..., None]
  elif array.ndim == 3 and array.shape[-1] == channels:
    image = array
  elif array.ndim == 3 and array.shape[0] == channels:
    image = np.moveaxis(array, 0, -1)
  else:
    image = None
  side = "H, W" if size is None else f"{size}, {size}"
  expected = " or ".join(([f"({side})"] if channels == 1 else []) +
                         [f"({side}, {channels})", f"({channels}, {side})"])
  if image is None or (size is not None and image.shape[:2] != (size, size)):
    raise UnreadableImage(f"{path}: has shape {array.shape}; expected {expected}.")
  image = image.astype(np.float32)
  if not allow_nonfinite and not np.all(np.isfinite(image)):
    raise UnreadableImage(f"{path}: has {int((~np.isfinite(image)).sum())} NaN or infinite "
                          "pixels.")
  return image


def read_image_and_scale(path: str, *, size: Optional[int] = None, channels: int = 1,
                         allow_pickle: bool = False, hdu: Optional[int] = None,
                         allow_nonfinite: bool = False
                         ) -> tuple[np.ndarray, Optional[float]]:
  """(float32 [H, W, C], arcsec/pixel from the FITS WCS or None)."""
  if not os.path.isfile(path):
    raise UnreadableImage(f"{path}: does not exist.")
  scale = None
  if path.lower().endswith(".npy"):
    array = _read_npy(path, allow_pickle)
  elif is_image_file(path):
    array, scale = _read_fits(path, hdu)
  else:
    raise UnreadableImage(f"{path}: unknown file type; expected one of {EXTENSIONS}.")
  return to_hwc(array, path, size, channels, allow_nonfinite), scale


def read_image(path: str, *, size: Optional[int], channels: int = 1,
               allow_pickle: bool = False, hdu: Optional[int] = None,
               allow_nonfinite: bool = False) -> np.ndarray:
  return read_image_and_scale(path, size=size, channels=channels, allow_pickle=allow_pickle,
                              hdu=hdu, allow_nonfinite=allow_nonfinite)[0]


def suspicious(image: np.ndarray) -> str:
  """What makes `image` a doubtful input to a model ('' if nothing): no answer about a
  blank or broken image deserves confidence."""
  bad = int((~np.isfinite(image)).sum())
  if bad:
    return f"{bad} non-finite pixel(s) (set to 0 for the model)"
  if not np.any(image):
    return "all-zero image"
  if np.ptp(image) <= 1e-6 * max(float(np.abs(image).max()), 1e-30):
    return f"constant image (every pixel {float(image.flat[0]):.4g})"
  return ""


def image_name(path: str) -> str:
  """File name without its image extension (for per-image output files)."""
  base = os.path.basename(path)
  for ext in sorted(EXTENSIONS, key=len, reverse=True):
    if base.lower().endswith(ext):
      return base[:-len(ext)]
  return base


# -- any layout, any band count: the `files` dataset builder's readers --------------------
# These return the file's array as stored (2-D, (H, W, C) or (C, H, W)) without checking it
# against a model; `to_bands` lays it out. `read_image` above keeps its own rules.

PICTURE_EXTENSIONS = (".png", ".jpg", ".jpeg")
FITS_EXTENSIONS = (".fits", ".fit", ".fts", ".fits.gz", ".fit.gz", ".fz", ".fits.fz")
ANY_EXTENSIONS = (".npy",) + FITS_EXTENSIONS + PICTURE_EXTENSIONS
# An axis this short (or shorter) beside two longer ones is the band axis.
MAX_BANDS = 16


def is_any_image_file(path: str) -> bool:
  return path.lower().endswith(ANY_EXTENSIONS)


def parse_hdu(spec) -> Optional[object]:
  """config.data.hdu: None/'' (the first image HDU), an index or EXTNAME (that HDU),
  a comma-separated list of them (one band per HDU) or 'all' (every image HDU, one band
  each). -> None, int, str or a tuple of them, or 'all'."""
  if spec is None or spec == "":
    return None
  if isinstance(spec, int):
    return spec
  parts = [p.strip() for p in str(spec).split(",") if p.strip()]
  if parts == ["all"]:
    return "all"
  parsed = tuple(int(p) if p.lstrip("-").isdigit() else p for p in parts)
  return parsed[0] if len(parsed) == 1 else parsed


def _hdu_by_spec(hdus, spec, path: str):
  try:
    return hdus[spec]
  except (KeyError, IndexError):
    names = [h.name for h in hdus]
    raise UnreadableImage(f"{path}: has no HDU {spec!r} (config.data.hdu); it has "
                          f"{len(hdus)}: {names}.") from None


def _image_hdus(hdus, spec, path: str) -> list:
  """The HDUs `spec` (see parse_hdu) picks, each holding an array of >= 2 dimensions."""
  if spec is None:
    chosen = [h for h in hdus if getattr(h, "shape", None) and len(h.shape) >= 2][:1]
  elif spec == "all":
    chosen = [h for h in hdus if getattr(h, "shape", None) and len(h.shape) >= 2]
  else:
    chosen = [_hdu_by_spec(hdus, s, path)
              for s in (spec if isinstance(spec, tuple) else (spec,))]
  if not chosen:
    raise UnreadableImage(f"{path}: has no image HDU (no array of 2 or more dimensions).")
  for h in chosen:
    if not getattr(h, "shape", None) or len(h.shape) < 2:
      raise UnreadableImage(f"{path}: HDU {h.name!r} holds no image (config.data.hdu).")
  return chosen


def _fits_bands(path: str, spec, read: bool):
  """(array or shape, pixel scale or None): one HDU as stored, or several stacked as
  (C, H, W) (they must have one 2-D shape)."""
  try:
    with astropy_modules().io.fits.open(path, memmap=False, lazy_load_hdus=True) as hdus:
      chosen = _image_hdus(hdus, spec, path)
      shapes = [tuple(h.shape) for h in chosen]
      if len(chosen) > 1 and (len(set(shapes)) > 1 or len(shapes[0]) != 2):
        raise UnreadableImage(f"{path}: its bands (HDUs {[h.name for h in chosen]}) have "
                              f"shapes {shapes}; expected one 2-D shape for every band.")
      scale = wcs_pixel_scale(chosen[0].header)
      if not read:
        return ((len(chosen),) + shapes[0] if len(chosen) > 1 else shapes[0]), scale
      arrays = [np.asarray(h.data).astype(np.float32) for h in chosen]
      return (np.stack(arrays) if len(arrays) > 1 else arrays[0]), scale
  except UnreadableImage:
    raise
  except Exception as e:  # pylint: disable=broad-except  (astropy raises many types)
    raise UnreadableImage(f"{path}: cannot be read as FITS ({type(e).__name__}: {e}).") from None


def _picture(path: str, read: bool):
  """A PNG/JPEG: (H, W) for one grey band, else (H, W, 3) RGB (alpha dropped)."""
  try:
    with Image.open(path) as picture:
      grey = picture.mode in ("L", "I", "I;16", "F", "1")
      if not read:
        w, h = picture.size
        return (h, w) if grey else (h, w, 3)
      picture = picture if grey else picture.convert("RGB")
      return np.asarray(picture, dtype=np.float32)
  except Exception as e:  # pylint: disable=broad-except  (PIL raises many types)
    raise UnreadableImage(f"{path}: cannot be read as a PNG/JPEG picture "
                          f"({type(e).__name__}: {e}).") from None


def read_any(path: str, *, hdu=None, read: bool = True) -> tuple[object, Optional[float]]:
  """(array as stored, or only its shape when not `read`; arcsec/pixel from a FITS WCS or
  None) for .npy (never unpickled), FITS (`hdu`, see parse_hdu) and PNG/JPEG files."""
  if not os.path.isfile(path):
    raise errors.MissingFileError(f"{path}: does not exist.")
  lower = path.lower()
  if lower.endswith(".npy"):
    if not read:
      _read_npy_header(path)
      try:  # The header only: mmap reads no pixels (and refuses pickles).
        return np.load(path, mmap_mode="r", allow_pickle=False).shape, None
      except Exception as e:  # pylint: disable=broad-except  (truncated, pickled...)
        raise UnreadableImage(f"{path}: cannot be read as .npy without unpickling "
                              f"({type(e).__name__}: {e}).") from None
    return _read_npy(path, allow_pickle=False), None
  if lower.endswith(FITS_EXTENSIONS):
    return _fits_bands(path, parse_hdu(hdu), read)
  if lower.endswith(PICTURE_EXTENSIONS):
    return _picture(path, read), None
  raise UnreadableImage(f"{path}: unknown file type; expected one of {ANY_EXTENSIONS}.")


def _read_npy_header(path: str) -> None:
  """Checks the magic string (so a non-.npy file is never handed to np.load)."""
  try:
    with open(path, "rb") as f:
      magic = f.read(len(NPY_MAGIC))
  except OSError as e:
    raise UnreadableImage(f"{path}: cannot be read ({e}).") from None
  if magic != NPY_MAGIC:
    raise UnreadableImage(f"{path}: is not a .npy file (no NumPy magic string); expected a "
                          "file written by np.save.")


def hwc_shape(shape, path: str, channels: Optional[int] = None) -> tuple[int, int, int]:
  """(H, W, C) of an array stored as (H, W), (H, W, C) or (C, H, W); with `channels`
  None the band axis is the short one (at most MAX_BANDS) beside two longer ones."""
  shape = tuple(int(s) for s in shape)
  if len(shape) > 3:
    shape = tuple(s for s in shape if s != 1) or (1, 1)
  if len(shape) == 2 and channels in (None, 1):
    return shape + (1,)
  if len(shape) == 3:
    first, last = shape[0], shape[-1]
    if channels is not None:
      if last == channels:
        return shape
      if first == channels:
        return shape[1:] + (first,)
    elif last <= MAX_BANDS and last < min(shape[:2]):
      return shape
    elif first <= MAX_BANDS and first < min(shape[1:]):
      return shape[1:] + (first,)
  want = "any number of" if channels is None else str(channels)
  raise UnreadableImage(f"{path}: has shape {shape}; expected (H, W), (H, W, C) or "
                        f"(C, H, W) with {want} bands C.")


def to_bands(array, path: str, channels: Optional[int] = None) -> np.ndarray:
  """float32 (H, W, C) from an array stored as (H, W), (H, W, C) or (C, H, W)."""
  array = np.asarray(array)
  if not (np.issubdtype(array.dtype, np.floating) or np.issubdtype(array.dtype, np.integer)):
    raise UnreadableImage(f"{path}: has dtype {array.dtype}; expected real numbers.")
  h, w, c = hwc_shape(array.shape, path, channels)
  array = array.reshape([s for s in array.shape if s != 1] or [1]) if array.ndim > 3 else array
  if array.ndim == 2:
    array = array[..., None]
  elif array.shape != (h, w, c):
    array = np.moveaxis(array, 0, -1)
  return array.astype(np.float32)
