"""Same lens, two surveys: realistic-sky observation pairs for pretraining.

    from lensfm.sim import realistic_pairs
    sim = realistic_pairs.RealisticPairs(field_of_view=4.848)
    out = sim.sample(key, batch_size, 2, image_size=48, to_grid=to_grid)
    # to_grid(native [N, N, 1], native_pixel_scale) -> [48, 48, 1]: the caller's mapping
    # onto its model grid (lensfm.data.sim_mixture maps and normalises)

For every example ONE lens system is drawn as `realistic.Realistic` draws it (lens and
source redshifts, velocity dispersion, EPL + multipoles + shear, and for its class CDM
subhalos (truncated NFWs), the axion vortex (a uniform line mass) or nothing), then each
view draws its own
  lens light   (two-component Sersic, aligned with the mass within scatter; the survey's
               band and colours),
  source       (star-forming Sersic + clumps, its own magnitude, size, shape and position
               behind the lens; the source redshift is the system's, which fixes theta_E),
  neighbours   (0-2 field galaxies), seeing,
  instrument   a survey view (`VIEWS`: Euclid VIS, HST ACS F814W, JWST NIRCam F150W,
               LSST i, HSC i; one band per view, the i band for the multi-band ground
               surveys: their best-seeing deep band and the usual lens-search band),
  orientation  the whole sky rotated by U(0, 2 pi) (`rotate`),
  noise        the survey's (lenstronomy noise_for_model).
So the two views share exactly the mass and substructure and differ in everything else.

Surveys have different detectors (pixel scale, size): shapes must be static, so which
survey observes which view is fixed by the example's position in the batch: example i
of n gets the ordered survey pair PAIRS[i % len(PAIRS)] (every ordered pair of different
surveys in turn; views=1: VIEWS[i % len]). Examples are independent draws, so this only
fixes the batch's survey mix, not any lens property. Each survey renders its views in one
vmapped call; native images are mapped onto the caller's model grid by its `to_grid`.

Latents: `same_lens.LATENTS` (the same vector and standardisation as the sim_mixture
families): the mass entries from the system, the source entries per view.
"""
import dataclasses
import itertools
import math

import jax
import jax.numpy as jnp
import numpy as np

from lensfm.sim import galaxies
from lensfm.sim import populations
from lensfm.sim import priors
from lensfm.sim import realistic
from lensfm.sim import recipes
from lensfm.sim import render
from lensfm.sim import same_lens

CLASSES = recipes.DEEPLENSE_CLASSES
# (survey, band, supersampling): supersampling 2 for pixels coarser than the PSF's core.
VIEWS = (('euclid', 'euclid_vis', 2), ('hst', 'hst_acs_f814w', 1),
         ('jwst', 'jwst_nircam_f150w', 1), ('lsst', 'lsst_i', 2), ('hsc', 'hsc_i', 2))
MARGIN_PIXELS = 2
MASS_UNIFORMS = 8 * (160 + 80) + 64
VIEW_UNIFORMS = 96


REALISTIC_PARTS = ('epl', 'subhalos', 'los', 'line_mass', 'lens_light', 'source', 'neighbours')


def rotate(params, angle):
  """A realistic scene rigidly rotated counter-clockwise by `angle` about the optical axis
  (`render.rotate_scene` over its components), multipole angles turning with it."""
  out = render.rotate_scene(params, angle, REALISTIC_PARTS)
  if 'multipoles' in params:
    out['multipoles'] = dict(params['multipoles'], phi_3=params['multipoles']['phi_3'] + angle,
                             phi_4=params['multipoles']['phi_4'] + angle)
  return out


