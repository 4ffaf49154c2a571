"""The same scenes rendered by lenstronomy, for tests (tests/test_sim_render.py), reference
files (experiments/tools/make_sim_reference.py) and benchmarks (experiments/benchmarks/).

It needs lenstronomy, a test-only dependency (`pip install -e '.[test]'`): nothing lensfm
runs imports this module. Parameters are one image's scene dict (see lensfm.sim.render),
as numpy or jax arrays.
"""
from astropy.cosmology import FlatLambdaCDM
from lenstronomy.Data.imaging_data import ImageData
from lenstronomy.Data.psf import PSF
from lenstronomy.ImSim.image_model import ImageModel
from lenstronomy.LensModel.lens_model import LensModel
from lenstronomy.LightModel import light_model
from lenstronomy.SimulationAPI.sim_api import SimAPI
from lenstronomy.Util import util
import numpy as np

from lensfm.sim import instrument as instrument_lib
from lensfm.sim import render as render_lib


def flatten_params(params, prefix=''):
  """Nested dict -> {'a/b': np.ndarray}, for npz files."""
  flat = {}
  for key, value in params.items():
    name = f'{prefix}{key}'
    if isinstance(value, dict):
      flat.update(flatten_params(value, name + '/'))
    else:
      flat[name] = np.asarray(value)
  return flat


def unflatten_params(flat):
  """Inverse of `flatten_params`."""
  params = {}
  for name, value in flat.items():
    node = params
    *parents, leaf = name.split('/')
    for parent in parents:
      node = node.setdefault(parent, {})
    node[leaf] = np.asarray(value)
  return params


def lens_kwargs(params, include_scale=True):
  """(lens_model_list, kwargs_lens) of the scene; the deflection scale folded into the
  parameters (each deflection is linear in theta_E, gamma, theta_E^2, alpha_Rs)."""
  p = {k: (np.asarray(v, np.float64) if not isinstance(v, dict) else
           {kk: np.asarray(vv, np.float64) for kk, vv in v.items()}) for k, v in params.items()}
  s = float(p.get('deflection_scale', 1.0)) if include_scale else 1.0
  lens = p['lens']
  models = ['SIE', 'SHEAR']
  kwargs = [{'theta_E': float(lens['theta_e']) * s, 'e1': float(lens['e1']),
             'e2': float(lens['e2']), 'center_x': float(lens['center_x']),
             'center_y': float(lens['center_y'])},
            {'gamma1': float(p['shear']['gamma1']) * s, 'gamma2': float(p['shear']['gamma2']) * s}]
  pm = p.get('point_masses', {'theta_e': [], 'center_x': [], 'center_y': []})
  for theta, cx, cy in zip(pm['theta_e'], pm['center_x'], pm['center_y']):
    if theta > 0:
      models.append('POINT_MASS')
      kwargs.append({'theta_E': float(theta) * np.sqrt(s), 'center_x': float(cx),
                     'center_y': float(cy)})
  if 'vortex' in p and float(p['vortex']['theta_e_total']) > 0:
    # The published vortex: N POINT_MASS profiles on np.linspace(-L, L, N), as make_vortex.
    v = p['vortex']
    n = render_lib.VORTEX_POINTS
    along = np.linspace(-float(v['half_length']), float(v['half_length']), n)
    theta = float(v['theta_e_total']) / np.sqrt(n) * np.sqrt(s)
    for t in along:
      models.append('POINT_MASS')
      kwargs.append({'theta_E': theta,
                     'center_x': float(v['center_x']) + t * np.cos(float(v['angle'])),
                     'center_y': float(v['center_y']) + t * np.sin(float(v['angle']))})
  if 'tnfw' in p:
    t = p['tnfw']
    for rs, a, rt, cx, cy in zip(t['Rs'], t['alpha_Rs'], t['r_trunc'], t['center_x'],
                                 t['center_y']):
      if a > 0:
        models.append('TNFW')
        kwargs.append({'Rs': float(rs), 'alpha_Rs': float(a) * s, 'r_trunc': float(rt),
                       'center_x': float(cx), 'center_y': float(cy)})
  if 'line_mass' in p and float(p['line_mass']['theta_e_total']) > 0:
    raise NotImplementedError('lenstronomy has no uniform line mass profile.')
  return models, kwargs


