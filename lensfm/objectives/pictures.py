"""Pictures written during training and evaluation (PNG, via matplotlib's Agg backend)."""
import os

import matplotlib

matplotlib.use("Agg")  # No display on clusters; must precede pyplot.
import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
import numpy as np


def _display(image: np.ndarray) -> np.ndarray:
  """[H, W, C] -> something imshow shows: one band as grey, three as RGB, min-max scaled."""
  image = np.asarray(image, np.float32)
  if image.shape[-1] not in (1, 3):
    image = image[..., :1]
  lo, hi = np.nanmin(image), np.nanmax(image)
  image = (image - lo) / (hi - lo) if hi > lo else np.zeros_like(image)
  return image[..., 0] if image.shape[-1] == 1 else image


def save_figure(fig, path: str) -> None:
  """Saves atomically: a crash mid-write never leaves a half PNG under `path`."""
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  tmp = f"{path}.tmp.png"
  fig.savefig(tmp, dpi=100, bbox_inches="tight")
  plt.close(fig)
  os.replace(tmp, path)


def save_image_rows(rows: dict[str, np.ndarray], path: str) -> None:
  """One row per entry of `rows` ([N, H, W, C] arrays), one column per image."""
  names = list(rows)
  n = len(rows[names[0]])
  fig, axes = plt.subplots(len(names), n, figsize=(2 * n, 2 * len(names)), squeeze=False)
  for r, name in enumerate(names):
    for c in range(n):
      ax = axes[r, c]
      ax.imshow(_display(rows[name][c]), cmap="magma", interpolation="nearest")
      ax.set_xticks([]), ax.set_yticks([])
      if c == 0:
        ax.set_ylabel(name)
  save_figure(fig, path)
