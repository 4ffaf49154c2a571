"""Test set-up: 8 fake CPU devices so sharding is exercised without accelerators."""
import os

# Must happen before jax is imported anywhere.
os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                           " --xla_force_host_platform_device_count=8").strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

# Compiled programs persist between test runs (LENSFM_COMPILATION_CACHE=off disables it).
from lensfm import compilation_cache  # pylint: disable=g-import-not-at-top,wrong-import-position

compilation_cache.enable()