def light_kwargs(light_params, band):
  """(['SERSIC_ELLIPSE'] * K, kwargs) of one band of a Sersic light dict."""
  amps = np.asarray(light_params['amp'], np.float64)[band]
  kwargs = []
  for k, amp in enumerate(amps):
    kwargs.append({'amp': float(amp),
                   **{key: float(np.asarray(light_params[key], np.float64)[k])
                      for key in ('R_sersic', 'n_sersic', 'e1', 'e2', 'center_x', 'center_y')}})
  return ['SERSIC_ELLIPSE'] * len(kwargs), kwargs


def image_data(num_pix, pixel_scale):
  """lenstronomy ImageData on the centred grid the DeepLense scripts used."""
  _, _, ra0, dec0, _, _, pix2coord, _ = util.make_grid_with_coordtransform(
      num_pix, pixel_scale, center_ra=0, center_dec=0, subgrid_res=1,
      inverse=False)
  return ImageData(background_rms=1.0, exposure_time=1.0, ra_at_xy_0=ra0, dec_at_xy_0=dec0,
                   transform_pix2angle=pix2coord, image_data=np.zeros((num_pix, num_pix)))


def render(params, inst: instrument_lib.Instrument):
  """Noise-free [H, W, C] image of the scene by lenstronomy's ImageModel (single plane)."""

  models, kwargs_lens = lens_kwargs(params)
  lens_model = LensModel(models)
  data = image_data(inst.num_pix, inst.pixel_scale)
  numerics = {'supersampling_factor': inst.supersampling, 'supersampling_convolution': False}
  sigmas = np.asarray(params['psf_sigma'], np.float64)
  bands = []
  for band, sigma in enumerate(sigmas):
    src_list, kwargs_src = light_kwargs(params['source'], band)
    ll_list, kwargs_ll = (light_kwargs(params['lens_light'], band) if 'lens_light' in params
                          else ([], None))
    psf = PSF(psf_type='GAUSSIAN', fwhm=float(sigma) / instrument_lib.FWHM_TO_SIGMA,
              pixel_size=inst.pixel_scale, truncation=inst.psf_truncation)
    model = ImageModel(data, psf, lens_model_class=lens_model,
                       source_model_class=light_model.LightModel(src_list),
                       lens_light_model_class=light_model.LightModel(ll_list) if ll_list else None,
                       kwargs_numerics=numerics)
    bands.append(model.image(kwargs_lens, kwargs_src, kwargs_lens_light=kwargs_ll))
  return np.stack(bands, -1)


def deeplense_simapi_render(params, band_kwargs, source_magnitude=20.0):
  """A Model II/III scene rendered the way DeepLense's `simple_sim_2` did.

  lenstronomy SimAPI with lens_redshift_list (multi-plane mode), z_source_convention 2.5,
  source at z = 1, pyHalo's WMAP9 astropy cosmology, source brightness by magnitude.
  The un-rescaled theta_E's of `params` are used (deflection_scale is NOT folded in:
  SimAPI's multi-plane ray tracing must produce it). Returns [H, W, 1].
  """

  models, kwargs_lens = lens_kwargs(params, include_scale=False)
  cosmo = FlatLambdaCDM(H0=69.7, Om0=0.0464 + 0.235, Ob0=0.0464)
  kwargs_model = {'lens_model_list': models, 'lens_redshift_list': [0.5] * len(models),
                  'source_light_model_list': ['SERSIC_ELLIPSE'], 'source_redshift_list': [1.0],
                  'cosmo': cosmo, 'z_source_convention': 2.5, 'z_source': 1.0}
  num_pix = band_kwargs.pop('num_pix')
  sim = SimAPI(num_pix=num_pix, kwargs_single_band=band_kwargs, kwargs_model=kwargs_model)
  image_model = sim.image_model_class({'point_source_supersampling_factor': 1})
  _, src = light_kwargs(params['source'], 0)
  src_mag = [dict(src[0], magnitude=source_magnitude)]
  del src_mag[0]['amp']
  _, kwargs_source, _ = sim.magnitude2amplitude(None, src_mag)
  return image_model.image(kwargs_lens, kwargs_source, None)[..., None]


def simapi_band_kwargs(inst: instrument_lib.Instrument):
  """lenstronomy kwargs_single_band of an instrument preset (Gaussian PSF)."""
  return {'num_pix': inst.num_pix, 'read_noise': inst.read_noise,
          'pixel_scale': inst.pixel_scale, 'ccd_gain': inst.ccd_gain,
          'exposure_time': inst.exposure_time, 'sky_brightness': inst.sky_brightness,
          'magnitude_zero_point': inst.zero_point, 'num_exposures': inst.num_exposures,
          'seeing': inst.psf_fwhm, 'psf_type': 'GAUSSIAN', 'truncation': inst.psf_truncation}
