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
"""
