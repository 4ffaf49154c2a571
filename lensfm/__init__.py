"""lensfm: a JAX/Flax foundation model for strong gravitational lensing."""
__version__ = "0.1.0"
