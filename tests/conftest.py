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

import pytest  # pylint: disable=g-import-not-at-top,wrong-import-position

# Whole-run tests first, so that pytest-xdist's other worker takes the many short ones
# meanwhile instead of leaving one long test for the end.
LONG_FIRST = ("test_multiprocess.py", "test_fault_tolerance.py", "test_bench.py",
              "test_downstream_learns.py")


def pytest_addoption(parser):
  parser.addoption("--run-slow", action="store_true",
                   help="Also run tests marked slow (each has a faster test covering it).")


def pytest_configure(config):
  config.addinivalue_line("markers", "slow: covered by a faster test; skipped unless "
                                     "--run-slow (keeps the suite under 15 min on 2 cores)")


def pytest_collection_modifyitems(config, items):
  def rank(item):
    name = item.path.name
    return LONG_FIRST.index(name) if name in LONG_FIRST else len(LONG_FIRST)
  items.sort(key=rank)  # Stable: the order within a module is kept.
  if config.getoption("--run-slow"):
    return
  skip = pytest.mark.skip(reason="slow; covered by a faster test (--run-slow runs it)")
  for item in items:
    if "slow" in item.keywords:
      item.add_marker(skip)
