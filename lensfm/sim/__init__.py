"""A pure-JAX strong-lensing simulator (mass profiles, light, instrument, recipes).

Modules:
  profiles    deflection fields (SIE, SIS, shear, point mass(es), NFW, TNFW, line mass,
              point-mass string) in lenstronomy's parameterisations.
  light       elliptical Sersic light and magnitude -> amplitude conversion.
  instrument  pixel grid, truncated Gaussian PSF, noise, instrument presets.
  cosmology   flat Lambda-CDM distances, Einstein radius and NFW conversions.
  render      noise-free rendering of a fixed-shape scene parameter dict.
  priors      on-device samplers.
  recipes     `recipes.get(name, **overrides).sample(key, batch_size)`.
  epl         elliptical power-law lens (Tessore & Metcalf series), multipoles m = 3, 4.
  surveys     survey bands (Euclid, HST, JWST, Rubin, HSC): Moffat / Gaussian / pixel
              PSFs, sky, read noise, exposures, zero points.
  galaxies    lens-galaxy and clumpy-source populations, colours per band.
  populations subhalo and line-of-sight halo populations (CDM / WDM, TNFW).
  realistic   `realistic.get('realistic_<survey>[_lensfind]', ...)`: realistic-sky recipes.
"""
