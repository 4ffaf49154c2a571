"""A realistic-sky scene rendered end to end against lenstronomy's ImageModel: EPL +
multipoles + shear + TNFW subhalos, two-component lens light, clumpy source and
neighbours, supersampled pixels, each band's Moffat kernel as a 'PIXEL' PSF."""
import jax
import numpy as np
import pytest

from lensfm.sim import lenstronomy_reference as ref
from lensfm.sim import realistic
from lensfm.sim import surveys

FAST_COMPILE = {'xla_backend_optimization_level': 0}
# max |ours - lenstronomy| / max |lenstronomy| in float32 (measured 1e-7 - 1.3e-6).
TOL = 1e-5


def _lens_kwargs(p):
  lens = p['epl']
  center = {'center_x': float(lens['center_x']), 'center_y': float(lens['center_y'])}
  models = ['EPL', 'MULTIPOLE', 'MULTIPOLE', 'SHEAR']
  kwargs = [{'theta_E': float(lens['theta_e']), 'gamma': float(lens['gamma']),
             'e1': float(lens['e1']), 'e2': float(lens['e2']), **center},
            {'m': 3, 'a_m': float(p['multipoles']['a_3']),
             'phi_m': float(p['multipoles']['phi_3']), **center},
            {'m': 4, 'a_m': float(p['multipoles']['a_4']),
             'phi_m': float(p['multipoles']['phi_4']), **center},
            {'gamma1': float(p['shear']['gamma1']), 'gamma2': float(p['shear']['gamma2'])}]
  subs = p['subhalos']
  for i in np.flatnonzero(subs['alpha_Rs']):
    models.append('TNFW')
    kwargs.append({k: float(subs[k][i]) for k in ('Rs', 'alpha_Rs', 'r_trunc', 'center_x',
                                                  'center_y')})
  return models, kwargs


def _scene_and_image(recipe):
  """Jitted (key, label) -> (scene, noise-free image)."""
  def scene_and_image(key, label):
    params = recipe.scene(key, label)[0]
    return params, recipe.render(params)
  return jax.jit(scene_and_image, compiler_options=FAST_COMPILE)


@pytest.mark.filterwarnings('ignore::DeprecationWarning')   # lenstronomy's numpy 2 FFT call
def test_realistic_cdm_scene_matches_lenstronomy_image_model(label=1):
  image_model = pytest.importorskip('lenstronomy.ImSim.image_model')
  lens_model = pytest.importorskip('lenstronomy.LensModel.lens_model')
  light_model = pytest.importorskip('lenstronomy.LightModel.light_model')
  psf_lib = pytest.importorskip('lenstronomy.Data.psf')
  recipe = realistic.get('realistic_lsst', num_pix=24, supersampling=2, max_subhalos=8,
                         sigma_sub=0.05)
  params, ours = jax.tree.map(np.asarray, _scene_and_image(recipe)(jax.random.key(11), label))
  models, kwargs_lens = _lens_kwargs(params)
  assert len(models) > 4            # subhalos present
  data = ref.image_data(recipe.num_pix, recipe.pixel_scale)
  numerics = {'supersampling_factor': 2, 'supersampling_convolution': False}
  for c, band in enumerate(recipe.bands):
    kernel = np.asarray(surveys.psf_kernel(band, recipe.kernel_radius, params['psf_fwhm'][c]),
                        np.float64)
    src_list, kwargs_src = ref.light_kwargs(params['source'], c)
    ll_list, kwargs_ll = ref.light_kwargs(params['lens_light'], c)
    nb_list, kwargs_nb = ref.light_kwargs(params['neighbours'], c)
    model = image_model.ImageModel(
        data, psf_lib.PSF(psf_type='PIXEL', kernel_point_source=kernel / kernel.sum()),
        lens_model_class=lens_model.LensModel(models),
        source_model_class=light_model.LightModel(src_list),
        lens_light_model_class=light_model.LightModel(ll_list + nb_list),
        kwargs_numerics=numerics)
    theirs = model.image(kwargs_lens, kwargs_src, kwargs_lens_light=kwargs_ll + kwargs_nb)
    err = np.abs(ours[..., c] - theirs).max() / np.abs(theirs).max()
    assert err < TOL, (band.name, err)
