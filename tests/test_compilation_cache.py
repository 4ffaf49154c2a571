"""lensfm.compilation_cache: where the persistent cache goes, off switch, and a cache hit."""
import os
import subprocess
import sys

from lensfm import compilation_cache

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_resolve_order_and_off(monkeypatch, tmp_path):
  monkeypatch.delenv(compilation_cache.ENV, raising=False)
  monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
  assert compilation_cache.resolve() == str(tmp_path / "xdg" / "lensfm" / "jax")
  monkeypatch.setenv(compilation_cache.ENV, str(tmp_path / "env"))
  assert compilation_cache.resolve() == str(tmp_path / "env")
  assert compilation_cache.resolve(str(tmp_path / "arg")) == str(tmp_path / "arg")
  for off in ("off", "", "none"):
    assert compilation_cache.resolve(off) is None
  monkeypatch.setenv(compilation_cache.ENV, "off")
  assert compilation_cache.resolve() is None


_PROGRAM = """
import sys, time
sys.path.insert(0, {root!r})
from lensfm import compilation_cache
compilation_cache.MIN_COMPILE_SECS = 0.  # This small program compiles fast on a quiet machine.
compilation_cache.enable({cache!r})
import jax, jax.numpy as jnp
def f(x):
  for _ in range(40):
    x = jnp.tanh(x @ x.T + 1.)
  return x
t0 = time.perf_counter()
jax.jit(f).lower(jnp.ones((32, 32))).compile()
print(time.perf_counter() - t0)
"""


def test_second_process_loads_the_compiled_program(tmp_path):
  cache = str(tmp_path / "cache")
  code = _PROGRAM.format(root=ROOT, cache=cache)
  env = {**os.environ, "JAX_PLATFORMS": "cpu"}
  run = lambda: subprocess.run([sys.executable, "-c", code], env=env, check=True,
                               capture_output=True, text=True).stdout.split()[-1]
  run()
  entries = [e for e in os.listdir(cache) if e.startswith("jit_f")]
  assert entries, f"nothing cached in {cache}: {os.listdir(cache)}"
  mtimes = {e: os.path.getmtime(os.path.join(cache, e)) for e in entries}
  run()
  # A hit reads the entry and writes nothing new for the same program.
  assert sorted(e for e in os.listdir(cache) if e.startswith("jit_f")) == sorted(entries)
  assert all(os.path.getmtime(os.path.join(cache, e)) == t for e, t in mtimes.items())
