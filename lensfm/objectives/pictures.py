"""Pictures written during training and evaluation (PNG, via matplotlib's Agg backend).

`save_image_rows` draws named rows of images; `scale_from` gives every image one colour
scale across its panels (the range of that row's version of it, so a masked input and a
reconstruction read on the input's scale), and `masks` marks hidden pixels with a
hatched grey fill, a colour the magma scale never shows.
"""
import os

import matplotlib

matplotlib.use("Agg")  # No display on clusters; must precede pyplot.
import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
import numpy as np


MASK_FILL = 0.75    # Light grey: magma runs from black through red to pale yellow.
MASK_HATCH = "0.3"  # Dark grey hatching on it.


def _bands(image: np.ndarray) -> np.ndarray:
  """[H, W, C] -> [H, W, 1 or 3]: one band is shown as a colour scale, three as RGB."""
  image = np.asarray(image, np.float32)
  return image if image.shape[-1] in (1, 3) else image[..., :1]


def _range(image: np.ndarray) -> tuple[float, float]:
  finite = image[np.isfinite(image)]
  return (float(finite.min()), float(finite.max())) if finite.size else (0., 1.)


def display_panels(rows: dict[str, np.ndarray], masks=None, scale_from=None):
  """{row: [N arrays]} as drawn: values in [0, 1] ([H, W] for one band, [H, W, 3] for
  three); hidden pixels (`masks[row][i]` True) NaN, or the grey fill for RGB.

  Image i of every row is scaled by one range: that of rows[scale_from][i] (values
  outside it clip), or its own when scale_from is None.
  """
  masks = masks or {}
  panels = {}
  for name, images in rows.items():
    panels[name] = []
    for i, image in enumerate(images):
      image = _bands(image)
      lo, hi = _range(_bands(rows[scale_from][i]) if scale_from else image)
      shown = np.clip((image - lo) / (hi - lo), 0., 1.) if hi > lo else np.zeros_like(image)
      if name in masks:
        hidden = np.asarray(masks[name][i], bool).reshape(image.shape[:2])
        shown = np.where(hidden[..., None], np.nan if shown.shape[-1] == 1 else MASK_FILL,
                         shown)
      panels[name].append(shown[..., 0] if shown.shape[-1] == 1 else shown)
  return panels


def save_figure(fig, path: str) -> None:
  """Saves atomically: a crash mid-write never leaves a half PNG under `path`."""
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  tmp = f"{path}.tmp.png"
  fig.savefig(tmp, dpi=100, bbox_inches="tight")
  plt.close(fig)
  os.replace(tmp, path)


def image_rows_figure(rows: dict[str, np.ndarray], masks=None, scale_from=None):
  """The figure `save_image_rows` saves (see `display_panels` for masks and scale_from)."""
  panels = display_panels(rows, masks, scale_from)
  names = list(rows)
  n = len(rows[names[0]])
  cmap = plt.get_cmap("magma").with_extremes(bad=str(MASK_FILL))
  fig, axes = plt.subplots(len(names), n, figsize=(2 * n, 2 * len(names)), squeeze=False)
  for r, name in enumerate(names):
    for c in range(n):
      ax = axes[r, c]
      ax.imshow(panels[name][c], cmap=cmap, vmin=0., vmax=1., interpolation="nearest")
      if name in (masks or {}):
        hidden = np.asarray(masks[name][c], float).reshape(panels[name][c].shape[:2])
        if hidden.any():
          hatch = ax.contourf(hidden, levels=[0.5, 1.5], colors="none", hatches=["////"])
          hatch.set_edgecolor(MASK_HATCH)
          hatch.set_linewidth(0.)
      ax.set_xticks([]), ax.set_yticks([])
      if c == 0:
        ax.set_ylabel(name)
  return fig


def save_image_rows(rows: dict[str, np.ndarray], path: str, *, masks=None,
                    scale_from=None) -> None:
  """One row per entry of `rows` ([N, H, W, C] arrays), one column per image.

  masks: {row: [N, H, W] bool}, pixels drawn as hidden (hatched grey).
  scale_from: a row whose image i sets the colour scale of image i in every row.
  """
  save_figure(image_rows_figure(rows, masks, scale_from), path)
