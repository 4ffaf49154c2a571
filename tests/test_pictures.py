"""The pictures a user reads: MAE's hidden patches unmistakable (hatched grey, masked in
the data drawn), and one colour scale per lens across its panels."""
import os

import jax
import jax.numpy as jnp
import numpy as np

from lensfm import config_args
from lensfm import objectives
from lensfm.objectives import pictures
from lensfm.train import precision

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def lenses(n=2, size=8):
  return np.random.default_rng(0).random((n, size, size, 1)).astype(np.float32) * 10. + 5.


def test_hidden_pixels_are_masked_and_every_lens_keeps_its_input_scale():
  images = lenses()
  hidden = np.zeros((2, 8, 8), bool)
  hidden[:, :4, :4] = True
  visible = np.where(hidden[..., None], 0., images)
  brighter = images * 2.  # A reconstruction twice too bright must look brighter.
  panels = pictures.display_panels(
      {"input": images, "visible": visible, "recon": images, "bright": brighter},
      masks={"visible": hidden}, scale_from="input")
  for i in range(2):
    assert np.isnan(panels["visible"][i][:4, :4]).all()
    np.testing.assert_allclose(panels["visible"][i][~hidden[i]], panels["input"][i][~hidden[i]])
    np.testing.assert_allclose(panels["recon"][i], panels["input"][i])
    assert panels["bright"][i].mean() > panels["input"][i].mean() + 0.3
  # Without a shared scale each panel is stretched to its own range (the old picture).
  own = pictures.display_panels({"input": images, "bright": brighter})
  np.testing.assert_allclose(own["bright"][0], own["input"][0], atol=1e-6)


def test_masked_panels_are_drawn_hatched_on_grey():
  images = lenses()
  hidden = np.zeros((2, 8, 8), bool)
  hidden[:, 4:, 2:6] = True
  fig = pictures.image_rows_figure({"input": images, "visible (masked)": images},
                                   masks={"visible (masked)": hidden}, scale_from="input")
  input_ax, masked_ax = fig.axes[0], fig.axes[2]  # Row-major: row 1 starts at index 2.
  assert not input_ax.collections
  assert [list(c.hatches) for c in masked_ax.collections] == [["////"]]
  image = masked_ax.images[0]
  assert image.get_clim() == (0., 1.)
  grey = pictures.MASK_FILL
  np.testing.assert_allclose(image.cmap.get_bad()[:3], (grey, grey, grey))
  pictures.plt.close(fig)


def test_mae_reconstruction_reports_its_hidden_pixels():
  c = config_args.load(os.path.join(ROOT, "configs", "mae_vit_b.py:runlocal"))
  c.data.image_size = 32
  objective = objectives.get_objective(c, precision.get_model(c.model))
  images = jnp.asarray(lenses(2, 32))
  params, _ = objective.init(jax.random.key(0), {"image": images})
  visible, recon, hidden = jax.device_get(
      jax.jit(objective.reconstruct)(params, images, jax.random.key(1)))
  assert hidden.shape == (2, 32, 32) and hidden.mean() == 0.75  # mask_ratio, 4x4 patches of 8px.
  assert np.all(visible[hidden] == 0.)
  np.testing.assert_allclose(recon[~hidden], np.asarray(images)[~hidden])