@dataclasses.dataclass(frozen=True)
class RealisticPairs:
  """Realistic-sky same-lens views; hashable (a static jit argument).

  field_of_view: side (arcsec) of the caller's model grid; each survey's detector covers
    it plus MARGIN_PIXELS on each side.
  views: indices into VIEWS; classes: drawn uniformly per lens.
  """
  field_of_view: float
  views: tuple = tuple(range(len(VIEWS)))
  classes: tuple = CLASSES

  def recipe(self, v):
    """The single-band realistic recipe of view kind `v` on a detector covering the field."""
    survey, band, supersampling = VIEWS[v]
    scale = realistic.PIXEL_SCALES[f'realistic_{survey}']
    num_pix = int(math.ceil(self.field_of_view / scale)) + 2 * MARGIN_PIXELS
    return realistic.get(f'realistic_{survey}', num_pix=num_pix, bands=(band,),
                         supersampling=supersampling)

  def pairs(self, num_views):
    if num_views == 1:
      return [(v,) for v in self.views]
    if len(self.views) == 1:
      return [(self.views[0],) * num_views]
    return list(itertools.permutations(self.views, num_views))

  # --- priors -------------------------------------------------------------------------
  def sample_system(self, key, label):
    """The lens system every view shares: (mass params, context, latents, physical)."""
    base = self.recipe(self.views[0])
    sigma_sub, m_hm, max_sub, (m_lo, m_hi), _ = base.settings
    draw = priors.UniformStream(key, MASS_UNIFORMS)
    z_l, z_s, sigma, theta_e = realistic._redshifts_and_lens(draw, base.tables)  # pylint: disable=protected-access
    center = draw.uniform(-0.05, 0.05, (2,))
    mass, q, angle = realistic._main_lens(draw, theta_e, center)  # pylint: disable=protected-access
    is_cdm = label == CLASSES.index('cdm')
    is_axion = label == CLASSES.index('axion')
    subs, info = populations.subhalos(
        draw, z_lens=z_l, z_source=z_s, center=center, sigma_host=sigma, max_halos=max_sub,
        sigma_sub=sigma_sub, radius_arcsec=realistic.SUBHALO_RADIUS * theta_e, m_min=m_lo,
        m_max=m_hi, m_hm=m_hm, cosmo=galaxies.COSMO)
    subs['alpha_Rs'] = jnp.where(is_cdm, subs['alpha_Rs'], 0.0)
    mass['subhalos'] = subs
    main_mass = realistic._einstein_mass(theta_e, z_l, z_s)  # pylint: disable=protected-access
    vortex_mass = main_mass * draw.log_uniform(-2.0, -1.0)
    log_m = draw.uniform(*recipes.AXION_LOG10_MASS_RANGE)
    half_length = 0.03 * 10.0**(-22.0 - log_m)
    unit_theta = theta_e / jnp.sqrt(main_mass)
    mass['line_mass'] = {
        'theta_e_total': jnp.where(is_axion, unit_theta * jnp.sqrt(vortex_mass), 0.0),
        'half_length': half_length, 'angle': draw.uniform(0.0, 2 * jnp.pi),
        'center_x': center[0], 'center_y': center[1]}
    mass['deflection_scale'] = jnp.float32(1.0)
    sub_mass = jnp.where(is_cdm, info['mass'].sum(), jnp.where(is_axion, vortex_mass, 0.0))
    fraction = sub_mass / main_mass
    n_sub = jnp.where(is_cdm, info['count'], 0)
    shear = mass['shear']
    latents = {
        'n_subhalos': (n_sub.astype(jnp.float32), True),
        'sub_mass_fraction': (100.0 * fraction, True),
        'log10_sub_mass_fraction': (jnp.log10(jnp.maximum(fraction, 1e-12)),
                                    (is_cdm | is_axion) & (fraction > 0)),
        'log10_vortex_mass': (jnp.log10(jnp.maximum(vortex_mass, 1.0)), is_axion),
        'log10_vortex_length': (jnp.log10(half_length), is_axion),
        'theta_e': (theta_e, True),
        'lens_ellipticity': ((1.0 - q) / (1.0 + q), True),
        'shear': (jnp.hypot(shear['gamma1'], shear['gamma2']), True),
    }
    context = {'z_l': z_l, 'z_s': z_s, 'sigma': sigma, 'theta_e': theta_e,
               'center': center, 'q': q, 'angle': angle}
    physical = {'axion_mass': jnp.where(is_axion, 10.0**log_m, 0.0), 'n_subhalos': n_sub,
                'sub_mass_fraction': fraction, 'theta_e': theta_e}
    return mass, context, latents, physical

  @staticmethod
  def sample_light(recipe, key, context):
    """One view's lens light, source, neighbours and seeing (the recipe's band), its source
    latents and a rotation angle."""
    draw = priors.UniformStream(key, VIEW_UNIFORMS)
    center = context['center']
    lens_light, _ = galaxies.lens_light(draw, context['sigma'], context['z_l'], context['q'],
                                        context['angle'], center, recipe.zero_points,
                                        recipe.band_names)
    offset = 0.6 * context['theta_e'] * jnp.sqrt(draw.unit())
    phi = draw.uniform(0.0, 2.0 * jnp.pi)
    src_center = center + offset * jnp.stack([jnp.cos(phi), jnp.sin(phi)])
    source, _, _ = galaxies.source(draw, context['z_s'], src_center, recipe.zero_points,
                                   recipe.band_names, recipe.source_mag_range,
                                   realistic.MAX_CLUMPS)
    half_width = 0.5 * recipe.num_pix * recipe.pixel_scale
    count = jnp.floor(draw.uniform(0.0, realistic.MAX_NEIGHBOURS)).astype(jnp.int32)
    neighbours = realistic._field_galaxies(  # pylint: disable=protected-access
        draw, realistic.MAX_NEIGHBOURS, count, half_width, recipe.zero_points,
        recipe.band_names, (recipe.source_mag_range[0] - 1.0, recipe.source_mag_range[1]))
    seeing = draw.uniform(*recipe.seeing_range)
    light = {'lens_light': lens_light, 'source': source, 'neighbours': neighbours,
             'psf_fwhm': jnp.asarray([b.psf_fwhm for b in recipe.bands], jnp.float32) * seeing}
    latents = {'source_offset': (offset, True),
               'source_log10_radius': (jnp.log10(source['R_sersic'][0]), True),
               'source_index': (source['n_sersic'][0], True),
               'source_ellipticity': (jnp.hypot(source['e1'][0], source['e2'][0]), True)}
    return light, latents, draw.uniform(0.0, 2.0 * jnp.pi)

  # --- the batch ----------------------------------------------------------------------
  def sample(self, key, batch_size: int, num_views: int, image_size: int, to_grid,
             keys=None):
    """`batch_size` systems, `num_views` views each, on the model grid (see the module
    docstring): to_grid(native [N, N, 1], native pixel scale) -> [image_size, image_size, 1].
    keys [batch_size] (per-example keys) replace `key` when given.

    Returns {'image' [B, V, S, S, 1] (as to_grid leaves them), 'latents' [B, V, K], 'latent_mask',
    'view_kind' [B, V] (index into VIEWS), 'native_pixel_scale' [B, V], 'label' [B], and
    the physical label keys}.
    """
    if keys is None:
      keys = jax.random.split(key, batch_size)
    allowed = jnp.asarray([CLASSES.index(c) for c in self.classes], jnp.int32)
    pick = jax.vmap(lambda k: jax.random.randint(jax.random.fold_in(k, 0), (), 0,
                                                 len(self.classes)))(keys)
    labels = allowed[pick]
    mass, context, mass_latents, physical = jax.vmap(self.sample_system)(
        jax.vmap(lambda k: jax.random.fold_in(k, 1))(keys), labels)
    pairs = self.pairs(num_views)
    kind = np.asarray([pairs[i % len(pairs)] for i in range(batch_size)], np.int32)  # [B, V]
    images = jnp.zeros((batch_size, num_views, image_size, image_size, 1), jnp.float32)
    names = same_lens.LATENT_NAMES
    values = jnp.zeros((batch_size, num_views, len(names)), jnp.float32)
    valid = jnp.zeros((batch_size, num_views, len(names)), bool)
    scales = np.zeros((batch_size, num_views), np.float32)
    for v in sorted(set(kind.reshape(-1).tolist())):
      recipe = self.recipe(v)
      rows, cols = np.nonzero(kind == v)
      take = lambda tree, rows=rows: jax.tree.map(lambda a: a[rows], tree)

      def one(k, mass_one, context_one, mass_lat, recipe=recipe):
        light, view_lat, angle = self.sample_light(recipe, jax.random.fold_in(k, 0),
                                                   context_one)
        params = rotate({**mass_one, **light}, angle)
        clean = recipe.render(params)
        native = recipe.observe(jax.random.fold_in(k, 1), clean, params)
        lat = {**mass_lat, **view_lat}
        vals = jnp.stack([jnp.asarray(lat[n][0], jnp.float32) for n in names])
        ok = jnp.stack([jnp.broadcast_to(jnp.asarray(lat[n][1]), ()) for n in names])
        return to_grid(native, recipe.pixel_scale), vals, ok

      view_keys = jax.vmap(jax.random.fold_in)(keys[rows], jnp.asarray(2 + cols, jnp.uint32))
      img, vals, ok = jax.vmap(one)(view_keys, take(mass), take(context), take(mass_latents))
      images = images.at[rows, cols].set(img.astype(jnp.float32))
      values = values.at[rows, cols].set(vals)
      valid = valid.at[rows, cols].set(ok)
      scales[rows, cols] = recipe.pixel_scale
    mean, std = (jnp.asarray(v, jnp.float32)
                 for v in zip(*[same_lens.LATENT_STATS[k] for k in names]))
    return {'image': images, 'latents': jnp.where(valid, (values - mean) / std, 0.0),
            'latent_mask': valid, 'view_kind': jnp.asarray(kind),
            'native_pixel_scale': jnp.asarray(scales), 'label': labels,
            **{k: jnp.asarray(val) for k, val in physical.items()}}
